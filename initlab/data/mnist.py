"""MNIST: locate, verify, parse, cache and download the four original IDX files.

Files live in `<INITLAB_DATA_DIR>/mnist/` (root default `~/.cache/initlab`) and
are only ever read while loading. Decoded uint8 arrays are cached in
`INITLAB_CACHE_DIR` (default `~/.cache/initlab/cache`) as one `.npz` named after
the expected digests; it also records each source file's (size, mtime_ns,
ctime_ns, inode), so a warm load skips hashing and a changed source is hashed
and checked again. The float32 arrays every MNIST run trains on (scaled to
[0, 1], 220 MB) are cached beside it as `.npy` files that a warm load maps
into memory instead of reading: no decoding and no fresh 190 MB allocation
(0.3-0.4 s a process, mostly the kernel zeroing new pages), and the sweep
workers share one copy in the page cache. A cache that cannot be written is
silently skipped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

from initlab.data.download import download, sha256_file
from initlab.errors import DataError

DEFAULT_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FIX = "run 'initlab data mnist' to download it"

# file name -> (IDX magic number, array shape); order: x_train, y_train, x_test, y_test.
FILES = {
    "train-images-idx3-ubyte.gz": (2051, (60000, 28, 28)),
    "train-labels-idx1-ubyte.gz": (2049, (60000,)),
    "t10k-images-idx3-ubyte.gz": (2051, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte.gz": (2049, (10000,)),
}

# SHA-256 of the original files from yann.lecun.com (their MD5s are the well-known
# f68b3c2d…, d53e105e…, 9fb629c4…, ec29112d…).
SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

# Their sizes in bytes: a download is cut off (not read in full) when a server sends more.
SIZES = {
    "train-images-idx3-ubyte.gz": 9912422,
    "train-labels-idx1-ubyte.gz": 28881,
    "t10k-images-idx3-ubyte.gz": 1648877,
    "t10k-labels-idx1-ubyte.gz": 4542,
}

_MEMO: dict[tuple, tuple[np.ndarray, ...]] = {}

# Scaled arrays worth a mapped cache: float32 is what configs train on; a float64 copy (440 MB)
# would be rarely read and is decoded from the uint8 cache instead.
MAPPED_DTYPES = ("float32",)
MAPPED_NAMES = ("x_train", "y_train", "x_test", "y_test")


def data_root() -> Path:
    """The data root: `$INITLAB_DATA_DIR`, default `~/.cache/initlab`."""
    return Path(os.environ.get("INITLAB_DATA_DIR") or Path.home() / ".cache" / "initlab")


def mnist_dir() -> Path:
    """The folder holding the four MNIST `.gz` files."""
    return data_root() / "mnist"


def cache_dir() -> Path:
    """The cache folder: `$INITLAB_CACHE_DIR`, default `~/.cache/initlab/cache`."""
    return Path(os.environ.get("INITLAB_CACHE_DIR") or Path.home() / ".cache" / "initlab" / "cache")


def load_mnist(dtype="float32") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return `(x_train, y_train, x_test, y_test)`.

    x: `(n, 784)` in `dtype`, pixels scaled to [0, 1]; y: `(n,)` int64 labels.
    Results are memoized per process and returned read-only (copy before
    modifying in place). Raises `DataError` for missing or corrupted files.
    """
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        kind = None
    if kind != "f":
        raise DataError(f"MNIST dtype must be a float type such as 'float32', got '{dtype}'")
    dtype = np.dtype(dtype)

    def decode(stamps):
        x_train, y_train, x_test, y_test = _load_uint8(stamps)
        return _scale(x_train, dtype), y_train.astype(np.int64), _scale(x_test, dtype), y_test.astype(np.int64)

    expected = dict(zip(MAPPED_NAMES, _mapped_shapes(dtype)))
    return _memoized(dtype.name, expected, decode, mapped=dtype.name in MAPPED_DTYPES)


