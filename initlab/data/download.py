"""Download one file over HTTP(S) and keep it only if its SHA-256 matches.

Standard library only (urllib), with an optional tqdm progress bar on stderr.
Nothing here knows about MNIST; `initlab.data.mnist.fetch_mnist` drives it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from initlab.errors import DataError, seconds_from_env, short

CHUNK = 1 << 16
# Every step has a deadline, so a dead or hostile server cannot hold `initlab data mnist` forever:
# connecting and each read wait at most TIMEOUT_S, and over every window of TIMEOUT_S seconds at
# least MIN_RATE bytes/s must arrive on average (a server dripping a byte at a time is a stall).
TIMEOUT_ENV = "INITLAB_DOWNLOAD_TIMEOUT"
TIMEOUT_S = 30.0
MIN_RATE = 4096


def sha256_file(path: Path) -> str:
    """Hex SHA-256 digest of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _timeout() -> float:
    return seconds_from_env(TIMEOUT_ENV, TIMEOUT_S, DataError)


def download(url: str, dest: Path, sha256: str, progress: bool = True, size: int | None = None) -> Path:
    """Fetch `url` into `dest`, verified against the hex digest `sha256`.

    The bytes go to a hidden temporary file beside `dest`, which is renamed
    onto `dest` only after the digest matches, so `dest` is never partial.
    Any failure (HTTP error, lost connection, stall, short read, a body larger
    than `size` bytes, digest mismatch, unwritable folder) removes the temporary
    file and raises one-line `DataError`.
    """
    dest = Path(dest)
    timeout = _timeout()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "initlab"})
    except ValueError as e:
        raise DataError(f"download failed: {short(url, 200)} is not a valid URL ({short(str(e))})") from e
    try:
        tmp = tempfile.NamedTemporaryFile(
            dir=dest.parent, prefix=f".{dest.name}.", suffix=".part", delete=False
        )
    except OSError as e:
        raise DataError(
            f"cannot write to {dest.parent} ({e.strerror or e}); "
            "set INITLAB_DATA_DIR to a writable folder"
        ) from e
    try:
        with tmp:
            digest = _copy(request, tmp, dest, progress, timeout, size)
        if digest != sha256:
            raise DataError(
                f"download corrupted (SHA-256 mismatch): {dest.name} from {short(url, 200)} "
                f"(got {digest[:12]}…, expected {sha256[:12]}…; try another mirror with --url)"
            )
        os.replace(tmp.name, dest)
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise
    return dest


def _copy(request: urllib.request.Request, out, dest: Path, progress: bool, timeout: float,
          size: int | None) -> str:
    """Stream the response into the open file `out` under the deadlines above; return the hex digest."""
    import http.client

    url = short(request.full_url, 200)
    where = f"{dest.name} from {url}"
    digest = hashlib.sha256()
    got = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.strip().isdigit() else None
            if size is not None and total is not None and total != size:
                raise DataError(f"download failed: {where} would be {total} bytes, expected {size}; "
                                "is it the right file? (try another mirror with --url)")
            window_start, window_got = time.monotonic(), 0
            with _bar(dest.name, total, progress) as bar:
                # read1: return what one read gives, so the deadlines are checked while bytes trickle in
                while chunk := response.read1(CHUNK):
                    got += len(chunk)
                    if size is not None and got > size:
                        raise DataError(f"download failed: {where} is larger than the expected {size} bytes; "
                                        "is it the right file? (try another mirror with --url)")
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
                    window_got += len(chunk)
                    now = time.monotonic()
                    if now - window_start >= timeout:
                        if window_got < MIN_RATE * (now - window_start):
                            raise DataError(
                                f"download stalled: {where} sent {window_got} bytes in {now - window_start:.0f} s "
                                f"(less than {MIN_RATE // 1024} KiB/s; {TIMEOUT_ENV} sets the window)")
                        window_start, window_got = now, 0
    except DataError:
        raise
    except urllib.error.HTTPError as e:
        raise DataError(f"download failed: {where} (HTTP {e.code} {short(str(e.reason))})") from e
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise DataError(f"download failed: {where} (no answer within {timeout:g} s; {TIMEOUT_ENV})") from e
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        raise DataError(f"download failed: {where} ({short(text, 120)})") from e
    except http.client.IncompleteRead as e:
        raise _short_read(where, got + len(e.partial), total) from e
    except TimeoutError as e:
        raise DataError(f"download stalled: {where} (nothing received for {timeout:g} s; {TIMEOUT_ENV})") from e
    except http.client.HTTPException as e:
        # e.g. a server that does not speak HTTP: its bytes are escaped, never printed raw
        raise DataError(f"download failed: {where} (not an HTTP answer: {short(str(e), 80)})") from e
    except (OSError, ValueError) as e:
        # ValueError: a malformed URL; OSError: resets, a full disk.
        text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise DataError(f"download failed: {where} ({short(text, 120)})") from e
    if total is not None and got < total:
        raise _short_read(where, got, total)
    if size is not None and got < size:
        raise _short_read(where, got, size)
    return digest.hexdigest()


def _short_read(where: str, got: int, expected: int) -> DataError:
    return DataError(f"download failed: short read: {where} ended after {got} of {expected} bytes "
                     "(the connection closed early; run the command again)")


def _bar(name: str, total: int | None, progress: bool):
    """A byte-counting tqdm bar on stderr, disabled unless stderr is a TTY."""
    from tqdm import tqdm

    enabled = progress and sys.stderr.isatty()
    return tqdm(
        total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
        file=sys.stderr, disable=not enabled, leave=False,
    )
