"""Text that cannot be encoded, and the run's other odd inputs.

Lone surrogates reach the loop two ways: a model's JSON escape ("\\ud800" in an answer or a
tool call) and bytes that are not UTF-8 (a file name, a prompt or a workspace path from argv),
which Python decodes with surrogateescape. Each must come out as text (escaped), never as a
UnicodeEncodeError in the tokenizer, an HTTP request, the trace or print(). Also here: time
limits too large for a thread wait, trace files that cannot be written, and the spellings of
LOCALAGENT_OFFLINE. The real loop, tools, hosted engine (against a scripted loopback server)
and console script throughout.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli_run import SCRIPT, localagent, workspace  # noqa: F401 (fixture)
from test_engine_hosted import FakeAPI, chunk, sse

from localagent import settings
from localagent.agent import Agent, AgentConfig
from localagent.engines.scripted import ReplayModel
from localagent.errors import ConfigError
from localagent.records import FinalStep, Message, Reply, ToolCall, ToolStep

USAGE = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
LATIN1_NAME = b"caf\xe9.txt"  # a name from an old zip archive: not UTF-8
SHOWN = "caf\\xe9.txt"  # how the model is shown it


@pytest.fixture
def evil(localagent_home: Path) -> Iterator[FakeAPI]:
    """A scripted OpenAI-compatible server, registered as the hosted model `evil`."""
    server = FakeAPI()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    (localagent_home / "models.toml").write_text(
        f'[hosted.evil]\nprovider = "local"\nmodel = "m"\nbase_url = "{server.url}"\n'
    )
    yield server
    server.shutdown()
    server.server_close()


def answer_stream(text: str) -> bytes:
    # json.dumps writes "\ud800" as the escape a real provider sends
    return sse(chunk({"role": "assistant", "content": text}), chunk({}, finish="stop"), chunk(usage=USAGE))


def call_stream(name: str, **arguments: Any) -> bytes:
    function = {"name": name, "arguments": json.dumps(arguments)}
    delta = {
        "role": "assistant",
        "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": function}],
    }
    return sse(chunk(delta), chunk({}, finish="tool_calls"), chunk(usage=USAGE))


def tool_reply(name: str, **arguments: Any) -> Reply:
    return Reply(text="", tool_calls=(ToolCall(name, arguments),), finish_reason="tool_calls")


def encodable(messages: tuple[Message, ...]) -> bool:
    """Whether a conversation can be tokenized or sent: every string in it is UTF-8 text."""
    try:
        json.dumps(
            [m.__dict__ | {"tool_calls": [c.__dict__ for c in m.tool_calls]} for m in messages], ensure_ascii=False
        ).encode()
    except UnicodeEncodeError:
        return False
    return True


def trace_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]  # strict UTF-8


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr and "UnicodeEncodeError" not in done.stderr, done.stderr


# --- F01: a lone surrogate in the model's answer ---


def test_an_answer_holding_a_lone_surrogate_is_printed_and_traced_escaped(
    evil: FakeAPI, workspace: Path, tmp_path: Path
) -> None:
    evil.respond(200, answer_stream("the answer is \ud800 here"))
    trace = tmp_path / "run.trace.jsonl"
    done = localagent("run", "hi", "--model", "evil", "-w", str(workspace), "--trace", str(trace), timeout=60)
    no_traceback(done)
    assert done.returncode == 0 and done.stdout == "the answer is \\ud800 here\n"
    final = trace_records(trace)[-1]
    assert final["kind"] == "final" and final["answer"] == "the answer is \\ud800 here"
    done = localagent("run", "hi", "--model", "evil", "-w", str(workspace), "--json", timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout)["answer"] == "the answer is \\ud800 here"


BENCH_TASK = """
id = "say-hello"
title = "Say hello"
tier = 1
prompt = "Say hello."

[[checks]]
kind = "answer_regex"
pattern = 'answer'

