"""Many ``initlab run`` processes into one output root at the same second: distinct run
directories (``<stamp>``, ``<stamp>-1``, …), none overwritten."""
import json
import os
import subprocess
import sys
import threading

from initlab.output import make_unique_dir, read_json

SMALL = ["--set", "data.samples=50", "--set", "data.eval_samples=20", "--set", "model.width=10",
         "--set", "model.depth=1", "--set", "record.samples=50"]
FROZEN_STAMP = "2030-01-01_00-00-00"


def start_runs(tmp_path, n, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "INITLAB_DEBUG"}
    env.update(env_extra or {})
    procs = [subprocess.Popen([sys.executable, "-m", "initlab", "run", "--seed", str(i), "--out", "shared", "--json",
                               *SMALL], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    reported = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        reported.append(tmp_path / json.loads(out)["run_dir"])
    run_dirs = sorted((tmp_path / "shared" / "default").iterdir())
    assert sorted(reported) == run_dirs, "each process reports the directory it wrote"
    return run_dirs


def check_distinct(run_dirs, n):
    assert len(run_dirs) == n
    seeds = sorted(read_json(d / "metrics.json")["seed"] for d in run_dirs)
    assert seeds == list(range(n)), "every run kept its own directory: none overwritten"
    for d in run_dirs:
        saved_seed = [line for line in (d / "config.yaml").read_text().splitlines() if line.startswith("seed:")]
        assert saved_seed == [f"seed: {read_json(d / 'metrics.json')['seed']}"], d


def test_runs_started_together_get_distinct_dirs(tmp_path):
    run_dirs = start_runs(tmp_path, 3)
    check_distinct(run_dirs, 3)


def test_runs_in_the_very_same_second_take_numbered_dirs(tmp_path):
    """The clock frozen in every process (a sitecustomize): all 4 race for one name and take -1..-3."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import initlab.output\n"
        f"initlab.output.timestamp = lambda t=None: {FROZEN_STAMP!r}\n"
    )
    path = os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    run_dirs = start_runs(tmp_path, 4, {"PYTHONPATH": path})
    assert [d.name for d in run_dirs] == sorted([FROZEN_STAMP] + [f"{FROZEN_STAMP}-{k}" for k in range(1, 4)])
    check_distinct(run_dirs, 4)


def test_threads_racing_for_one_name(tmp_path):
    barrier = threading.Barrier(32)
    made = []

    def take():
        barrier.wait()
        made.append(make_unique_dir(tmp_path, "stamp"))

    threads = [threading.Thread(target=take) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(p.name for p in made)
    assert len(set(names)) == 32
    assert set(names) == {"stamp", *(f"stamp-{k}" for k in range(1, 32))}
