"""Download one file over HTTP(S) and keep it only if its SHA-256 matches.

Standard library only (urllib), with an optional tqdm progress bar on stderr.
Nothing here knows about MNIST; `initlab.data.mnist.fetch_mnist` drives it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from initlab.errors import DataError

CHUNK = 1 << 16
TIMEOUT_S = 60


def sha256_file(path: Path) -> str:
    """Hex SHA-256 digest of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def download(url: str, dest: Path, sha256: str, progress: bool = True) -> Path:
    """Fetch `url` into `dest`, verified against the hex digest `sha256`.

    The bytes go to a hidden temporary file beside `dest`, which is renamed
    onto `dest` only after the digest matches, so `dest` is never partial.
    Any failure (HTTP error, lost connection, digest mismatch, unwritable
    folder) removes the temporary file and raises one-line `DataError`.
    """
    dest = Path(dest)
    request = urllib.request.Request(url, headers={"User-Agent": "initlab"})
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
            digest = _copy(request, tmp, dest, progress)
        if digest != sha256:
            raise DataError(
                f"download corrupted (SHA-256 mismatch): {dest.name} from {url} "
                f"(got {digest[:12]}…, expected {sha256[:12]}…; try another mirror with --url)"
            )
        os.replace(tmp.name, dest)
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise
    return dest


def _copy(request: urllib.request.Request, out, dest: Path, progress: bool) -> str:
    """Stream the response into the open file `out`; return the hex digest."""
    url = request.full_url
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            total = response.headers.get("Content-Length")
            with _bar(dest.name, int(total) if total else None, progress) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise DataError(f"download failed: {dest.name} from {url} (HTTP {e.code} {e.reason})") from e
    except urllib.error.URLError as e:
        raise DataError(f"download failed: {dest.name} from {url} ({e.reason})") from e
    except (OSError, ValueError) as e:
        # ValueError: a malformed URL; OSError: timeouts, resets, a full disk.
        raise DataError(f"download failed: {dest.name} from {url} ({e})") from e
    return digest.hexdigest()


def _bar(name: str, total: int | None, progress: bool):
    """A byte-counting tqdm bar on stderr, disabled unless stderr is a TTY."""
    from tqdm import tqdm

    enabled = progress and sys.stderr.isatty()
    return tqdm(
        total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
        file=sys.stderr, disable=not enabled, leave=False,
    )