[[solution]]
answer = "the answer"
"""


def test_bench_keeps_an_answer_holding_a_lone_surrogate(evil: FakeAPI, tmp_path: Path) -> None:
    # the trial's trace write raised, and the answer was lost as a runtime_error
    evil.respond(200, answer_stream("the answer is \ud800 here"))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "say-hello.toml").write_text(BENCH_TASK)
    done = localagent("bench", "--model", "noop", "--baseline", "evil", "--tasks", str(tasks), "--json", timeout=120)
    no_traceback(done)
    assert done.returncode == 0, done.stderr
    (trial,) = [t for t in json.loads(done.stdout)["trials"] if t["model"] == "evil"]
    assert trial["stop_reason"] == "answer" and trial["success"] is True, trial


# --- F02: a lone surrogate in a tool call's path ---


def test_a_tool_call_path_holding_a_lone_surrogate_is_a_tool_error_the_model_reads(workspace: Path) -> None:
    model = ReplayModel(
        [tool_reply("read_file", path="\ud800.txt"), tool_reply("write_file", path="caf\udce9.txt", content="x")],
        then="done",
    )
    steps = list(Agent(model, workspace).run("go"))
    tools = [s for s in steps if isinstance(s, ToolStep)]
    assert [("is not valid text" in (s.error or "")) for s in tools] == [True, True]
    assert steps[-1].stop_reason == "answer" and steps[-1].answer == "done"
    assert all(encodable(seen) for seen in model.seen)
    assert "path '\\ud800.txt' is not valid text" in model.seen[1][-1].content
    assert sorted(os.listdir(workspace)) == ["README.md"]


def test_a_hosted_tool_call_with_a_lone_surrogate_goes_back_to_the_model(evil: FakeAPI, workspace: Path) -> None:
    # the next request carried the call's arguments and the error naming the path: both were
    # encoded as UTF-8 by the HTTP client, which raised
    evil.respond(200, call_stream("read_file", path="\ud800"))
    evil.respond(200, answer_stream("gave up"))
    done = localagent("run", "hi", "--model", "evil", "-w", str(workspace), timeout=60)
    no_traceback(done)
    assert done.returncode == 0 and done.stdout == "gave up\n"
    tool_message = evil.requests[1]["body"]["messages"][-1]
    assert tool_message["role"] == "tool" and "is not valid text" in tool_message["content"]


# --- F03: a workspace file whose name is not UTF-8 ---


def test_a_file_name_that_is_not_utf8_is_shown_escaped_and_never_breaks_the_prompt(workspace: Path) -> None:
    (workspace / os.fsdecode(LATIN1_NAME)).write_bytes(b"x marks the spot\n")
    model = ReplayModel(
        [
            tool_reply("list_directory", path="."),
            tool_reply("search_files", pattern="marks"),
            tool_reply("read_file", path=SHOWN),  # the escaped form need not open the file
            tool_reply("get_file_info", path="caf"),  # a near miss: the suggestion names it escaped
        ],
        then="done",
    )
    steps = list(Agent(model, workspace).run("list the files"))
    listing, search, read, info = [s for s in steps if isinstance(s, ToolStep)]
    assert listing.result.splitlines() == ["README.md", SHOWN]
    assert search.result == f"{SHOWN}:1:x marks the spot"
    assert read.error is not None and info.error is not None
    assert steps[-1].stop_reason == "answer"
    assert all(encodable(seen) for seen in model.seen)


def test_a_hosted_model_lists_a_file_name_that_is_not_utf8(evil: FakeAPI, workspace: Path) -> None:
    (workspace / os.fsdecode(LATIN1_NAME)).write_bytes(b"x\n")
    evil.respond(200, call_stream("list_directory", path="."))
    evil.respond(200, answer_stream("two files"))
    done = localagent("run", "list", "--model", "evil", "-w", str(workspace), timeout=60)
    no_traceback(done)
    assert done.returncode == 0 and done.stdout == "two files\n"
    assert evil.requests[1]["body"]["messages"][-1]["content"] == f"README.md\n{SHOWN}"


# --- F04 / F05: argv bytes that are not UTF-8 ---


def test_a_prompt_byte_that_is_not_utf8_reaches_the_model_escaped(
    evil: FakeAPI, workspace: Path, tmp_path: Path
) -> None:
    evil.respond(200, answer_stream("hello"))
    trace = tmp_path / "t.jsonl"
    # "\udcff" is how Python hands over the argv byte 0xff; subprocess writes it back as that byte
    done = localagent("run", "hi \udcff", "--model", "evil", "-w", str(workspace), "--trace", str(trace), timeout=60)
    no_traceback(done)
    assert done.returncode == 0 and done.stdout == "hello\n"
    assert evil.requests[0]["body"]["messages"][-1]["content"] == "hi \\xff"
    assert trace_records(trace)[0]["prompt"] == "hi \\xff"


def test_a_prompt_byte_that_is_not_utf8_is_tokenized_by_the_bundled_model(workspace: Path) -> None:
    done = localagent(
        "run", "hi \udcff", "--model", "smollm2-135m", "-w", str(workspace), "--max-steps", "1", "--max-tokens", "8"
    )
    no_traceback(done)
    # one step of 8 tokens: an answer, or a stop reason said as error:/hint:
    assert done.returncode == 0 or "error: the run stopped without an answer" in done.stderr


def test_a_workspace_path_that_is_not_utf8_is_traced_escaped(tmp_path: Path) -> None:
    ws = Path(os.fsdecode(os.fsencode(tmp_path) + b"/ws_\xff"))
    ws.mkdir()
    trace = tmp_path / "t.jsonl"
    done = localagent("run", "hi", "--model", "noop", "-w", str(ws), "--trace", str(trace), timeout=60)
    no_traceback(done)
    assert done.returncode == 0
    assert trace_records(trace)[0]["workspace"].endswith("/ws_\\xff")


# --- F09: a time limit too large for a thread wait ---


@pytest.mark.parametrize("limit", [1e10, 1e308, float("inf")])
def test_a_huge_time_limit_still_runs_tool_calls(workspace: Path, limit: float) -> None:
    # Thread.join(1e10) raised OverflowError at the first tool call
    model = ReplayModel([tool_reply("list_directory", path=".")], then="done")
    steps = list(Agent(model, workspace, AgentConfig(time_limit_s=limit)).run("look"))
    tool = next(s for s in steps if isinstance(s, ToolStep))
    assert tool.error is None and tool.result == "README.md"
    assert isinstance(steps[-1], FinalStep) and steps[-1].stop_reason == "answer"


def test_a_huge_time_limit_on_the_command_line_runs(evil: FakeAPI, workspace: Path) -> None:
    evil.respond(200, call_stream("read_file", path="README.md"))
    evil.respond(200, answer_stream("banana"))
    done = localagent("run", "hi", "--model", "evil", "-w", str(workspace), "--time-limit", "1e10", timeout=60)
    no_traceback(done)
    assert done.returncode == 0 and done.stdout == "banana\n"


@pytest.mark.parametrize("limit", ["inf", "1e400", "nan"])
def test_a_time_limit_that_is_not_finite_is_a_usage_error(workspace: Path, limit: str) -> None:
    done = localagent("run", "hi", "--model", "noop", "-w", str(workspace), "--time-limit", limit, timeout=60)
    no_traceback(done)
    assert done.returncode == 2 and "--time-limit" in done.stderr and done.stdout == ""


# --- F16: a trace file that cannot be written ---


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_trace_on_a_full_device_is_an_error_naming_it(workspace: Path) -> None:
    done = localagent("run", "hi", "--model", "noop", "-w", str(workspace), "--trace", "/dev/full", timeout=60)
    no_traceback(done)
    assert done.returncode == 1 and done.stdout == ""
    assert "error: cannot write the trace file /dev/full: No space left on device" in done.stderr
    assert "hint: " in done.stderr


def test_an_unwritable_trace_is_refused_before_the_model_is_looked_up(workspace: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    done = localagent(
        "run", "hi", "--model", "no-such-model", "-w", str(workspace), "--trace", str(blocker / "t.jsonl"), timeout=60
    )
    no_traceback(done)
    assert done.returncode == 1 and f"error: cannot write the trace file {blocker / 't.jsonl'}" in done.stderr
    assert "unknown model" not in done.stderr


def test_a_run_that_fails_before_its_header_leaves_the_trace_path_as_it_was(workspace: Path, tmp_path: Path) -> None:
    earlier, fresh = tmp_path / "earlier.jsonl", tmp_path / "fresh.jsonl"
    earlier.write_text('{"kind": "header"}\n')
    for trace in (earlier, fresh):
        done = localagent(
            "run", "hi", "--model", "no-such-model", "-w", str(workspace), "--trace", str(trace), timeout=60
        )
        assert done.returncode == 1 and "unknown model" in done.stderr
    assert earlier.read_text() == '{"kind": "header"}\n' and not fresh.exists()


def test_a_trace_that_fills_the_disk_mid_run_stops_with_an_error_naming_it(
    evil: FakeAPI, workspace: Path, tmp_path: Path
) -> None:
    (workspace / "README.md").write_text(("banana " * 150 + "\n") * 10)  # a tool result over the file size limit
    evil.respond(200, call_stream("read_file", path="README.md"))
    evil.respond(200, answer_stream("banana"))
    trace = tmp_path / "t.jsonl"
    limit = 8192  # the header fits, the read_file step does not

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [str(SCRIPT), "run", "hi", "--model", "evil", "-w", str(workspace), "--trace", str(trace)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        preexec_fn=small_files,
    )
    no_traceback(done)
    assert done.returncode == 1 and f"error: cannot write the trace file {trace}: File too large" in done.stderr
    assert json.loads(trace.read_bytes().split(b"\n", 1)[0])["kind"] == "header"


# --- F37: the spellings of LOCALAGENT_OFFLINE ---


@pytest.mark.parametrize(
    ("value", "offline"),
    [
        ("1", True),
        ("1 ", True),
        (" TRUE", True),
        ("Yes", True),
        ("on\n", True),
        ("0", False),
        ("false", False),
        (" Off ", False),
        ("", False),
        ("no", False),
    ],
)
def test_offline_spellings_are_read_trimmed_and_in_any_case(
    monkeypatch: pytest.MonkeyPatch, value: str, offline: bool
) -> None:
    monkeypatch.setenv("LOCALAGENT_OFFLINE", value)
    assert settings.offline() is offline


def test_an_unknown_offline_value_is_an_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALAGENT_OFFLINE", "garbage")
    with pytest.raises(ConfigError, match="LOCALAGENT_OFFLINE='garbage'") as caught:
        settings.offline()
    assert "LOCALAGENT_OFFLINE" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("value", "expected"), [("1 ", "offline mode is on"), ("garbage", "error: LOCALAGENT_OFFLINE='garbage'")]
)
def test_offline_is_honoured_or_refused_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch, workspace: Path, value: str, expected: str
) -> None:
    monkeypatch.setenv("LOCALAGENT_OFFLINE", value)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a download attempt says so
    done = localagent("run", "hi", "--model", "qwen-tiny", "-w", str(workspace), timeout=60)
    no_traceback(done)
    assert done.returncode == 1 and expected in done.stderr and "cannot reach" not in done.stderr
