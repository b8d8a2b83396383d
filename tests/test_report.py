"""The bench report: figures from hand-made result records, and each renderer's output."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from factories import make_run_info, make_trial
from rich.console import Console
from typer.testing import CliRunner

import localagent.cli.report  # noqa: F401  registers `report`
from localagent import settings
from localagent.bench import metrics
from localagent.bench.charts import pareto_front
from localagent.bench.database import ResultsDB
from localagent.bench.formatting import fmt_interval, fmt_seconds, fmt_speed, fmt_tiers, fmt_usd
from localagent.bench.html_page import render_html
from localagent.bench.render import render_terminal, to_json, to_markdown
from localagent.bench.rundir import RunDir
from localagent.bench.schema import HostInfo
from localagent.bench.summary import summarize
from localagent.cli.app import app
from localagent.errors import ResultsError

HOST = HostInfo(
    cpu="Test CPU", physical_cores=2, logical_cores=2, ram_bytes=8_000_000_000, gpu="none", os="Linux", python="3.11"
)
TIERS = {"read": 1, "count": 1, "edit": 2, "rename": 3, "fix": 3, "aggregate": 3}
# passes out of 3 trials per task
PASSES = {
    "small": {"read": 3, "count": 2, "edit": 1, "rename": 0, "fix": 0, "aggregate": 0},
    "medium": {"read": 3, "count": 3, "edit": 2, "rename": 1, "fix": 1, "aggregate": 1},
    "gpt-5-mini": {t: 3 for t in TIERS},
}
MIB = 2**20
WALL = {"small": 10.0, "medium": 20.0, "gpt-5-mini": 4.0}


def run_info(run_id="run-1", models=("small", "medium"), baselines=("gpt-5-mini",), trials=3, tasks=TIERS):
    return make_run_info(
        run_id=run_id,
        started_at="2026-11-02T10:00:00Z",
        finished_at="2026-11-02T11:00:00Z",
        host=HOST,
        models=list(models),
        baselines=list(baselines),
        tasks_dir="benchmarks/tasks",
        task_ids=list(tasks),
        trials=trials,
        price_table="models.toml (prices as of 2026-10-01)",
        load_s={m: 1.5 for m in models},
    )


def trial(model, task, i, success, run_id="run-1", **fields):
    """A trial whose figures the report tests work out by hand: a local model's memory and
    speed, a hosted one's cost and time to first token."""
    hosted = model.startswith("gpt")
    values = dict(
        run_id=run_id,
        model=model,
        model_kind="hosted" if hosted else "local",
        task_id=task,
        task_sha256=f"sha-{task}",
        tier=TIERS[task],
        trial=i,
        finished_at="2026-11-02T10:30:00Z",
        success=success,
        steps=3,
        tool_calls=2,
        input_tokens=1000,
        cached_input_tokens=200,
        output_tokens=100,
        prompt_tokens_evaluated=800,
        wall_s=WALL.get(model, 5.0),
        model_s=WALL.get(model, 5.0) - 0.5,
        tool_s=0.5,
        ttft_s_mean=0.4 if hosted else 1.2,
        decode_tokens_per_s=None if hosted else 30.0,
        peak_rss_bytes=None if hosted else 700 * MIB,
        peak_anon_bytes=None if hosted else 200 * MIB,
        peak_file_bytes=None if hosted else 500 * MIB,
        model_file_bytes=None if hosted else 98 * MIB,
        cost_usd=0.01 if hosted else 0.0,
        price_as_of="2026-10-01" if hosted else None,
        trace_path=f"traces/{model}/{task}/{i}.jsonl",
    )
    values.update(fields)
    return make_trial(**values)


def trials_for(models, k=3, run_id="run-1", passes=PASSES, **fields):
    return [
        trial(m, task, i, i < passes[m][task], run_id=run_id, **fields)
        for m in models
        for task in TIERS
        for i in range(k)
    ]


