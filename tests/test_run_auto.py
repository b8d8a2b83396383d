"""`localagent run --model auto --for TAG`: the variant `localagent recommend` names, read from
the results database, run for real (the bundled model), with one line saying which and why.
The stored trials come from the schema's factories; the task file is a real one on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import make_run_info, make_trial
from test_cli_run import localagent
from test_fallback import down_model

from localagent.bench.database import ResultsDB
from localagent.bench.tasks import load_task_file

TASK = """id = "greet"
title = "Say hello"
tier = 1
tags = ["greeting"]
prompt = "Answer with the word hello."

[[checks]]
kind = "answer_contains"
text = "hello"

[[solution]]
answer = "hello"
"""


@pytest.fixture
def tasks_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "greet.toml").write_text(TASK)
    return folder


def _store(tasks_dir: Path, *specs: tuple[str, str, int, int, float]) -> None:
    """(model, kind, successes, trials, cost per trial) on the task `greet`."""
    sha = load_task_file(tasks_dir / "greet.toml").sha256
    with ResultsDB() as db:
        db.save_run(make_run_info(tasks_dir=str(tasks_dir), task_ids=["greet"], tool_mode="json"))
        for model, kind, successes, n, cost in specs:
            for i in range(n):
                db.add_trial(
                    make_trial(
                        model=model,
                        model_kind=kind,
                        task_id="greet",
                        task_sha256=sha,
                        trial=i,
                        success=i < successes,
                        cost_usd=cost,
                        wall_s=1.0 if kind == "local" else 3.0,
                        engine={"tool_mode": "json"} if kind == "local" else {},
                    )
                )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


def test_an_empty_store_says_which_bench_to_run(workspace: Path) -> None:
    done = localagent("run", "hello", "-m", "auto", "--for", "greeting", "-w", str(workspace))
    assert done.returncode == 1 and done.stdout == ""
    assert "error: no bench results are stored yet" in done.stderr
    assert "hint: run `localagent bench" in done.stderr


def test_cost_picks_the_free_local_variant_and_runs_it(workspace: Path, tasks_dir: Path) -> None:
    _store(tasks_dir, ("smollm2-135m", "local", 20, 20, 0.0), ("big", "hosted", 20, 20, 0.01))
    args = ("run", "hello", "-m", "auto", "--for", "greeting", "--prefer", "cost", "-w", str(workspace))
    done = localagent(*args, "--max-steps", "1", "--max-tokens", "16", "--json")
    out = json.loads(done.stdout)
    assert out["auto"]["model"] == "smollm2-135m" and out["auto"]["variant"] == "smollm2-135m json"
    assert out["auto"]["group"] == "tag greeting" and out["auto"]["prefer"] == "cost"
    assert out["auto"]["why"].startswith("use smollm2-135m json: 20/20 trials")
    assert out["model"] == "smollm2-135m" and out["tool_mode"] == "json"  # the stored variant's mode
    assert out["usage"]["input_tokens"] > 0  # the real model ran


def test_performance_picks_the_variant_with_the_higher_lower_bound(
    workspace: Path, tasks_dir: Path, localagent_home: Path
) -> None:
    # the local model at 12/20 does not clear 80%; the hosted one does: auto names it
    down_model(localagent_home)
    _store(tasks_dir, ("smollm2-135m", "local", 12, 20, 0.0), ("down", "hosted", 20, 20, 0.01))
    done = localagent("run", "hello", "-m", "auto", "--for", "greeting", "-w", str(workspace), "--json")
    out = json.loads(done.stdout)
    assert out["auto"]["model"] == "down"
    assert "No local variant meets 80%" in out["auto"]["why"]
    assert out["model"] == "down" and out["attempts"][0]["stop_reason"] == "api_error"  # it ran (and its port is shut)
    # as text: the choice is one line on stderr, before the run's own output
    text = localagent("run", "hello", "-m", "auto", "--for", "greeting", "-w", str(workspace))
    first = text.stderr.splitlines()[0]
    assert first.startswith("auto: down for tag greeting (prefer performance, bar 80%): use down: 20/20 trials")


def test_no_variant_at_the_bar_names_the_bench_that_would_settle_it(workspace: Path, tasks_dir: Path) -> None:
    _store(tasks_dir, ("smollm2-135m", "local", 3, 3, 0.0))  # 3/3: the interval starts at 44%
    done = localagent("run", "hello", "-m", "auto", "--for", "greeting", "-w", str(workspace))
    assert done.returncode == 1 and done.stdout == ""
    assert "error: --model auto has nothing to run for tag greeting: no variant meets 80%" in done.stderr
    assert "hint: more trials would settle it: localagent bench --model smollm2-135m --tool-mode json" in done.stderr
    assert f"--tasks {tasks_dir}" in done.stderr and "--task greet --trials " in done.stderr


def test_an_unknown_tag_gets_the_known_ones(workspace: Path, tasks_dir: Path) -> None:
    _store(tasks_dir, ("smollm2-135m", "local", 20, 20, 0.0))
    done = localagent("run", "hello", "-m", "auto", "--for", "greting", "-w", str(workspace))
    assert done.returncode == 1
    assert "error: no stored trial has the tag 'greting'" in done.stderr
    assert "hint: did you mean 'greeting'?" in done.stderr and "Traceback" not in done.stderr
