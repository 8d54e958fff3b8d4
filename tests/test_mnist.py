"""MNIST loader, cache and downloader, on small synthetic IDX files and a local HTTP mirror."""

from __future__ import annotations

import collections
import functools
import gzip
import hashlib
import http.server
import io
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from initlab.data import download, mnist
from initlab.errors import DataError

NAMES = list(mnist.FILES)
TRAIN_X, TRAIN_Y, TEST_X, TEST_Y = NAMES
SMALL = {
    TRAIN_X: (2051, (6, 28, 28)),
    TRAIN_Y: (2049, (6,)),
    TEST_X: (2051, (4, 28, 28)),
    TEST_Y: (2049, (4,)),
}
REAL_ROOT = os.environ.get("INITLAB_DATA_DIR")  # read before any test patches it


def idx_gz(magic: int, array: np.ndarray) -> bytes:
    """An IDX file holding `array` (uint8), gzip-compressed."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def synthetic(seed: int = 0) -> dict[str, bytes]:
    """The four small files' bytes: random pixels, labels 0-9."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (magic, shape) in SMALL.items():
        high = 256 if len(shape) == 3 else 10
        out[name] = idx_gz(magic, rng.integers(0, high, shape))
    return out


def put(folder: Path, name: str, payload: bytes, trust: bool = True) -> Path:
    """Write one source file; with `trust`, make its digest the expected one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(payload)
    if trust:
        mnist.SHA256[name] = hashlib.sha256(payload).hexdigest()
    return path


def snapshot(folder: Path) -> dict:
    """Every entry under `folder` with its size and mtime."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    """Isolated data and cache dirs, the small shapes, an empty digest table and memo."""
    monkeypatch.setenv("INITLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INITLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("INITLAB_MNIST_URL", raising=False)
    monkeypatch.setattr(mnist, "FILES", dict(SMALL))
    monkeypatch.setattr(mnist, "SHA256", {})
    # the small files have sizes of their own: no size cap here (tests/test_hardening.py tests the cap)
    monkeypatch.setattr(mnist, "SIZES", collections.defaultdict(lambda: None))
    monkeypatch.setattr(mnist, "_MEMO", {})
    return tmp_path / "data" / "mnist"


@pytest.fixture
def files(folder) -> dict[str, bytes]:
    """The four synthetic files written to the data folder, digests trusted."""
    payloads = synthetic()
    for name, payload in payloads.items():
        put(folder, name, payload)
    return payloads


def reload() -> tuple[np.ndarray, ...]:
    """`load_mnist()` as a fresh process would run it (no in-process memo)."""
    mnist._MEMO.clear()
    return mnist.load_mnist()


# --- locations -------------------------------------------------------------------


def test_default_locations_are_under_home(monkeypatch, tmp_path):
    monkeypatch.delenv("INITLAB_DATA_DIR", raising=False)
    monkeypatch.delenv("INITLAB_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert mnist.data_root() == tmp_path / ".cache" / "initlab"
    assert mnist.mnist_dir() == tmp_path / ".cache" / "initlab" / "mnist"
    assert mnist.cache_dir() == tmp_path / ".cache" / "initlab" / "cache"


def test_env_vars_move_the_folders(folder, tmp_path):
    assert mnist.data_root() == tmp_path / "data"
    assert mnist.mnist_dir() == folder
    assert mnist.cache_dir() == tmp_path / "cache"


def test_tables_cover_the_four_files():
    assert set(mnist.FILES) == set(mnist.SHA256) == {
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    }
    assert all(len(d) == 64 for d in mnist.SHA256.values())


# --- loading ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_load_flattens_and_scales(files, dtype):
    x_train, y_train, x_test, y_test = mnist.load_mnist(dtype)
    assert x_train.shape == (6, 784) and x_test.shape == (4, 784)
    assert x_train.dtype == np.dtype(dtype) and y_train.dtype == np.int64
    raw = np.frombuffer(gzip.decompress(files[TRAIN_X]), np.uint8, offset=16).reshape(6, 784)
    np.testing.assert_allclose(x_train, raw / 255.0, rtol=1e-6)
    labels = np.frombuffer(gzip.decompress(files[TEST_Y]), np.uint8, offset=8)
    np.testing.assert_array_equal(y_test, labels)
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0


def test_results_are_memoized_and_read_only(files):
    first = mnist.load_mnist()
    assert mnist.load_mnist() is first
    assert mnist.load_mnist("float64")[0].dtype == np.float64
    with pytest.raises(ValueError):
        first[0][0, 0] = 1.0


@pytest.mark.parametrize("dtype", ["uint8", "no-such-type"])
def test_non_float_dtype_is_refused(files, dtype):
    with pytest.raises(DataError, match=f"float type.*'{dtype}'"):
        mnist.load_mnist(dtype)


def test_missing_file_names_path_and_command(files, folder):
    (folder / TEST_Y).unlink()
    with pytest.raises(DataError) as e:
        mnist.load_mnist()
    message = str(e.value)
    assert str(folder / TEST_Y) in message and "initlab data mnist" in message
    assert "\n" not in message


def test_missing_folder(folder):
    with pytest.raises(DataError, match=r"MNIST file missing: .*train-images.*initlab data mnist"):
        mnist.load_mnist()


def test_digest_mismatch(files, folder):
    put(folder, TRAIN_Y, synthetic(seed=1)[TRAIN_Y], trust=False)
    with pytest.raises(DataError, match=r"SHA-256 mismatch.*train-labels.*initlab data mnist"):
        mnist.load_mnist()


def _bad_files():
    """(file name, payload, expected message) for corrupt files with trusted digests."""
    image = np.zeros((6, 28, 28), np.uint8)
    good = idx_gz(2051, image)
    return [
        ("not gzip", TRAIN_X, b"this is not gzip data", "not a valid gzip"),
        ("cut gzip", TRAIN_X, good[: len(good) // 2], "not a valid gzip"),
        ("bad magic", TRAIN_X, idx_gz(2049, image), "magic number 2049, expected 2051"),
        ("label magic", TRAIN_Y, idx_gz(2051, np.zeros(6)), "magic number 2051, expected 2049"),
        ("no header", TRAIN_X, gzip.compress(b"\x00\x00\x08"), "truncated"),
        ("wrong count", TRAIN_X, idx_gz(2051, np.zeros((5, 28, 28))), r"shape \(5, 28, 28\)"),
        ("wrong size", TRAIN_X, idx_gz(2051, np.zeros((6, 27, 28))), r"shape \(6, 27, 28\)"),
        ("short data", TRAIN_X, gzip.compress(gzip.decompress(good)[:-10]), "truncated"),
        ("long data", TRAIN_X, gzip.compress(gzip.decompress(good) + b"\0"), "too long"),
        ("label > 9", TRAIN_Y, idx_gz(2049, np.full(6, 10)), "labels outside 0-9"),
    ]


@pytest.mark.parametrize("name, payload, message", [c[1:] for c in _bad_files()],
                         ids=[c[0] for c in _bad_files()])
def test_corrupt_files_raise_one_clear_line(files, folder, name, payload, message):
    path = put(folder, name, payload)
    with pytest.raises(DataError, match=message) as e:
        mnist.load_mnist()
    assert str(path) in str(e.value) and "initlab data mnist" in str(e.value)
    assert "\n" not in str(e.value)


def test_loading_never_writes_the_data_dir(files, folder):
    before = snapshot(folder.parent)
    folder.chmod(0o555)  # read-only (only enforced when not running as root)
    try:
        mnist.load_mnist()
        reload()
    finally:
        folder.chmod(0o755)
    assert snapshot(folder.parent) == before


# --- cache -----------------------------------------------------------------------


def test_cache_is_written_then_used_without_hashing(files, tmp_path, monkeypatch):
    cold = mnist.load_mnist()
    caches = list((tmp_path / "cache").glob("mnist-*.npz"))
    assert len(caches) == 1
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix == ".tmp"]

    def no_reading(*args):
        raise AssertionError("a warm load must not read the source files")

    monkeypatch.setattr(mnist, "_read_verified", no_reading)
    warm = reload()
    for a, b in zip(cold, warm):
        np.testing.assert_array_equal(a, b)


def test_changed_source_bypasses_the_cache(files, folder):
    mnist.load_mnist()
    path = put(folder, TRAIN_Y, synthetic(seed=1)[TRAIN_Y], trust=False)
    os.utime(path, ns=(1, 1))  # the stamp differs even on a coarse-clock file system
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        reload()


def test_new_trusted_source_reloads(files, folder):
    old = mnist.load_mnist()[1].copy()
    new = np.array([9, 8, 7, 6, 5, 4])
    put(folder, TRAIN_Y, idx_gz(2049, new))
    np.testing.assert_array_equal(mnist.load_mnist()[1], new)  # memo invalidated too
    np.testing.assert_array_equal(reload()[1], new)
    assert not np.array_equal(old, new)


def test_same_stamp_with_other_digest_table_misses_cache(files, monkeypatch):
    mnist.load_mnist()
    monkeypatch.setitem(mnist.SHA256, TRAIN_X, "0" * 64)
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        reload()


def test_corrupt_cache_is_rebuilt(files, tmp_path):
    expected = mnist.load_mnist()
    (cache,) = (tmp_path / "cache").glob("mnist-*.npz")
    cache.write_bytes(b"garbage")
    for p in mapped_folder(tmp_path).iterdir():  # else the warm float32 load never opens the .npz
        p.unlink()
    for a, b in zip(expected, reload()):
        np.testing.assert_array_equal(a, b)
    assert cache.stat().st_size > 1000


def test_unwritable_cache_is_tolerated(files, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("INITLAB_CACHE_DIR", str(blocker / "cache"))
    assert mnist.load_mnist()[0].shape == (6, 784)
    assert reload()[0].shape == (6, 784)



def mapped_folder(tmp_path) -> Path:
    (folder,) = (tmp_path / "cache").glob("mnist-*-float32")
    return folder


def test_float32_arrays_are_mapped_from_the_cache_when_warm(files, tmp_path, monkeypatch):
    cold = mnist.load_mnist()
    folder = mapped_folder(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "x_test.npy", "x_train.npy", "y_test.npy",
                                                         "y_train.npy"]

    def no_decoding(*args):
        raise AssertionError("a warm float32 load must not decode the uint8 arrays")

    monkeypatch.setattr(mnist, "_load_uint8", no_decoding)
    warm = reload()
    for a, b in zip(cold, warm):
        assert a.dtype == b.dtype and not b.flags.writeable
        np.testing.assert_array_equal(a, b)
    assert isinstance(warm[0].base, np.memmap)  # mapped, not read into fresh memory
    assert type(warm[0]) is np.ndarray  # but a plain array to everything downstream


def test_float64_is_decoded_not_mapped(files, tmp_path):
    x = mnist.load_mnist("float64")[0]
    assert x.dtype == np.float64 and not list((tmp_path / "cache").glob("mnist-*-float64"))
    np.testing.assert_allclose(x, mnist.load_mnist("float32")[0], rtol=1e-7)


@pytest.mark.parametrize("damage", ["truncate", "meta", "missing", "shape"])
def test_damaged_mapped_cache_is_decoded_again_and_rewritten(files, tmp_path, damage):
    expected = [a.copy() for a in mnist.load_mnist()]
    folder = mapped_folder(tmp_path)
    if damage == "truncate":
        path = folder / "x_train.npy"
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "meta":
        (folder / "meta.json").write_text("{")
    elif damage == "missing":
        (folder / "y_test.npy").unlink()
    else:
        np.save(folder / "x_test.npy", np.zeros((3, 784), np.float32))
    for a, b in zip(expected, reload()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(expected, reload()):  # rewritten: the next load maps good files
        np.testing.assert_array_equal(a, b)
        assert isinstance(b.base, np.memmap)


def test_mapped_cache_of_changed_source_is_not_trusted(files, folder, tmp_path):
    mnist.load_mnist()
    new = np.array([9, 8, 7, 6, 5, 4])
    put(folder, TRAIN_Y, idx_gz(2049, new))
    np.testing.assert_array_equal(reload()[1], new)

def test_pixels_are_the_bytes_the_floats_are_scaled_from(files, tmp_path, monkeypatch):
    from initlab.data.datasets import _scaled

    pixels = mnist.load_mnist_pixels()
    assert pixels.dtype == np.uint8 and pixels.shape == (6, 784) and not pixels.flags.writeable
    for dtype in ("float32", "float64"):
        np.testing.assert_array_equal(_scaled(pixels, np.dtype(dtype)), mnist.load_mnist(dtype)[0], strict=True)
    (folder,) = (tmp_path / "cache").glob("mnist-*-uint8")
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "x_train.npy"]

    def no_decoding(*args):
        raise AssertionError("warm pixels must not decode the files")

    monkeypatch.setattr(mnist, "_load_uint8", no_decoding)
    mnist._MEMO.clear()
    warm = mnist.load_mnist_pixels()
    assert isinstance(warm.base, np.memmap)
    np.testing.assert_array_equal(warm, pixels)


def test_eval_samples_zero_is_no_test_images_and_null_all_of_them(files):
    import initlab
    from initlab.data.datasets import build_dataset

    def held_out(n):
        d = initlab.load_config({"data": {"kind": "mnist", "samples": None, "eval_samples": n}}).data
        return len(build_dataset(d, np.random.default_rng(0), "float32").x_eval)

    assert [held_out(0), held_out(3), held_out(None)] == [0, 3, 4]


def test_damaged_pixel_cache_is_decoded_again(files, tmp_path):
    expected = mnist.load_mnist_pixels().copy()
    (folder,) = (tmp_path / "cache").glob("mnist-*-uint8")
    np.save(folder / "x_train.npy", np.zeros((6, 783), np.uint8))
    mnist._MEMO.clear()
    np.testing.assert_array_equal(mnist.load_mnist_pixels(), expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_from_pixels_is_bit_identical_to_training_from_floats(files, monkeypatch, dtype):
    # Minibatches gathered from the bytes, then scaled, are the floats themselves: the same run.
    import initlab
    from initlab.data import datasets

    cfg = {"data": {"kind": "mnist", "samples": None, "eval_samples": None},
           "model": {"depth": 2, "width": 16, "activation": "relu", "dtype": dtype},
           "init": {"scheme": "he_normal"}, "optimizer": {"name": "adam", "lr": 0.01},
           "train": {"steps": 30, "batch_size": 4, "eval_every": 10}, "record": {"every": 10, "samples": 6}}
    runs, scaled = {}, []
    real_scaled = datasets._scaled
    monkeypatch.setattr(datasets, "_scaled", lambda p, dt: scaled.append(len(p)) or real_scaled(p, dt))
    for threshold in (float("inf"), 0):
        monkeypatch.setattr(datasets, "PIXEL_GATHER_BYTES", threshold)
        built = datasets.build_dataset(initlab.load_config(cfg).data, np.random.default_rng(0), dtype)
        assert (built.pixels is None) == (threshold > 0)
        scaled.clear()
        runs[threshold] = initlab.run(cfg, progress=False)
    assert scaled.count(4) >= 30  # the second run's minibatches came from the pixels
    a, b = runs.values()
    for key in a.history:
        np.testing.assert_array_equal(a.history[key], b.history[key], strict=True)
    assert a.metrics["final"] == b.metrics["final"]
    np.testing.assert_array_equal(a.model.params().flat.data, b.model.params().flat.data, strict=True)


# --- downloading -----------------------------------------------------------------


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1; yields (base URL, the folder it serves, request log)."""
    root = tmp_path / "mirror" / "mnist"
    root.mkdir(parents=True)
    log: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            log.append(self.path)

    handler = functools.partial(Handler, directory=str(root.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mnist", root, log
    finally:
        server.shutdown()
        server.server_close()


def serve(root: Path, payloads: dict[str, bytes]) -> None:
    """Publish files on the mirror and trust their digests."""
    for name, payload in payloads.items():
        put(root, name, payload)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_downloads_all_then_nothing(folder, mirror):
    url, root, log = mirror
    payloads = synthetic()
    serve(root, payloads)
    paths = mnist.fetch_mnist(url, progress=False)
    assert paths == [folder / n for n in NAMES]
    assert all(p.read_bytes() == payloads[p.name] for p in paths)
    assert sorted(log) == sorted(f"/mnist/{n}" for n in NAMES)
    assert leftovers(folder) == sorted(NAMES)
    log.clear()
    assert mnist.fetch_mnist(url, progress=False) == paths
    assert log == []  # already present with the right digest
    assert mnist.load_mnist()[0].shape == (6, 784)


def test_fetch_replaces_only_bad_files(folder, mirror):
    url, root, log = mirror
    payloads = synthetic()
    serve(root, payloads)
    mnist.fetch_mnist(url + "/", progress=False)  # a trailing slash is fine too
    (folder / TEST_X).write_bytes(b"damaged")
    log.clear()
    mnist.fetch_mnist(url, progress=False)
    assert len(log) == 1 and log[0].endswith(TEST_X)
    assert (folder / TEST_X).read_bytes() == payloads[TEST_X]


def test_fetch_uses_env_url(folder, mirror, monkeypatch):
    url, root, _ = mirror
    serve(root, synthetic())
    monkeypatch.setenv("INITLAB_MNIST_URL", url)
    assert all(p.is_file() for p in mnist.fetch_mnist(progress=False))


def test_fetch_digest_mismatch_leaves_nothing(folder, mirror):
    url, root, _ = mirror
    serve(root, synthetic())
    (root / TRAIN_Y).write_bytes(b"tampered")
    with pytest.raises(DataError) as e:
        mnist.fetch_mnist(url, progress=False)
    message = str(e.value)
    assert "SHA-256 mismatch" in message and TRAIN_Y in message and url in message
    assert leftovers(folder) == [TRAIN_X]  # the good file before it stays, no .part file


def test_fetch_404_names_file_and_url(folder, mirror):
    url, root, _ = mirror
    serve(root, synthetic())
    (root / TEST_Y).unlink()
    with pytest.raises(DataError, match=rf"{TEST_Y} from {url}/{TEST_Y} \(HTTP 404"):
        mnist.fetch_mnist(url, progress=False)
    assert TEST_Y not in leftovers(folder)
    assert not [n for n in leftovers(folder) if n.endswith(".part")]


def test_fetch_connection_refused(folder):
    mnist.SHA256.update({n: "0" * 64 for n in NAMES})
    with pytest.raises(DataError, match=rf"download failed: {TRAIN_X} from http://127.0.0.1:1/"):
        mnist.fetch_mnist("http://127.0.0.1:1/", progress=False)
    assert leftovers(folder) == []


def test_fetch_into_unwritable_root(tmp_path, monkeypatch, folder):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("INITLAB_DATA_DIR", str(blocker))
    with pytest.raises(DataError, match="INITLAB_DATA_DIR"):
        mnist.fetch_mnist("http://127.0.0.1:1/", progress=False)


def test_progress_bar_only_on_a_tty(folder, mirror, monkeypatch, capsys):
    url, root, _ = mirror
    serve(root, synthetic())
    mnist.fetch_mnist(url, progress=True)
    assert capsys.readouterr().err == ""  # captured stderr is not a TTY

    class FakeTTY(io.StringIO):
        def isatty(self):
            return True

    fake = FakeTTY()
    monkeypatch.setattr(sys, "stderr", fake)
    download.download(f"{url}/{TRAIN_Y}", folder / "copy.gz", mnist.SHA256[TRAIN_Y])
    assert "copy.gz" in fake.getvalue()


# --- the real data set -----------------------------------------------------------

REAL = REAL_ROOT and all((Path(REAL_ROOT) / "mnist" / n).is_file() for n in NAMES)


@pytest.mark.skipif(not REAL, reason="INITLAB_DATA_DIR with the four MNIST files is not set")
def test_real_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("INITLAB_DATA_DIR", REAL_ROOT)
    monkeypatch.setenv("INITLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist, "_MEMO", {})
    x_train, y_train, x_test, y_test = mnist.load_mnist()
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert list(y_train[:5]) == [5, 0, 4, 1, 9]
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    warm = reload()
    np.testing.assert_array_equal(warm[1], y_train)