@pytest.fixture(scope="module")
def full():
    return summarize(run_info(), trials_for(["small", "medium", "gpt-5-mini"]))


def by_name(summary):
    return {m.name: m for m in summary.models}


def test_per_model_figures(full):
    m = by_name(full)
    assert [x.name for x in full.models] == ["small", "medium", "gpt-5-mini"]
    small = m["small"]
    assert (small.tasks, small.trials, small.k, small.passed.successes) == (6, 18, 3, 6)
    assert (small.passed.lo, small.passed.hi) == metrics.wilson_interval(6, 18)
    assert small.pass_hat_k == pytest.approx(1 / 6)  # only "read" passed all 3
    assert m["medium"].pass_hat_k == pytest.approx(2 / 6)
    assert m["gpt-5-mini"].pass_hat_k == 1.0
    assert small.median_wall_s == 10.0
    assert small.tokens_per_solved == pytest.approx(18 * 1100 / 6)
    assert small.cost_per_solved == 0.0
    assert small.load_s == 1.5 and m["gpt-5-mini"].load_s is None
    assert (small.peak_rss_bytes, small.peak_anon_bytes, small.peak_file_bytes) == (700 * MIB, 200 * MIB, 500 * MIB)
    assert m["gpt-5-mini"].peak_rss_bytes is None
    gpt = m["gpt-5-mini"]
    assert gpt.total_cost_usd == pytest.approx(0.18)
    assert gpt.suite_cost_usd == pytest.approx(0.06)  # one pass over 6 tasks
    assert gpt.cost_per_solved == pytest.approx(0.01)
    assert gpt.price_as_of == "2026-10-01" and gpt.source_date is None


def test_tiers_grid_and_paired(full):
    tiers = {(t.model, t.tier): t.passed for t in full.tiers}
    assert (tiers[("small", 1)].successes, tiers[("small", 1)].n) == (5, 6)
    assert (tiers[("small", 3)].successes, tiers[("small", 3)].n) == (0, 9)
    assert (tiers[("small", 3)].lo, tiers[("small", 3)].hi) == metrics.wilson_interval(0, 9)
    assert [r.tier for r in full.grid] == [1, 1, 2, 3, 3, 3]
    count = next(r for r in full.grid if r.task_id == "count")
    assert [(c.passes, c.trials) for c in count.cells] == [(2, 3), (3, 3), (3, 3)]
    paired = {(p.model, p.baseline): p for p in full.paired}
    assert set(paired) == {("small", "gpt-5-mini"), ("medium", "gpt-5-mini")}
    small = paired[("small", "gpt-5-mini")]
    assert (small.common, small.wins, small.losses, small.ties) == (6, 0, 5, 1)
    assert small.p_value == metrics.sign_test(0, 5)


def test_verdict_with_baseline(full):
    verdicts = {v.model: v.text for v in full.verdicts}
    assert set(verdicts) == {"small", "medium"}  # one per local model, none for the baseline
    lo, hi = metrics.wilson_interval(6, 18)
    assert verdicts["small"] == (
        f"small passes 6/18 trials (33%, {fmt_interval(lo, hi)}), pass^3 17% vs gpt-5-mini 18/18 trials; "
        "tier 1–2 parity; $0 vs $0.06 for the suite; 2.5x slower"
    )
    assert verdicts["medium"].endswith("$0 vs $0.06 for the suite; 5.0x slower")