def load_mnist_pixels() -> np.ndarray:
    """The training images as the files' bytes, `(60000, 784)` uint8, read-only and memoized:
    `load_mnist(dtype)[0]` is exactly these divided by 255 in `dtype` (`_scale`). Mapped from the
    cache like the float32 arrays (47 MB, shared by a sweep's workers through the page cache)."""
    shape, kind = _mapped_shapes(np.dtype(np.uint8))[0]
    return _memoized("uint8", {"x_train": (shape, kind)}, lambda stamps: (_load_uint8(stamps)[0].reshape(shape),))[0]


def _memoized(name: str, expected: dict, decode, mapped: bool = True) -> tuple[np.ndarray, ...]:
    """The arrays named in ``expected`` (name → (shape, dtype)), read-only and memoized per process:
    mapped from ``mnist-<key>-<name>/`` in the cache when it vouches for the current files, else
    ``decode(stamps)`` and (``mapped``) written there for the next process."""
    stamps = _stamps()
    source = (str(mnist_dir()), json.dumps(stamps), _cache_key())
    for stale in [k for k in _MEMO if k[1:] != source]:
        del _MEMO[stale]  # the files changed: forget arrays decoded from the old ones
    key = (name, *source)
    if key not in _MEMO:
        folder = cache_dir() / f"mnist-{_cache_key()}-{name}"
        arrays = _read_mapped(folder, stamps, expected) if mapped else None
        if arrays is None:
            arrays = decode(stamps)
            if mapped:
                _write_mapped(folder, dict(zip(expected, arrays)), stamps)
        for a in arrays:
            a.flags.writeable = False
        _MEMO[key] = arrays
    return _MEMO[key]


def fetch_mnist(url: str | None = None, progress: bool = True) -> list[Path]:
    """Download whichever of the four files is missing or fails its digest.

    `url` is the mirror's base URL (default `$INITLAB_MNIST_URL`, then
    `DEFAULT_URL`). Returns the four paths in `FILES` order.
    """
    base = (url or os.environ.get("INITLAB_MNIST_URL") or DEFAULT_URL).rstrip("/") + "/"
    folder = mnist_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create {folder} ({e.strerror or e}); set INITLAB_DATA_DIR to a writable folder"
        ) from e
    paths = []
    for name, digest in ((n, SHA256[n]) for n in FILES):
        path = folder / name
        if not (path.is_file() and sha256_file(path) == digest):
            download(base + name, path, digest, progress=progress, size=SIZES[name])
        paths.append(path)
    return paths


