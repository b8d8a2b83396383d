"""`localagent map` and `localagent recommend` over a real results.db, filled by real bench
runs of the scripted models (oracle passes every task, noop fails every one)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from fixtures_cli import cli
from fixtures_tasks import copy_suite

from localagent.bench import metrics
from localagent.bench.capability import host_profile
from localagent.bench.runner import BenchConfig, host_info, run_bench
from localagent.bench.tasks import load_tasks

TIER1 = load_tasks(tier=1)[:3]
TIER2 = load_tasks(tier=2)[0]


def _suite(folder: Path, suffix: str = "") -> Path:
    return copy_suite(folder, "copy-file", "Copy a file", header='tags = ["copy", "write"]', answer=f"Copied.{suffix}")


@pytest.fixture
def two_runs():
    """oracle and noop on three tier-1 tasks, twice each; then oracle at temperature 0.5 on
    one of them and a tier-2 task: three variants, two tiers."""
    first = run_bench(BenchConfig(models=("oracle", "noop"), task_ids=tuple(t.id for t in TIER1), trials=2))
    second = run_bench(BenchConfig(models=("oracle",), task_ids=(TIER1[0].id, TIER2.id), temperature=0.5))
    return first, second


@pytest.mark.parametrize("command", ["map", "recommend"])
def test_an_empty_store_says_how_to_fill_it(command, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, command)
    assert code == 1 and out == ""
    assert err.startswith("error: no bench results are stored yet\n")
    assert "hint: run `localagent bench --quick`" in err


def test_the_map_of_real_runs_as_json(two_runs, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "map", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["trials"] == 6 * 2 + 2 and doc["runs"] == 2
    assert set(doc["variants"]) == {"oracle", "noop", "oracle temp=0.5"}
    assert doc["hosts"] == [host_profile(host_info())]
    everything = doc["groups"][0]
    assert everything["title"] == "all tasks" and len(everything["task_ids"]) == 4
    stats = {v["label"]: v for v in everything["variants"]}
    oracle, noop = stats["oracle"], stats["noop"]
    assert (oracle["passed"]["successes"], oracle["passed"]["n"]) == (6, 6)
    assert (oracle["passed"]["lo"], oracle["passed"]["hi"]) == pytest.approx(metrics.wilson_interval(6, 6))
    assert (oracle["k"], oracle["pass_hat_k"]) == (2, 1.0)
    assert (noop["passed"]["successes"], noop["passed"]["n"], noop["pass_hat_k"]) == (0, 6, 0.0)
    assert noop["cost_per_solved"] is None and oracle["cost_per_solved"] == 0.0
    assert oracle["peak_rss_bytes"] > 0 and oracle["median_wall_s"] > 0
    assert [s["trials"] for s in oracle["speeds"]] == [6]
    # highest lower bound first: the 6/6 oracle before the 2/2 one at temperature 0.5
    assert [v["label"] for v in everything["variants"]] == ["oracle", "oracle temp=0.5", "noop"]
    tiers = {g["name"]: g for g in doc["groups"] if g["kind"] == "tier"}
    assert sorted(tiers) == ["1", "2"]
    assert [v["label"] for v in tiers["2"]["variants"]] == ["oracle temp=0.5"]
    tags = {g["name"]: g["task_ids"] for g in doc["groups"] if g["kind"] == "tag"}
    for task in [*TIER1, TIER2]:
        for tag in task.tags:
            assert task.id in tags[tag]
    grid = {row["task_id"]: row["cells"] for row in doc["tasks"]}
    column = doc["variants"].index("noop")
    assert grid[TIER1[0].id][column] == {"passes": 0, "trials": 2}
    assert grid[TIER2.id][column] is None


def test_the_map_as_tables(two_runs, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "map")
    assert code == 0, err
    for title in (
        "All tasks (4 tasks)",
        "Success by tier",
        "Success by tag",
        "Speed per host profile",
        "Task × variant",
    ):
        assert title in out
    assert "oracle temp=0.5" in out and "6/6" in out and "0/6" in out
    assert "14 trials from 2 runs" in out


def test_filters_narrow_the_map(two_runs, monkeypatch, capsys):
    tag = TIER1[0].tags[0]
    code, out, err = cli(monkeypatch, capsys, "map", "--json", "--tag", tag, "--model", "noop")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["variants"] == ["noop"]
    assert all(tag in row["tags"] for row in doc["tasks"])
    code, out, err = cli(monkeypatch, capsys, "map", "--json", "--tier", "2")
    assert code == 0, err
    assert [row["task_id"] for row in json.loads(out)["tasks"]] == [TIER2.id]


@pytest.mark.parametrize(
    "args, message, hint",
    [
        (["--tag", "no-such-tag"], "no stored trial has the tag 'no-such-tag'", "known tags: "),
        (["--model", "oracel"], "no stored trial has the model 'oracel'", "did you mean 'oracle'?"),
        (["--host", "no such host"], "no stored run was made on a host matching 'no such host'", "hosts: "),
        (["--since", "2999-01-01"], "no stored trial matches", "drop a filter"),
        (["--since", "yesterday"], "--since takes a date as YYYY-MM-DD", "e.g. --since"),
    ],
)
def test_bad_filters_are_one_line_with_a_hint(args, message, hint, two_runs, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "map", *args)
    assert code == 1 and out == ""
    assert err.startswith(f"error: {message}")
    assert hint in err.split("\nhint: ", 1)[1]


def test_only_the_latest_version_of_a_task_counts(tmp_path, monkeypatch, capsys):
    tasks = _suite(tmp_path / "tasks")
    run_bench(BenchConfig(models=("oracle",), tasks_dir=tasks, trials=2))
    _suite(tasks, suffix=" Done.")  # a new version of the task: its sha256 changes
    run_bench(BenchConfig(models=("noop",), tasks_dir=tasks))
    code, out, err = cli(monkeypatch, capsys, "map", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["variants"] == ["noop"]
    assert "2 trials of older task versions left out" in doc["notes"]
    (row,) = doc["tasks"]
    assert row["task_id"] == "copy-file" and row["tags"] == ["copy", "write"]


def test_the_html_map_has_a_heatmap_and_pareto_charts(two_runs, tmp_path, monkeypatch, capsys):
    page = tmp_path / "map.html"
    code, out, err = cli(monkeypatch, capsys, "map", "--html", str(page))
    assert code == 0, err
    assert f"wrote {page}" in err
    text = page.read_text()
    assert text.count("<svg") == 2
    assert "Task × variant heatmap" in text and "hsl(120, 65%, 78%)" in text and "hsl(0, 65%, 78%)" in text
    for label in ("oracle temp=0.5", "noop", TIER2.id):
        assert label in text


def test_recommend_leaves_out_the_pseudo_models_unless_named(two_runs, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "recommend")
    assert code == 1
    assert "error: only the pseudo-models noop and oracle have stored results: nothing to recommend" in err
    args = ["recommend", "--model", "oracle", "--model", "noop", "--min-success", "0.5", "--json"]
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    (everything, tier1, tier2) = json.loads(out)["recommendations"]
    assert (everything["group"], tier1["group"], tier2["group"]) == ("all tasks", "tier 1", "tier 2")
    # 6/6 starts at 61%, the 2/2 at temperature 0.5 at 34%
    assert everything["use"]["label"] == "oracle" and everything["use"]["n"] == 6
    assert everything["text"].startswith("use oracle: 6/6 trials on 3 tasks (100%, 61–100%)")
    # tier 2 has one trial, at temperature 0.5: 1/1 starts at 21%, and it says what would settle it
    assert tier2["use"] is None and tier2["best"]["label"] == "oracle temp=0.5"
    assert tier2["text"].startswith("no variant meets 50%")
    (settle,) = tier2["undecided"]
    assert settle["command"].startswith("localagent bench --model oracle --temperature 0.5 --tier 2 --trials ")


def test_too_little_evidence_names_the_bench_that_settles_it(tmp_path, monkeypatch, capsys):
    tasks = _suite(tmp_path / "tasks")
    run_bench(BenchConfig(models=("oracle",), tasks_dir=tasks))
    code, out, err = cli(monkeypatch, capsys, "recommend", "--model", "oracle")
    assert code == 0, err
    assert "no variant meets 80%" in out
    (command,) = [line.split(": ", 2)[2] for line in out.splitlines() if "too little evidence for oracle" in line]
    args = shlex.split(command)
    assert args[:4] == ["localagent", "bench", "--model", "oracle"]
    assert args[args.index("--tasks") + 1] == str(tasks.resolve())
    # the command, run as given, settles it: 16 of 16 clears 80% on the lower end
    code, _, err = cli(monkeypatch, capsys, *args[1:])
    assert code == 0, err
    code, out, err = cli(monkeypatch, capsys, "recommend", "--model", "oracle", "--json")
    assert code == 0, err
    (rec,) = json.loads(out)["recommendations"]
    assert rec["use"]["label"] == "oracle" and rec["use"]["lo"] >= 0.8 and rec["undecided"] == []