def test_verdict_ahead_and_behind_by_tier():
    passes = {
        "small": {t: 3 if tier == 3 else 0 for t, tier in TIERS.items()},
        "gpt-5-mini": {t: 0 if tier == 3 else 3 for t, tier in TIERS.items()},
    }
    s = summarize(run_info(models=("small",)), trials_for(["small", "gpt-5-mini"], passes=passes))
    assert "; tier 2 parity; ahead on tier 3; " in s.verdicts[0].text
    behind = {"small": {t: 0 for t in TIERS}, "gpt-5-mini": {t: 3 for t in TIERS}}
    rows = trials_for(["small", "gpt-5-mini"], passes=behind)
    s = summarize(run_info(models=("small",)), rows)
    assert "; tier 2 parity; " in s.verdicts[0].text  # 0/3 against 3/3: too few trials to tell
    s = summarize(run_info(models=("small",)), [t for t in rows if t.tier != 2])
    assert "; no tier at parity; " in s.verdicts[0].text


def test_verdict_without_baseline_k1():
    info = run_info(models=("small",), baselines=(), trials=1)
    s = summarize(info, trials_for(["small"], k=1))
    assert s.paired == ()
    (v,) = s.verdicts
    lo, hi = metrics.wilson_interval(3, 6)
    assert v.text == (
        f"small solves 3/6 (50%, {fmt_interval(lo, hi)}); best on tier 1 (2/2), weakest on tier 3 (0/3); "
        "$0 for the suite; median 10.0 s per task; peak RSS 700.0 MiB"
    )
    assert s.models[0].pass_hat_k is None


def test_hosted_only_run_gets_absolute_verdicts():
    info = run_info(models=(), baselines=("gpt-5-mini", "gpt-5"), trials=1)
    rows = trials_for(["gpt-5-mini"], k=1)
    rows += [t.model_copy(update={"model": "gpt-5", "cost_usd": 0.05}) for t in rows]
    s = summarize(info, rows)
    assert [v.model for v in s.verdicts] == ["gpt-5-mini", "gpt-5"] and s.paired == ()
    assert s.verdicts[0].text.startswith("gpt-5-mini solves 6/6 (100%, ")
    assert "$0.06 for the suite" in s.verdicts[0].text and "peak RSS" not in s.verdicts[0].text
    assert "$0.30 for the suite" in s.verdicts[1].text and " vs " not in s.verdicts[1].text


def test_zero_solved_has_no_per_solved_figures():
    none_pass = {"small": {t: 0 for t in TIERS}}
    s = summarize(run_info(models=("small",), baselines=(), trials=1), trials_for(["small"], k=1, passes=none_pass))
    m = s.models[0]
    assert m.passed.successes == 0 and m.tokens_per_solved is None and m.cost_per_solved is None
    assert s.verdicts[0].text.startswith("small solves 0/6 (0%, 0–")
    out = io.StringIO()
    render_terminal(s, Console(file=out, width=100, color_system=None))
    assert "—" in out.getvalue()


def test_stored_baseline_only_on_same_task_versions():
    info = run_info(models=("small",), trials=1)
    stored = trials_for(["gpt-5-mini"], k=1, run_id="run-0", finished_at="2026-10-20T09:00:00Z")
    stored[0] = stored[0].model_copy(update={"task_sha256": "older-version"})  # "read" changed since
    stored.append(trial("gpt-5-mini", "read", 0, True, run_id="run-0", task_id="retired"))
    s = summarize(info, trials_for(["small"], k=1), baseline_trials=stored)
    gpt = by_name(s)["gpt-5-mini"]
    assert gpt.trials == 5 and gpt.source_run_id == "run-0" and gpt.source_date == "2026-10-20"
    assert s.paired[0].common == 5
    assert "vs gpt-5-mini 5/5 (stored run of 2026-10-20); parity on every tier;" in s.verdicts[0].text
    # a baseline that ran in this run wins over stored results of it
    again = summarize(run_info(trials=1), trials_for(["small", "gpt-5-mini"], k=1), baseline_trials=stored)
    assert by_name(again)["gpt-5-mini"].source_run_id == "run-1"


def test_baseline_with_no_results_is_noted():
    s = summarize(run_info(models=("small",), trials=1), trials_for(["small"], k=1))
    assert s.notes == ("gpt-5-mini: no results",)
    assert s.paired == () and "vs" not in s.verdicts[0].text


