"""``initlab compare``: runs of different depths side by side, and each kind of bad input refused
with one Error line, exit 2 and nothing written."""
from pathlib import Path

import pytest

from initlab.cli import cli
from initlab.comparison import differing
from tests.conftest import strict_json

SMALL = ["--set", "data.samples=60", "--set", "data.eval_samples=20", "--set", "model.width=8",
         "--set", "record.samples=60", "--set", "data.kind=teacher", "--set", "train.steps=6",
         "--set", "train.eval_every=3"]


def invoke(runner, *args):
    return runner.invoke(cli, list(args), catch_exceptions=False)


def make_run(runner, *extra):
    res = invoke(runner, "run", *SMALL, *extra)
    assert res.exit_code == 0, res.output
    return Path(res.stdout.strip())


@pytest.fixture
def two_runs(runner):
    return make_run(runner, "--set", "model.depth=2"), make_run(runner, "--set", "model.depth=4")


def written(root="outputs"):
    return sorted(p for p in Path(root).rglob("*") if p.name in ("compare.png", "compare.json"))


def test_runs_of_different_depths(runner, two_runs):
    a, b = two_runs
    before = {p: p.stat().st_mtime_ns for d in two_runs for p in d.iterdir()}
    res = invoke(runner, "compare", str(a), str(b))
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "model.depth", "status"]  # only the key that differs
    assert lines[1].split()[1:4] == ["2", "completed", "2"] and lines[2].split()[1:4] == ["4", "completed", "4"]
    out = Path(res.stderr.strip().splitlines()[-1])
    assert out.name == "compare.png" and out.parent.parent == Path("outputs/compare").resolve()
    assert out.stat().st_size > 10_000
    assert {p: p.stat().st_mtime_ns for d in two_runs for p in d.iterdir()} == before  # nothing written into the runs
    obj = strict_json((out.parent / "compare.json").read_text())
    assert obj["differing"] == [{"key": "model.depth", "values": [2, 4]}]
    assert [r["label"] for r in obj["runs"]] == ["depth=2", "depth=4"] and [r["depth"] for r in obj["runs"]] == [2, 4]


def test_the_figure_marks_layers_of_one_run_only(two_runs):
    from initlab.comparison import compare_series
    from initlab.plots.compare import compare_figure
    from initlab.results import load_run

    runs = [load_run(p) for p in two_runs]
    fig = compare_figure([compare_series(r, f"depth={r.depth}") for r in runs], "t")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("layers 3–4\nonly in 1\nof 2 runs") == 2  # activation and gradient panels
    act = fig.axes[1]
    assert sorted(len(line.get_xdata()) for line in act.lines) == [2, 2, 4, 4]  # init and end per run
    [legend] = fig.legends  # below the panels: long labels never squeeze them
    assert [t.get_text() for t in legend.get_texts()] == ["depth=2", "depth=4"]


def test_runs_differing_in_many_keys_keep_readable_panels(two_runs):
    """Long legend labels are wrapped below the panels; each panel keeps most of its third of the width."""
    from initlab.comparison import compare_series
    from initlab.plots.compare import compare_figure
    from initlab.results import load_run

    runs = [load_run(p) for p in two_runs]
    long = ", ".join(f"section.key{i}=value{i}" for i in range(14))
    fig = compare_figure([compare_series(r, f"{long}, depth={r.depth}") for r in runs], "t")
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.get_position().width > 0.25  # of the figure's width (three panels)
    [legend] = fig.legends
    assert all("\n" in t.get_text() for t in legend.get_texts())  # wrapped
    box = legend.get_window_extent()
    assert box.x1 <= fig.bbox.width + 1 and box.y0 >= -1


def test_json_and_a_whole_sweep(runner):
    res = invoke(runner, "sweep", "--workers", "1", "--std", "1,0.1", *SMALL, "--set", "model.depth=2")
    sweep_dir = res.stdout.strip()
    res = invoke(runner, "compare", sweep_dir, "--json", "--out", "elsewhere")
    assert res.exit_code == 0, res.output
    obj = strict_json(res.stdout)
    from tests.test_json_contract import DOCS

    assert set(obj) == DOCS["compare"]
    assert Path(obj["out_dir"]).parent == Path("elsewhere/compare").resolve()
    assert [d["key"] for d in obj["differing"]] == ["init.std"]
    assert len(obj["runs"]) == 2 and all(Path(r["path"]).is_absolute() for r in obj["runs"])


def test_differing_ignores_the_name_and_keys_an_older_run_lacks():
    a = {"name": "a", "model": {"depth": 5, "residual": False}, "seed": 0}
    b = {"name": "b", "model": {"depth": 5}, "seed": 1}
    assert differing([a, b]) == {"seed": [0, 1]}


@pytest.mark.parametrize("case", ["itself", "itself via latest", "not a run", "half-written", "missing", "one run",
                                  "out inside a run"])
def test_bad_input_is_one_error_exit_2_and_nothing_written(runner, two_runs, case):
    a, b = two_runs
    foreign = Path("foreign")
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    half = a.parent / "2030-01-01_00-00-00"
    half.mkdir()
    (half / "config.yaml").write_text((a / "config.yaml").read_text())
    args = {"itself": [a, a], "itself via latest": [b, b.parent / "latest"], "not a run": [a, foreign],
            "half-written": [a, half], "missing": [a, "nowhere"], "one run": [a],
            "out inside a run": [a, b, "--out", a]}[case]
    res = invoke(runner, "compare", *map(str, args))
    assert res.exit_code == 2, res.output
    assert res.stdout == "" and len(res.stderr.splitlines()) == 1 and res.stderr.startswith("Error: ")
    assert "Traceback" not in res.stderr
    assert written() == [] and written(a) == []
    res = invoke(runner, "compare", *map(str, args), "--json")
    assert strict_json(res.stdout)["exit_code"] == 2


def test_compare_folders_are_not_listed_as_runs(runner, two_runs):
    invoke(runner, "compare", *map(str, two_runs))
    from initlab.listing import scan

    entries, skipped = scan("outputs")
    assert len(entries) == 2 and skipped == []
    assert [p.name for p in written()] == ["compare.json", "compare.png"]
