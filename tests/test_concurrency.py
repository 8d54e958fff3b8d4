"""Many ``initlab run`` processes into one output root at the same second: distinct run
directories (``<stamp>``, ``<stamp>-1``, …), none overwritten."""
import json
import os
import subprocess
import sys
import threading

from initlab.output.files import make_unique_dir, read_json

SMALL = ["--set", "data.samples=50", "--set", "data.eval_samples=20", "--set", "model.width=10",
         "--set", "model.depth=1", "--set", "record.samples=50"]
FROZEN_STAMP = "2030-01-01_00-00-00"


def start_runs(tmp_path, commands):
    procs = [subprocess.Popen([sys.executable, "-m", "initlab", "run", "--seed", str(seed), "--out", "shared", "--json",
                               *SMALL], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed, env in commands]
    reported = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        reported.append(tmp_path / json.loads(out)["run_dir"])
    run_dirs = sorted(p for p in (tmp_path / "shared" / "default").iterdir() if p.name != "latest")
    assert sorted(reported) == run_dirs, "each process reports the directory it wrote"
    return run_dirs


def test_runs_started_together_get_distinct_dirs(tmp_path):
    """Seven runs at once into one root: three on the real clock, four with the clock frozen (a
    sitecustomize), which all race for one name and must take it, -1, -2, -3."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import initlab.output.files\n"
        f"initlab.output.files.timestamp = lambda t=None: {FROZEN_STAMP!r}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "INITLAB_DEBUG"}
    frozen = dict(env, PYTHONPATH=os.pathsep.join([str(hook), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    run_dirs = start_runs(tmp_path, [(seed, env if seed < 3 else frozen) for seed in range(7)])
    assert len(run_dirs) == 7
    seeds = {d.name: read_json(d / "metrics.json")["seed"] for d in run_dirs}
    assert sorted(seeds.values()) == list(range(7)), "every run kept its own directory: none overwritten"
    assert sorted(name for name in seeds if name.startswith(FROZEN_STAMP)) == \
        [FROZEN_STAMP] + [f"{FROZEN_STAMP}-{k}" for k in range(1, 4)]
    assert {seeds[name] for name in seeds if name.startswith(FROZEN_STAMP)} == {3, 4, 5, 6}
    for d in run_dirs:
        saved = [line for line in (d / "config.yaml").read_text().splitlines() if line.startswith("seed:")]
        assert saved == [f"seed: {seeds[d.name]}"], d


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