@pytest.mark.parametrize(
    "tiers, text",
    [([1], "tier 1"), ([1, 2], "tier 1–2"), ([1, 3], "tiers 1 and 3"), ([1, 2, 4], "tiers 1–2 and 4")],
)
def test_fmt_tiers(tiers, text):
    assert fmt_tiers(tiers) == text


@pytest.mark.parametrize(
    "fmt, value, text",
    [
        (fmt_seconds, None, "—"),
        (fmt_seconds, 0.0004, "0.4 ms"),
        (fmt_seconds, 0.25, "250 ms"),
        (fmt_seconds, 12.34, "12.3 s"),
        (fmt_usd, 0.0, "$0"),
        (fmt_usd, 0.0042, "$0.0042"),
        (fmt_usd, 0.414, "$0.41"),
        (fmt_usd, None, "—"),
        (fmt_speed, 3.14, "3.1x slower"),
        (fmt_speed, 0.5, "2.0x faster"),
        (fmt_speed, 1.02, "as fast"),
    ],
)
def test_formats(fmt, value, text):
    assert fmt(value) == text


def test_pareto_front():
    points = [(0.0, 30.0), (0.5, 90.0), (0.2, 20.0), (0.6, 90.0), (0.0, 10.0)]
    assert pareto_front(points) == [0, 1]


def test_terminal_at_100_columns_without_colour(full):
    out = io.StringIO()
    render_terminal(full, Console(file=out, width=100, color_system=None, force_terminal=False))
    text = out.getvalue()
    assert "\x1b[" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    for needle in ("small", "medium", "gpt-5-mini", "Task × model", "2/3", "pass^3", "Verdict", "tier 1–2 parity"):
        assert needle in text
    k1 = summarize(run_info(models=("small",), baselines=(), trials=1), trials_for(["small"], k=1))
    out = io.StringIO()
    render_terminal(k1, Console(file=out, width=100, color_system=None))
    assert "✓" in out.getvalue() and "✗" in out.getvalue()


def test_json_round_trip(full):
    data = json.loads(to_json(full))
    assert data["schema_version"] == 1
    assert [m["name"] for m in data["models"]] == ["small", "medium", "gpt-5-mini"]
    assert data["models"][0]["passed"]["successes"] == 6
    assert len(data["trials"]) == 54


def test_markdown_has_tables(full):
    md = to_markdown(full)
    assert "| Model | Kind | Tasks | Passed |" in md
    assert "|---|---|---:|" in md
    assert "| count | 1 | 2/3 | 3/3 | 3/3 |" in md


def test_html_page_with_charts_and_traces(full, tmp_path):
    run_dir = tmp_path / "runs" / "run-1"
    for t in full.trials:
        path = run_dir / t.trace_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"step": 0, "text": "<script>alert(1)</script>"}) + "\n")
    page = render_html(full, run_dir, tmp_path / "out" / "report.html")
    text = page.read_text()
    assert text.count("<svg") == 2 and "Pareto frontier" in text
    assert "href='../runs/run-1/traces/small/read/0.jsonl'" in text
    assert text.count("<details>") == 54
    assert "<script>" not in text and "&lt;script&gt;" in text


# --- `localagent report`, on runs written by the results store ----------------------------


def store_run(info, trials, *, traces=True):
    """Write a run the way the bench does: run folder, results.jsonl, traces, database."""
    run = RunDir.create(settings.runs_dir() / info.run_id, info)
    with ResultsDB() as db:
        db.save_run(info, run.path)
        for t in trials:
            t = t.model_copy(update={"trace_path": run.trace_path(t.model, t.task_id, t.trial)})
            if traces:
                path = run.path / t.trace_path
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"kind": "final", "answer": f"{t.model} on {t.task_id}"}) + "\n")
            run.append(t)
            db.add_trial(t)
    return run