def _parse_idx(data: bytes, magic: int, shape: tuple[int, ...], path: Path) -> np.ndarray:
    """Decode the gzip-compressed IDX bytes `data`, read from `path`, to uint8.

    Checks the magic number, the dimensions in the header against `shape`
    and that the payload has exactly the announced number of bytes.
    """
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"MNIST file is not a valid gzip file ({e}): {path} ({FIX} again)") from e
    ndim = len(shape)
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise DataError(f"MNIST file is truncated (no IDX header): {path} ({FIX} again)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"MNIST file has magic number {found}, expected {magic}: {path} ({FIX} again)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    if dims != tuple(shape):
        raise DataError(f"MNIST file has shape {dims}, expected {tuple(shape)}: {path} ({FIX} again)")
    size = len(raw) - header
    if size != int(np.prod(shape)):
        state = "truncated" if size < int(np.prod(shape)) else "too long"
        raise DataError(
            f"MNIST file is {state} ({size} data bytes, expected {int(np.prod(shape))}): {path} ({FIX} again)"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _scale(images: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`(n, 28, 28)` uint8 -> `(n, 784)` in `dtype`, divided by 255."""
    x = images.reshape(len(images), -1).astype(dtype)
    x /= dtype.type(255)
    return x


def _stamps() -> dict[str, list[int]]:
    """(size, mtime_ns, ctime_ns, inode) of each source file; DataError if one is missing."""
    stamps = {}
    for name in FILES:
        path = mnist_dir() / name
        try:
            st = path.stat()
        except OSError as e:
            raise DataError(f"MNIST file missing: {path} ({FIX})") from e
        stamps[name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return stamps


def _load_uint8(stamps: dict) -> list[np.ndarray]:
    """The four raw arrays, from the cache when the stamps match, else from the files."""
    cache = cache_dir() / f"mnist-{_cache_key()}.npz"
    arrays = _read_cache(cache, stamps)
    if arrays is None:
        arrays = [_read_verified(mnist_dir() / name, *FILES[name]) for name in FILES]
        _write_cache(cache, arrays, stamps)
    return arrays


def _read_verified(path: Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """Read one file, check its SHA-256 against `SHA256`, then decode it."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"MNIST file unreadable ({e.strerror or e}): {path} ({FIX})") from e
    if hashlib.sha256(data).hexdigest() != SHA256[path.name]:
        raise DataError(f"MNIST file corrupted (SHA-256 mismatch): {path} ({FIX} again)")
    array = _parse_idx(data, magic, shape, path)
    if len(shape) == 1 and array.size and array.max() > 9:
        raise DataError(f"MNIST labels outside 0-9: {path} ({FIX} again)")
    return array


def _cache_key() -> str:
    """16 hex digits naming the cache file: a hash of the expected digests and shapes."""
    table = [(name, SHA256[name], FILES[name]) for name in FILES]
    return hashlib.sha256(json.dumps(table).encode()).hexdigest()[:16]


def _read_cache(cache: Path, stamps: dict) -> list[np.ndarray] | None:
    """Cached arrays if the cache exists, is intact and matches `stamps`; else None."""
    try:
        with np.load(cache, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta != _meta(stamps):
                return None
            arrays = [npz[f"a{i}"] for i in range(len(FILES))]
    except Exception:  # missing, truncated or foreign cache file: rebuild it
        return None
    for array, (_, shape) in zip(arrays, FILES.values()):
        if array.dtype != np.uint8 or array.shape != tuple(shape):
            return None
    return arrays


def _write_cache(cache: Path, arrays: list[np.ndarray], stamps: dict) -> None:
    """Write the cache atomically (temp file + rename); give up silently on OSError."""
    meta = json.dumps(_meta(stamps))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        _atomic(cache, lambda f: np.savez(f, meta=np.array(meta), **{f"a{i}": a for i, a in enumerate(arrays)}))
    except OSError:
        pass


def _meta(stamps: dict) -> dict:
    return {"stamps": stamps, "sha256": {n: SHA256[n] for n in FILES}}


def _mapped_shapes(dtype: np.dtype) -> list[tuple[tuple[int, ...], np.dtype]]:
    """The scaled arrays' (shape, dtype) in `MAPPED_NAMES` order: images flattened to `dtype`, labels int64."""
    return [((s[0], int(np.prod(s[1:]))), dtype) if len(s) > 1 else (s, np.dtype(np.int64))
            for _, s in FILES.values()]


def _read_mapped(folder: Path, stamps: dict, expected: dict) -> tuple[np.ndarray, ...] | None:
    """The arrays named in `expected` (name → (shape, dtype)) mapped read-only from `folder`, in
    its order, if its meta matches `stamps` and each array its shape and dtype; else None."""
    try:
        if json.loads((folder / "meta.json").read_text()) != _meta(stamps):
            return None
        arrays = tuple(np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False))
                       for name in expected)
    except Exception:  # missing, truncated or foreign files: decode again and rewrite them
        return None
    for array, (shape, kind) in zip(arrays, expected.values()):
        if array.dtype != kind or array.shape != shape:
            return None
    return arrays


def _write_mapped(folder: Path, arrays: dict, stamps: dict) -> None:
    """Write the arrays (name → array), each atomically, and the meta that vouches for them last."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").unlink(missing_ok=True)  # a reader must not trust half-replaced files
        for name, array in arrays.items():
            _atomic(folder / f"{name}.npy", lambda f, a=array: np.save(f, a, allow_pickle=False))
        _atomic(folder / "meta.json", lambda f: f.write(json.dumps(_meta(stamps)).encode()))
    except OSError:
        pass


def _atomic(path: Path, write) -> None:
    """``write(file)`` into a temporary file beside `path`, then rename it over `path`."""
    tmp = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp",
                                         delete=False) as f:
            tmp = f.name
            write(f)
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
