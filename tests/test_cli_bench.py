"""`localagent bench` and `localagent results` as a user runs them: real subprocesses, the
real task suite, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localagent.bench.database import ResultsDB
from localagent.bench.rundir import RunDir
from localagent.bench.tasks import load_tasks

# three tier-1 tasks of the shipped suite, whichever they are
TIER1 = [t.id for t in load_tasks(tier=1)][:3]

SLOW_TASK = """
id = "{id}"
title = "Write ok, then a slow check"
tier = 1
prompt = "Write ok to out.txt."

[[checks]]
kind = "file_equals"
path = "out.txt"
text = "ok"

[[checks]]
kind = "command"
argv = ["python", "-c", "import time; time.sleep(0.25)"]

[[solution]]
tool = "write_file"
arguments = {{ path = "out.txt", content = "ok" }}
[[solution]]
answer = "done"
"""


def localagent(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "localagent", *args], capture_output=True, text=True, timeout=300, **kwargs
    )


def test_bench_oracle_and_noop_as_json(localagent_home):
    args = ["bench", "--model", "oracle", "--model", "noop", "--json"]
    for task in TIER1:
        args += ["--task", task]
    proc = localagent(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # progress is quiet when stderr is not a terminal
    doc = json.loads(proc.stdout)
    by_model: dict[str, list[dict]] = {}
    for trial in doc["trials"]:
        by_model.setdefault(trial["model"], []).append(trial)
    assert [t["success"] for t in by_model["oracle"]] == [True] * 3
    assert [t["success"] for t in by_model["noop"]] == [False] * 3
    assert all(t["failure_mode"] in ("wrong_answer", "wrong_state") for t in by_model["noop"])
    assert doc["run"]["models"] == ["oracle", "noop"] and doc["run"]["finished_at"]
    assert sorted(doc["run"]["task_ids"]) == sorted(TIER1)
    assert [m["name"] for m in doc["summary"]["models"]] == ["oracle", "noop"]
    run_dir = Path(doc["run_dir"])
    assert run_dir.parent == localagent_home / "runs"
    assert len(RunDir(run_dir).read_trials()) == 6
    for trial in doc["trials"]:
        lines = (run_dir / trial["trace_path"]).read_text().splitlines()
        assert json.loads(lines[0])["kind"] == "header" and json.loads(lines[-1])["kind"] == "final"
    with ResultsDB() as db:
        assert len(db.trials(doc["run"]["run_id"])) == 6


def test_bench_prints_the_report_tables(localagent_home):
    proc = localagent("bench", "--model", "oracle", "--task", TIER1[0])
    assert proc.returncode == 0, proc.stderr
    assert "oracle" in proc.stdout and "1/1" in proc.stdout
    assert "localagent report" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "gpt-5-mini"], "'gpt-5-mini' is a hosted model"),
        (["--baseline", "oracle"], "--baseline takes a hosted model"),
        (["--model", "oracel"], "unknown model 'oracel'"),
        (["--model", "oracle", "--task", "no-such-task"], "no task 'no-such-task'"),
        (["--resume", "x", "--model", "noop"], "--resume continues a run with the settings it started with"),
        (["--resume", "nothing-here"], "no bench run 'nothing-here'"),
    ],
)
def test_bench_errors_are_one_line_with_a_hint(args, message, localagent_home, monkeypatch, capsys):
    from localagent.cli import main

    monkeypatch.setattr(sys, "argv", ["localagent", "bench", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "\nhint: " in err


def _slow_suite(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        (folder / f"slow-{i}.toml").write_text(SLOW_TASK.format(id=f"slow-{i}"))
    return folder


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        assert proc.poll() is None, "the bench ended before it could be interrupted"
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {n} lines")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_killed_run_resumes_without_rerunning_finished_trials(sig, tmp_path, localagent_home):
    tasks = _slow_suite(tmp_path / "tasks", 3)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localagent",
            "bench",
            "--model",
            "oracle",
            "--tasks",
            str(tasks),
            "--trials",
            "3",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a background shell (`make test &`, nohup) starts children with SIGINT ignored, and
        # Python keeps that: the bench then ran to the end and exited 0 instead of 130
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for_lines(out / "results.jsonl", 3, proc)
    os.kill(proc.pid, sig)
    _, stderr = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "--resume" in stderr and "Traceback" not in stderr
    else:
        assert proc.returncode == -signal.SIGKILL

    run = RunDir(out)
    before = run.read_trials()
    assert 3 <= len(before) < 9
    assert run.read_info().finished_at is None

    proc = localagent("bench", "--resume", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    after = run.read_trials()
    keys = [(t.model, t.task_id, t.trial) for t in after]
    assert len(after) == 9 and len(set(keys)) == 9
    assert after[: len(before)] == before  # the finished trials were kept, not run again
    assert {(t["task_id"], t["trial"]) for t in doc["trials"]} == {(f"slow-{i}", k) for i in range(3) for k in range(3)}
    assert all(t.success for t in after)
    assert doc["run"]["finished_at"] and doc["run"]["run_id"] == before[0].run_id
    assert any(f"{len(before)} of 9 trials already done" in n for n in doc["notices"])
    with ResultsDB() as db:
        assert len(db.trials(before[0].run_id)) == 9


def test_results_export_and_import_between_homes(localagent_home, tmp_path, monkeypatch):
    proc = localagent("bench", "--model", "oracle", "--task", TIER1[0], "--task", TIER1[1], "--json")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run"]["run_id"]
    shared = tmp_path / "shared.tar.gz"
    proc = localagent("results", "export", str(shared), "--run", run_id, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"file": str(shared), "runs": 1, "trials": 2, "traces": 2}

    monkeypatch.setenv("LOCALAGENT_HOME", str(tmp_path / "teammate"))
    first = localagent("results", "import", str(shared))
    assert first.returncode == 0, first.stderr
    assert "imported 1 run(s), 2 trial(s) (0 already stored), 2 trace(s)" in first.stdout
    second = localagent("results", "import", str(shared), "--json")
    assert json.loads(second.stdout)["trials_skipped"] == 2
    with ResultsDB() as db:
        assert [t.task_id for t in db.trials(run_id)] == sorted(TIER1[:2])

    proc = localagent("results", "import", str(tmp_path / "missing.json"))
    assert proc.returncode == 1 and "no such file" in proc.stderr


def test_progress_on_a_terminal_shows_each_trial_and_notices_always(capsys, localagent_home):
    from localagent.bench.runner import BenchConfig, run_bench
    from localagent.cli.bench import BenchProgress

    run_bench(BenchConfig(models=("oracle", "noop"), task_ids=tuple(TIER1[:1])), on_event=BenchProgress(enabled=True))
    err = capsys.readouterr().err
    assert f"[1/2] oracle {TIER1[0]} #0 pass" in err
    assert f"[2/2] noop {TIER1[0]} #0 fail (" in err
    assert "1 task(s) x 1 trial(s), results in" in err

    quiet = BenchProgress(enabled=False)
    run_bench(BenchConfig(models=("oracle",), task_ids=tuple(TIER1[:1])), on_event=quiet)
    assert capsys.readouterr().err == ""