@pytest.fixture
def two_runs():
    """An earlier run of the hosted baseline, then a local run that names it but did not run it."""
    old = run_info("20261020-090000-aaaa", models=(), trials=1).model_copy(
        update={"started_at": "2026-10-20T09:00:00Z"}
    )
    store_run(old, trials_for(["gpt-5-mini"], k=1, run_id=old.run_id, finished_at="2026-10-20T09:30:00Z"))
    new = run_info("20261102-100000-bbbb", models=("small",), trials=1)
    store_run(new, trials_for(["small"], k=1, run_id=new.run_id))
    return old, new


def test_cli_report_json_defaults_to_latest_run(two_runs):
    result = CliRunner().invoke(app, ["report", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run_id"] == "20261102-100000-bbbb"
    small, gpt = data["models"]
    assert (small["name"], small["passed"]["successes"], small["passed"]["n"]) == ("small", 3, 6)
    assert (gpt["name"], gpt["source_run_id"], gpt["source_date"]) == (
        "gpt-5-mini",
        "20261020-090000-aaaa",
        "2026-10-20",
    )
    assert data["paired"][0]["common"] == 6 and data["paired"][0]["losses"] == 3
    assert "(stored run of 2026-10-20)" in data["verdicts"][0]["text"]


def test_cli_report_tables_markdown_and_html(two_runs, tmp_path):
    old, _ = two_runs
    result = CliRunner().invoke(app, ["report", old.run_id])
    assert result.exit_code == 0, result.output
    assert "gpt-5-mini solves 6/6" in result.stdout and "Task × model" in result.stdout
    md = CliRunner().invoke(app, ["report", "--markdown"])
    assert "| Model | Kind | Tasks |" in md.stdout
    page = tmp_path / "page" / "report.html"
    result = CliRunner().invoke(app, ["report", "--html", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert text.count("<svg") == 2
    # the baseline's traces are in the earlier run's folder, linked relative to the page
    old_trace = settings.runs_dir() / old.run_id / "traces" / "gpt-5-mini" / "read-0.jsonl"
    assert f"href='{os.path.relpath(old_trace, page.parent)}'" in text
    assert "small on read" in text and "gpt-5-mini on read" in text


def test_cli_report_unknown_run_names_the_latest(two_runs):
    result = subprocess.run(
        [sys.executable, "-m", "localagent", "report", "no-such-run"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "error: no bench run 'no-such-run'" in result.stderr
    assert "hint: latest runs: 20261102-100000-bbbb, 20261020-090000-aaaa" in result.stderr


def test_cli_report_with_nothing_stored():
    result = CliRunner().invoke(app, ["report"])
    assert isinstance(result.exception, ResultsError)
    assert result.exception.hint == "run `localagent bench` first"


def test_report_of_a_real_bench_run(tmp_path):
    """The runner's own records (oracle and noop on tier 1) through `localagent report`."""
    from localagent.bench.runner import BenchConfig, run_bench

    outcome = run_bench(BenchConfig(models=("oracle", "noop"), tier=1))
    result = CliRunner().invoke(app, ["report", "--json", "--html", str(tmp_path / "page.html")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    oracle, noop = data["models"]
    n = len(outcome.info.task_ids)
    assert (oracle["name"], oracle["passed"]["successes"], oracle["passed"]["n"]) == ("oracle", n, n)
    assert (noop["name"], noop["passed"]["successes"], noop["cost_per_solved"]) == ("noop", 0, None)
    assert [v["model"] for v in data["verdicts"]] == ["oracle", "noop"]
    assert data["verdicts"][1]["text"].startswith(f"noop solves 0/{n} (0%, 0–")
    page = (tmp_path / "page.html").read_text()
    for t in outcome.trials:
        assert (outcome.run_dir / t.trace_path).is_file()
        assert os.path.relpath(outcome.run_dir / t.trace_path, tmp_path) in page
