"""Issue 16: hostile input and a flaky world get one `Error:` line, the right exit code and true statuses.

Each class of fault is tested where it is real: `initlab` as a subprocess, real signals, and
servers on 127.0.0.1 (one that never answers, one that drips bytes, one that sends too much).
"""
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import initlab
from initlab.cli import cli
from initlab.output.readers import read_manifest
from initlab.sweeps.manifest import JOURNAL, apply_journal
from tests.test_sweep import TINY

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
EXCEPTION_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception|Interrupt)\b")


def env_for(**extra) -> dict:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    env.pop("INITLAB_DASK_SCHEDULER", None)
    env.update(extra)
    return env


def assert_one_error(stderr: str) -> str:
    """Exactly one `Error:` line, no traceback, no Python exception class name, no raw control bytes."""
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    body = errors[0][len("Error:"):]
    assert not EXCEPTION_NAME.search(body), errors[0]
    assert not any(ord(c) < 32 and c not in "\n\t" for c in stderr), repr(stderr)
    return errors[0]


def cli_run(tmp_path, *args, timeout=120, **env):
    return subprocess.run([sys.executable, "-m", "initlab", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=env_for(**env))


# ---------------------------------------------------------------- 1. sizes checked before anything is built


def test_a_huge_seed_count_is_refused_before_anything_is_built(tmp_path):
    t0 = time.monotonic()
    res = cli_run(tmp_path, "sweep", "--std", "1,2", "--seeds", "1" + "0" * 30)
    assert res.returncode == 2
    assert "at most 100000" in assert_one_error(res.stderr)
    assert time.monotonic() - t0 < 30  # an interpreter start on a loaded machine; no list is built
    assert not (tmp_path / "outputs").exists()


def test_workers_are_capped_and_memory_counts_every_concurrent_worker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(cli, ["sweep", "--std", "1,2", "--workers", "100000"])
    assert res.exit_code == 2 and "per core" in assert_one_error(res.stderr)
    # One default point needs about 12.5 MiB: alone it fits in 20 MiB, two at once do not.
    monkeypatch.setenv("INITLAB_MEMORY_LIMIT", "20M")
    res = runner.invoke(cli, ["sweep", "--std", "1,2", "--workers", "2"])
    assert res.exit_code == 2 and "2 workers running the largest points at once" in assert_one_error(res.stderr)
    assert not (tmp_path / "outputs").exists()


# ---------------------------------------------------------------- 6. --set name=… for sweeps


def test_set_name_names_the_sweep_and_is_validated_like_a_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(TINY))
    runner = CliRunner()
    res = runner.invoke(cli, ["sweep", "t.yaml", "--depth", "2,3", "--set", "name=foo", "--json"])
    assert res.exit_code == 0, res.stderr
    assert Path(json.loads(res.stdout)["sweep_dir"]).parent.name == "foo"
    res = runner.invoke(cli, ["sweep", "t.yaml", "--depth", "2,3", "--set", "name=../../x"])
    assert res.exit_code == 2 and "not a valid name" in assert_one_error(res.stderr)
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["foo"]


# ---------------------------------------------------------------- 3. statuses never guessed


SIG = {
    "name": "early",
    "data": {"kind": "teacher", "samples": 500, "features": 20, "classes": 3, "eval_samples": 100},
    "model": {"depth": 3, "width": 20, "activation": "relu"},
    "train": {"batch_size": 20, "eval_every": 100},
    "record": {"samples": 100},
    "sweep": {"train.steps": [10, 400, 401, 402]},
}


