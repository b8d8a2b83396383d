"""`localagent run` through the real console script, in a subprocess, with the real model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from localagent.engines.scripted import NOOP_ANSWER

SCRIPT = Path(sys.executable).with_name("localagent")


def localagent(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # LOCALAGENT_HOME comes from the autouse fixture through os.environ
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=dict(os.environ)
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "README.md").write_text("# Demo\n\nThe secret word is banana.\n")
    return ws


def test_unknown_model_is_a_user_error(workspace: Path) -> None:
    done = localagent("run", "hello", "--model", "smollm2-135n", "--workspace", str(workspace))
    assert done.returncode == 1
    assert "error: unknown model 'smollm2-135n'" in done.stderr
    assert "hint: did you mean 'smollm2-135m'" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_missing_workspace_is_a_user_error(tmp_path: Path) -> None:
    done = localagent("run", "hello", "--model", "noop", "--workspace", str(tmp_path / "nope"))
    assert done.returncode == 1
    assert "error: workspace" in done.stderr and "is not a directory" in done.stderr
    assert "hint: pass an existing folder" in done.stderr


def test_engine_failure_stops_the_run_with_the_engines_hint(workspace: Path, localagent_home: Path) -> None:
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (localagent_home / "models.toml").write_text(
        f'[hosted.down]\nprovider = "local"\nmodel = "m"\nbase_url = "http://127.0.0.1:{port}/v1"\n'
    )
    done = localagent("run", "hello", "--model", "down", "-w", str(workspace))
    assert done.returncode == 1 and done.stdout == ""
    assert "error: the run stopped without an answer (api_error): cannot connect" in done.stderr
    assert "hint: check base_url" in done.stderr
    assert done.stderr.splitlines()[0].startswith("api_error · 1 step · 0 tool calls")


def test_noop_prints_the_answer_then_a_summary_line(workspace: Path) -> None:
    done = localagent("run", "what is the secret word?", "--model", "noop", cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert done.stdout == NOOP_ANSWER + "\n"
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith("answer · 1 step · 0 tool calls · tokens 0 in / 0 out")
    assert "peak RSS" in summary
    assert "step 1" not in done.stderr  # progress is quiet when stderr is not a terminal


def test_noop_json_output(workspace: Path) -> None:
    done = localagent("run", "x", "--model", "noop", "--json", "-w", str(workspace))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["answer"] == NOOP_ANSWER and result["stop_reason"] == "answer" and result["steps"] == 1
    assert result["model"] == "noop" and result["tool_mode"] is None and result["error"] is None
    assert set(result["timings"]) == {"wall_s", "model_s", "tool_s", "load_s"}
    assert result["memory"]["peak_rss_bytes"] > 0 and result["workspace"] == str(workspace.resolve())


def test_bad_flag_is_a_usage_error(workspace: Path) -> None:
    done = localagent("run", "x", "--model", "noop", "--max-steps", "0", "-w", str(workspace))
    assert done.returncode == 2 and "--max-steps" in done.stderr


def test_real_model_end_to_end_json_mode(workspace: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    done = localagent(
        "run",
        "Use the read_file tool to read README.md.",
        "--workspace",
        str(workspace),
        "--tool-mode",
        "json",
        "--max-steps",
        "2",
        "--max-tokens",
        "48",
        "--trace",
        str(trace),
        "--offline",
        "--json",
    )
    assert done.returncode in (0, 1), done.stderr
    result = json.loads(done.stdout)
    assert result["model"] == "smollm2-135m" and result["tool_mode"] == "json"
    assert result["engine"]["engine"] == "llama.cpp"
    assert result["stop_reason"] in {"answer", "max_steps", "repeated_invalid_call", "repeated_failing_call"}
    assert (done.returncode == 0) == (result["stop_reason"] == "answer")
    assert result["usage"]["input_tokens"] > 0 and result["usage"]["output_tokens"] > 0
    assert result["prompt_tokens_evaluated"] > 0
    assert result["timings"]["model_s"] > 0 and result["timings"]["load_s"] > 0
    assert result["memory"]["peak_rss_bytes"] >= result["memory"]["peak_anon_bytes"] > 0

    records = [json.loads(line) for line in trace.read_text().splitlines()]
    header, steps, final = records[0], records[1:-1], records[-1]
    assert header["kind"] == "header" and header["model"] == "smollm2-135m" and header["tool_mode"] == "json"
    assert header["prompt"].startswith("Use the read_file tool") and header["workspace"] == str(workspace.resolve())
    assert header["engine"]["n_ctx"] > 0 and header["localagent_version"]
    assert final["kind"] == "final" and final["stop_reason"] == result["stop_reason"]
    assert final["usage"] == result["usage"]
    models = [r for r in steps if r["kind"] == "model"]
    assert len(models) == final["step"] and all(r["reply"]["usage"]["input_tokens"] > 0 for r in models)
    # the conversation grows append-only, so later calls evaluate only the new tokens
    for r in models[1:]:
        assert r["reply"]["timings"]["prompt_tokens_evaluated"] < r["reply"]["usage"]["input_tokens"]
    # json mode: the 135M model makes a valid call of a reading tool (what it reads is its call)
    tools = [r for r in steps if r["kind"] == "tool"]
    reading = {"read_file", "list_directory", "search_files", "get_file_info"}
    assert any(r["call"]["name"] in reading and not r["invalid"] for r in tools), f"no valid call in {tools}"
    assert all(r["result_chars"] > 0 and r["duration_s"] > 0 for r in tools)
    # each call is timed, and the calls' times are the run's tool time, a part of its wall time
    assert sum(r["duration_s"] for r in tools) == pytest.approx(result["timings"]["tool_s"], abs=1e-6)
    assert 0 < result["timings"]["tool_s"] < result["timings"]["wall_s"]


def test_progress_shows_tokens_and_tool_calls_on_a_terminal(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from localagent.agent import Agent
    from localagent.cli.run import Progress
    from localagent.engines.scripted import OracleModel

    oracle = OracleModel(
        [
            {"tool": "read_file", "arguments": {"path": "README.md"}},
            {"tool": "write_file", "arguments": {"path": "notes.txt", "content": "banana " * 40}},
            {"tool": "read_file", "arguments": {"path": "missing.md"}},
            {"answer": "banana"},
        ]
    )
    progress = Progress(enabled=True)
    for step in Agent(oracle, workspace).run("x", on_token=progress.token):
        progress.step(step)
    err = capsys.readouterr().err
    assert "→ read_file(path='README.md')" in err and "3 lines, 35 chars" in err
    assert "→ write_file(path='notes.txt', content='banana banana" in err and "...'" in err  # long value cut
    assert "✗ read_file(path='missing.md')" in err and "missing.md does not exist" in err
    streamed, last = err.splitlines()[-2:]
    assert streamed == "banana" and last.startswith("step 4: 0 tokens in, 0 out")  # tokens, then the step

    Progress(enabled=False).step(step)
    assert capsys.readouterr().err == ""


def test_run_a_hybrid_thinking_model_from_a_path(workspace: Path) -> None:
    """A Qwen3.5-architecture GGUF (tiny, random weights, real template) given by path, native
    tool calls, thinking on: the run ends cleanly whatever the random model writes, and the
    result says how the model remembers and what it was told."""
    import archmodels

    path = archmodels.build("qwen35")
    done = localagent(
        "run", "Read README.md.", "--model", str(path), "--workspace", str(workspace),
        "--tool-mode", "native", "--think", "--max-steps", "2", "--max-tokens", "24", "--offline", "--json",
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads(done.stdout)
    engine = result["engine"]
    assert engine["think"] is True and engine["memory"] == "hybrid" and engine["tool_mode"] == "native"
    assert (
        engine["checkpoints"]["count"] >= 1 and engine["checkpoints"]["bytes"] <= engine["checkpoints"]["budget_bytes"]
    )
    assert result["stop_reason"] in {"answer", "max_steps", "unfinished_thinking", "repeated_invalid_call"}
    if result["stop_reason"] == "unfinished_thinking":
        assert result["usage"]["reasoning_tokens"] > 0 and "--no-think" in result["hint"]