@POSIX
@pytest.mark.parametrize("attempt", range(3))
def test_an_early_ctrl_c_never_records_a_false_failure(tmp_path, attempt):
    """Ctrl-C to the whole process group at a random moment in the first second or so: workers
    idle in recv() or sending an outcome must answer `interrupted`, never die with exit code 0."""
    cfg = tmp_path / "early.yaml"
    cfg.write_text(yaml.safe_dump(SIG))
    proc = subprocess.Popen([sys.executable, "-m", "initlab", "sweep", str(cfg), "--workers", "2", "--out",
                             str(tmp_path / "out"), "--json"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env_for())
    deadline = time.monotonic() + 60
    while not list((tmp_path / "out").glob("*/sweep-*/manifest.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random(attempt).uniform(0.0, 1.5))
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr
    assert proc.returncode in (0, 130), stderr
    d = next((tmp_path / "out").glob("*/sweep-*"))
    manifest = read_manifest(d)
    assert manifest["state"] in ("interrupted", "completed")
    for mp in manifest["points"]:
        assert mp["status"] in ("completed", "interrupted"), mp
        assert "exit code 0" not in str(mp.get("exit_reason"))
    again = initlab.sweep(resume=d, workers=2)
    assert again.counts["completed"] == 4 and again.exit_code() == 0


def test_a_signal_while_the_last_file_is_written_leaves_a_completed_run(tmp_path, monkeypatch):
    """A real SIGINT raised inside the final write: held by the guard, then it must not turn the
    completed run into `Error: interrupted`: the exit code and message follow metrics.json."""
    from initlab.output.rundir import RunWriter

    original = RunWriter.write

    def write_with_a_signal(self, *args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # a real signal, delivered while the writer runs
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RunWriter, "write", write_with_a_signal)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(TINY))
    res = CliRunner().invoke(cli, ["run", "t.yaml", "--json"])
    assert res.exit_code == 0, res.stderr
    assert "Error:" not in res.stderr
    run_dir = Path(json.loads(res.stdout)["run_dir"])
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"


# ---------------------------------------------------------------- 4. resume treats the sweep folder as untrusted


@pytest.fixture
def finished_sweep(tmp_path):
    res = initlab.sweep(TINY, {"model.depth": [1, 2, 3]}, out=tmp_path / "out", workers=1)
    assert res.counts["completed"] == 3
    stamps = {p: p.stat().st_mtime_ns for p in res.sweep_dir.glob("runs/*/metrics.json")}
    return res.sweep_dir, stamps


def edit_manifest(d, change):
    m = json.loads((d / "manifest.json").read_text())
    change(m)
    (d / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("edit", ["cut", "extended", "null", "no_run_dir", "escaping_run_dir", "shuffled"])
def test_resume_rebuilds_a_hand_edited_manifest_from_the_plan(finished_sweep, edit):
    d, stamps = finished_sweep
    changes = {
        "cut": lambda m: m.update(points=m["points"][:1]),
        "extended": lambda m: m.update(points=m["points"] + m["points"][:2]),
        "null": lambda m: m["points"].__setitem__(1, None),
        "no_run_dir": lambda m: m["points"][1].pop("run_dir"),
        "escaping_run_dir": lambda m: m["points"][1].update(run_dir="../../../etc"),
        "shuffled": lambda m: m.update(points=m["points"][::-1]),
    }
    edit_manifest(d, changes[edit])
    again = initlab.sweep(resume=d, workers=1)
    assert again.counts["completed"] == 3 and again.exit_code() == 0
    assert [p["index"] for p in again.points] == [0, 1, 2]
    assert len(json.loads((d / "summary.json").read_text())) == 3
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing ran twice
    assert [mp["run_dir"] for mp in read_manifest(d)["points"]] == [p["run_dir"] for p in again.points]


def test_resume_never_follows_a_symlinked_run_folder_and_reruns_bad_metrics(finished_sweep, tmp_path):
    d, stamps = finished_sweep
    runs = sorted((d / "runs").iterdir())
    outside = tmp_path / "elsewhere"
    runs[0].rename(outside)
    runs[0].symlink_to(outside)  # a completed run, but outside the sweep folder
    metrics = json.loads((runs[1] / "metrics.json").read_text())
    metrics["final"] = [1, 2]  # "completed", in the wrong shape
    (runs[1] / "metrics.json").write_text(json.dumps(metrics))
    again = initlab.sweep(resume=d, workers=1)
    assert again.counts["completed"] == 3
    assert not runs[0].is_symlink() and (runs[0] / "metrics.json").is_file()
    assert (outside / "metrics.json").is_file()  # what the link pointed to is left alone
    assert isinstance(json.loads((runs[1] / "metrics.json").read_text())["final"], dict)
    assert (runs[2] / "metrics.json").stat().st_mtime_ns == stamps[runs[2] / "metrics.json"]


def test_runs_as_a_file_is_explained(finished_sweep, monkeypatch, tmp_path):
    d, _ = finished_sweep
    import shutil

    shutil.rmtree(d / "runs")
    (d / "runs").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["sweep", "--resume", str(d)])
    assert res.exit_code == 2
    assert "runs: expected the sweep's folder of runs, found a file" in assert_one_error(res.stderr)


def test_a_sweep_folder_without_its_manifest_resumes(finished_sweep):
    d, stamps = finished_sweep
    (d / "manifest.json").unlink()
    again = initlab.sweep(resume=d, workers=1)
    assert again.counts["completed"] == 3
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert read_manifest(d)["state"] == "completed"


# ---------------------------------------------------------------- 7. the manifest journal


def test_the_journal_brings_a_stale_manifest_up_to_date_and_skips_a_cut_line(finished_sweep):
    d, _ = finished_sweep
    assert not (d / JOURNAL).exists()  # removed once manifest.json holds everything
    manifest = read_manifest(d)
    lines = [json.dumps({"index": 1, "status": "failed", "started": None, "finished": "x", "error": "boom",
                         "exit_reason": "boom", "duration_s": 1.0, "worker": "w"}),
             json.dumps({"index": 99, "status": "failed"}), json.dumps({"index": True, "status": "failed"}),
             '{"index": 2, "status": "fai']
    (d / JOURNAL).write_text("\n".join(lines))
    apply_journal(d, manifest)
    assert [mp["status"] for mp in manifest["points"]] == ["completed", "failed", "completed"]
    assert manifest["points"][1]["error"] == "boom"


# ---------------------------------------------------------------- 2. downloads with deadlines and limits


class Server:
    """A TCP server on 127.0.0.1 whose every connection is handled by ``behave(conn)`` in a thread."""

    def __init__(self, behave):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.behave, self.stop, self.conns = behave, threading.Event(), []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn = self.sock.accept()[0]
            except OSError:
                continue
            self.conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            conn.recv(65536)
            self.behave(conn, self.stop)
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


def silent(conn, stop):
    stop.wait(60)


def drip(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9912422\r\n\r\n")
    while not stop.wait(0.3):
        conn.sendall(b"x")


def huge_without_length(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    block = b"\0" * 65536
    for _ in range(16384):  # 1 GiB if nobody stops reading
        if stop.is_set():
            return
        conn.sendall(block)


def huge_with_length(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
    stop.wait(60)


def short_body(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9912422\r\n\r\n" + b"x" * 1000)
    conn.shutdown(socket.SHUT_RDWR)


def not_http(conn, stop):
    conn.sendall(b"\x00\x01\x1b[31mgarbage\x07\r\n\r\n")
    conn.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("behave, message, within", [
    (silent, "nothing received for 1 s", 30),
    (drip, "download stalled", 30),
    (huge_without_length, "larger than the expected", 30),
    (huge_with_length, "would be 1073741824 bytes", 30),
    (short_body, "short read", 30),
    (not_http, "not an HTTP answer", 30),
], ids=["silent", "drip", "huge", "huge-length", "short-read", "not-http"])
def test_a_hostile_download_server_is_one_error_line_quickly(tmp_path, behave, message, within):
    server = Server(behave)
    try:
        t0 = time.monotonic()
        res = cli_run(tmp_path, "data", "mnist", "--url", server.url, INITLAB_DATA_DIR=str(tmp_path / "data"),
                      INITLAB_DOWNLOAD_TIMEOUT="1")
        took = time.monotonic() - t0
    finally:
        server.close()
    assert res.returncode == 1, res.stderr
    assert message in assert_one_error(res.stderr)
    assert took < within
    assert not [p for p in (tmp_path / "data" / "mnist").iterdir()]  # no partial file left behind


@pytest.mark.parametrize("url", ["http://[::1/", "not a url", "foo://x/"])
def test_an_odd_download_url_is_one_error_line(tmp_path, url):
    res = cli_run(tmp_path, "data", "mnist", "--url", url, INITLAB_DATA_DIR=str(tmp_path / "data"))
    assert res.returncode in (1, 2), res.stderr
    assert_one_error(res.stderr)


# ---------------------------------------------------------------- 6. keys that do not apply


def test_settings_the_choice_ignores_are_warned_on_stderr_and_in_metrics(tmp_path, monkeypatch):
    """A warning, not a refusal: a saved config.yaml lists every key, and a sweep over activations
    legitimately carries a leaky slope into its relu points (see config.ignored_settings)."""
    from initlab.config import ignored_settings, load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(TINY))
    res = CliRunner().invoke(cli, ["run", "t.yaml", "--set", "init.mode=fan_out", "--set", "model.slope=0.2"])
    assert res.exit_code == 0, res.stderr
    assert "warning: init.mode: fan_out is ignored: it applies to the he_* schemes only" in res.stderr
    assert "warning: model.slope: 0.2 is ignored: it applies to leaky_relu only" in res.stderr
    metrics = json.loads(next((tmp_path / "outputs").glob("tiny/*/metrics.json")).read_text())
    assert sum("is ignored" in w for w in metrics["warnings"]) == 2
    assert "data.classes: 5 is ignored" in "".join(ignored_settings(load_config({"data": {"kind": "regression", "classes": 5}})))
    assert not ignored_settings(load_config({"init": {"scheme": "he_normal", "mode": "fan_out"},
                                             "model": {"activation": "leaky_relu", "slope": 0.2}}))
    for path in Path(__file__).parents[1].glob("configs/*.yaml"):  # the bundled configs say nothing ignored
        assert not ignored_settings(load_config(path)), path


@pytest.mark.parametrize("text", ['name: "\\U00110000"\n', '"\\U0011ffff', "model: {depth: \"\\UFFFFFFFF\"}\n"])
def test_out_of_range_yaml_escape_is_one_config_error(tmp_path, text):
    # PyYAML raises a bare ValueError (from chr()) here, not a YAMLError.
    path = tmp_path / "escape.yaml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    line = assert_one_error(result.stderr)
    assert "out of range" in line
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- a full disk, for real (ulimit -f)


def _file_size_limit(limit: int):
    def apply():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_a_full_disk_fails_runs_and_sweeps_truthfully_and_resume_finishes(tmp_path):
    """Every file over 30 kB fails to write (the figures): exit 1, one Error line naming the file,
    nothing claims success, the manifest is final, and a resume on a roomy disk runs each point once."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    env = env_for()
    common = dict(capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
                  preexec_fn=_file_size_limit(30_000))
    run = subprocess.run([sys.executable, "-m", "initlab", "run", "tiny.yaml"], **common)
    assert run.returncode == 1, run.stderr
    assert "File too large" in assert_one_error(run.stderr)
    [metrics] = tmp_path.glob("outputs/tiny/2*/metrics.json")
    assert json.loads(metrics.read_text())["status"] == "failed"
    assert not (tmp_path / "outputs/tiny/latest").exists()  # `latest` only ever names a complete run

    sweep = subprocess.run([sys.executable, "-m", "initlab", "sweep", "tiny.yaml", "--std", "1,0.5", "--figures"],
                           **common)
    assert sweep.returncode == 1, sweep.stderr
    assert "File too large" in assert_one_error(sweep.stderr)
    assert "sweep.png" not in sweep.stderr.splitlines()[-2]  # the closing line lists only files written
    [sweep_dir] = tmp_path.glob("outputs/tiny/sweep-*")
    manifest = read_manifest(sweep_dir)
    assert manifest["state"] != "running"
    assert [p["status"] for p in manifest["points"]] == ["failed", "failed"]
    assert not (sweep_dir / JOURNAL).exists()

    again = cli_run(tmp_path, "sweep", "--resume", sweep_dir, "--figures")
    assert again.returncode == 0, again.stderr
    manifest = read_manifest(sweep_dir)
    assert manifest["state"] == "completed"
    assert [p["status"] for p in manifest["points"]] == ["completed", "completed"]
    assert len(list((sweep_dir / "runs").iterdir())) == 2


def test_resuming_a_sweep_made_by_another_version_says_so(finished_sweep):
    """Configs gain keys between versions and their hashes follow: the message names the version, not a hand edit."""
    d, stamps = finished_sweep
    edit_manifest(d, lambda m: m.update(initlab_version="0.1.0", config_hash="0" * 16))
    result = CliRunner().invoke(cli, ["sweep", "--resume", str(d)])
    assert result.exit_code == 2, result.output
    line = assert_one_error(result.stderr)
    assert "made by initlab 0.1.0" in line and initlab.__version__ in line
    assert {p: p.stat().st_mtime_ns for p in d.glob("runs/*/metrics.json")} == stamps  # nothing re-run
    edit_manifest(d, lambda m: m.update(initlab_version=initlab.__version__))
    same_version = CliRunner().invoke(cli, ["sweep", "--resume", str(d)])
    assert same_version.exit_code == 2 and "edited by hand" in same_version.stderr
