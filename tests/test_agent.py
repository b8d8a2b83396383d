"""The agent loop with scripted models and the real tools in a temp workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localagent.agent import REPEAT_LIMIT, SYSTEM_PROMPT, Agent, AgentConfig
from localagent.engines.base import ChatModel
from localagent.engines.scripted import NOOP_ANSWER, NoopModel, OracleModel, ReplayModel
from localagent.errors import ContextOverflowError, EngineError, HostedAPIError
from localagent.records import FinalStep, Message, ModelStep, Reply, Timings, ToolCall, ToolStep, Usage
from localagent.trace import TraceWriter


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("id,amount\n1,10\n2,5\n")
    (tmp_path / "data" / "b.csv").write_text("id,amount\n3,27\n")
    return tmp_path


SOLUTION = [
    {"tool": "read_file", "arguments": {"path": "data/a.csv"}},
    {"tool": "read_file", "arguments": {"path": "data/b.csv"}},
    {"tool": "write_file", "arguments": {"path": "out/total.txt", "content": "42"}},
    {"answer": "The total is 42."},
]


def tool_reply(name: str, tokens: int = 10, **arguments) -> Reply:
    return Reply(
        text="",
        tool_calls=(ToolCall(name=name, arguments=arguments),),
        usage=Usage(input_tokens=100, cached_input_tokens=80, output_tokens=tokens),
        timings=Timings(total_s=0.0, prompt_tokens_evaluated=20),
        finish_reason="tool_calls",
    )


def test_scripted_models_are_chat_models() -> None:
    assert isinstance(NoopModel(), ChatModel)
    assert isinstance(OracleModel(SOLUTION), ChatModel)


def test_oracle_solves_the_task_and_steps_come_in_order(workspace: Path) -> None:
    steps = list(Agent(OracleModel(SOLUTION), workspace).run("sum the amounts"))
    kinds = [(s.kind, s.step) for s in steps]
    assert kinds == [
        ("model", 1),
        ("tool", 1),
        ("model", 2),
        ("tool", 2),
        ("model", 3),
        ("tool", 3),
        ("model", 4),
        ("final", 4),
    ]
    final = steps[-1]
    assert isinstance(final, FinalStep)
    assert final.stop_reason == "answer" and final.answer == "The total is 42."
    assert final.tool_calls == 3 and final.invalid_tool_calls == 0 and final.error is None
    assert (workspace / "out" / "total.txt").read_text() == "42"
    tool_steps = [s for s in steps if isinstance(s, ToolStep)]
    assert "1,10" in tool_steps[0].result and "3,27" in tool_steps[1].result
    elapsed = [s.elapsed_s for s in steps if not isinstance(s, FinalStep)]
    assert elapsed == sorted(elapsed)
    assert final.wall_s >= final.model_s + final.tool_s


def test_noop_answers_without_tools(workspace: Path) -> None:
    tokens: list[str] = []
    steps = list(Agent(NoopModel(), workspace).run("anything", on_token=tokens.append))
    assert [s.kind for s in steps] == ["model", "final"]
    assert steps[-1].answer == NOOP_ANSWER and steps[-1].tool_calls == 0
    assert tokens == [NOOP_ANSWER]


def test_conversation_only_grows_and_system_prompt_is_stable(workspace: Path) -> None:
    model = OracleModel(SOLUTION)
    list(Agent(model, workspace).run("sum the amounts"))
    assert len(model.seen) == 4
    for earlier, later in zip(model.seen, model.seen[1:], strict=False):
        assert later[: len(earlier)] == earlier  # append-only: the prefix never changes
        assert len(later) == len(earlier) + 2  # one assistant message, one tool result
    first = model.seen[0]
    assert first[0].role == "system" and first[0].content == SYSTEM_PROMPT
    assert first[1].role == "user" and first[1].content == "sum the amounts"
    assistant, tool = model.seen[1][2], model.seen[1][3]
    assert assistant.role == "assistant" and assistant.tool_calls[0].name == "read_file"
    assert tool.role == "tool" and tool.name == "read_file" and tool.tool_call_id == assistant.tool_calls[0].id
    assert "1,10" in tool.content


def test_calls_without_ids_get_them(workspace: Path) -> None:
    model = ReplayModel([tool_reply("list_directory"), Reply(text="done")])
    steps = list(Agent(model, workspace).run("look"))
    call = steps[0].reply.tool_calls[0]
    assert call.id == "call_1_1"
    assert model.seen[1][3].tool_call_id == "call_1_1"


def test_invalid_calls_are_counted_and_fed_back(workspace: Path) -> None:
    model = ReplayModel(
        [
            tool_reply("delete_everything", path="."),
            Reply(
                text="", tool_calls=(ToolCall(name="read_file", error="malformed JSON in the tool call", raw="{path:"),)
            ),
            tool_reply("read_file", file="data/a.csv"),
            tool_reply("read_file", path="data/a.csv"),
            Reply(text="15"),
        ]
    )
    steps = list(Agent(model, workspace).run("sum a.csv"))
    tool_steps = [s for s in steps if isinstance(s, ToolStep)]
    assert [s.invalid for s in tool_steps] == [True, True, True, False]
    assert "unknown tool 'delete_everything'" in tool_steps[0].error
    assert tool_steps[1].error == "malformed JSON in the tool call"
    assert "unknown argument 'file'" in tool_steps[2].error
    final = steps[-1]
    assert final.stop_reason == "answer" and final.answer == "15"
    assert final.invalid_tool_calls == 3 and final.tool_calls == 4
    # the model read each error as its tool result
    fed_back = [m.content for m in model.seen[-1] if m.role == "tool"]
    assert fed_back[0].startswith("error: unknown tool") and fed_back[1] == "error: malformed JSON in the tool call"
    assert "1,10" in fed_back[3]


def test_usage_and_evaluated_tokens_are_summed(workspace: Path) -> None:
    model = ReplayModel(
        [tool_reply("list_directory", tokens=7), tool_reply("list_directory", tokens=5), Reply(text="ok")]
    )
    final = list(Agent(model, workspace).run("look"))[-1]
    assert final.usage == Usage(input_tokens=200, cached_input_tokens=160, output_tokens=12)
    assert final.prompt_tokens_evaluated == 40


def test_tool_failure_is_a_result_not_an_exception(workspace: Path) -> None:
    oracle = OracleModel([{"tool": "read_file", "arguments": {"path": "nope.txt"}}, {"answer": "gave up"}])
    steps = list(Agent(oracle, workspace).run("read"))
    tool = steps[1]
    assert isinstance(tool, ToolStep) and not tool.invalid and "does not exist" in tool.error
    assert tool.result == f"error: {tool.error}"
    assert steps[-1].stop_reason == "answer" and steps[-1].invalid_tool_calls == 0


def test_repeated_failing_call_stops_the_run(workspace: Path) -> None:
    failing = {"tool": "read_file", "arguments": {"path": "nope.txt"}}
    oracle = OracleModel([failing, {"tool": "list_directory"}, failing, failing, failing, {"answer": "x"}])
    steps = list(Agent(oracle, workspace).run("read"))
    final = steps[-1]
    assert final.stop_reason == "repeated_failing_call" and final.answer == ""
    assert final.step == 4 and final.tool_calls == 4
    assert "does not exist" in final.error


def test_repeated_invalid_call_stops_with_its_own_reason(workspace: Path) -> None:
    oracle = OracleModel([{"tool": "rm", "arguments": {"path": "x"}}] * 5)
    final = list(Agent(oracle, workspace).run("x"))[-1]
    assert final.stop_reason == "repeated_invalid_call" and final.step == REPEAT_LIMIT
    assert final.invalid_tool_calls == REPEAT_LIMIT


def test_max_steps(workspace: Path) -> None:
    oracle = OracleModel([{"tool": "list_directory", "arguments": {"path": "data"}}] * 10)
    steps = list(Agent(oracle, workspace, AgentConfig(max_steps=3)).run("loop"))
    assert [s.kind for s in steps].count("model") == 3
    final = steps[-1]
    assert final.stop_reason == "max_steps" and final.step == 3 and final.tool_calls == 3


def test_time_limit(workspace: Path) -> None:
    steps = list(Agent(NoopModel(), workspace, AgentConfig(time_limit_s=0)).run("x"))
    assert [s.kind for s in steps] == ["final"]
    assert steps[0].stop_reason == "timeout" and steps[0].step == 0


@pytest.mark.parametrize(
    "error, reason",
    [
        (
            ContextOverflowError("the conversation needs 9000 tokens; the context holds 8192", hint="raise n_ctx"),
            "context_overflow",
        ),
        (HostedAPIError("429 after 3 retries"), "api_error"),
        (EngineError("llama_decode returned -3"), "engine_error"),
    ],
)
def test_engine_errors_end_the_run_with_a_reason(workspace: Path, error: EngineError, reason: str) -> None:
    model = ReplayModel([tool_reply("list_directory"), error])
    steps = list(Agent(model, workspace).run("x"))
    assert [s.kind for s in steps] == ["model", "tool", "final"]
    final = steps[-1]
    assert final.stop_reason == reason and final.error == str(error) and final.step == 2
    assert final.hint == error.hint
    assert final.usage.input_tokens == 100  # what the first call used still counts


def test_oracle_rejects_a_malformed_solution() -> None:
    # the engine layer raises its own error; a task file's solution is checked at load
    # (test_tasks: answer-not-last and the rest)
    with pytest.raises(ValueError, match="step 2: needs exactly one of 'tool' or 'answer'"):
        OracleModel([{"tool": "list_directory"}, {"arguments": {}}])
    with pytest.raises(ValueError, match="unknown key"):
        OracleModel([{"tool": "read_file", "args": {}}])


def test_trace_jsonl_parses(workspace: Path, tmp_path: Path) -> None:
    path = tmp_path / "traces" / "run.jsonl"
    header = {"model": "oracle", "prompt": "sum"}
    with TraceWriter(path, header) as trace:
        for step in Agent(OracleModel(SOLUTION), workspace).run("sum"):
            trace.write(step)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[0]["kind"] == "header" and records[0]["model"] == "oracle" and records[0]["trace_version"] == 1
    assert [r["kind"] for r in records[1:]] == ["model", "tool"] * 3 + ["model", "final"]
    tool = records[2]
    assert tool["call"]["name"] == "read_file" and tool["call"]["arguments"] == {"path": "data/a.csv"}
    assert tool["result_chars"] == len("id,amount\n1,10\n2,5\n") and tool["error"] is None
    assert "duration_s" in tool
    model = records[1]
    assert set(model["reply"]["usage"]) >= {"input_tokens", "output_tokens"}
    assert "prompt_tokens_evaluated" in model["reply"]["timings"]
    assert records[-1]["stop_reason"] == "answer"


def test_trace_keeps_steps_written_before_a_crash(workspace: Path, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        with TraceWriter(path, {"model": "oracle"}) as trace:
            for step in Agent(OracleModel(SOLUTION), workspace).run("sum"):
                trace.write(step)
                if isinstance(step, ModelStep) and step.step == 2:
                    raise KeyboardInterrupt
    kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
    assert kinds == ["header", "model", "tool", "model"]


def test_a_repeated_successful_call_gets_a_note_and_the_same_result(workspace: Path) -> None:
    model = ReplayModel(
        [tool_reply("read_file", path="data/a.csv"), tool_reply("read_file", path="data/a.csv"), Reply(text="done")]
    )
    steps = list(Agent(model, workspace).run("read it"))
    first, second = [s for s in steps if isinstance(s, ToolStep)]
    assert "made this exact call" not in first.result
    assert second.result.startswith(first.result)
    assert "made this exact call at step 1" in second.result
    assert steps[-1].stop_reason == "answer"


def test_time_limit_cuts_a_model_call_in_progress(workspace: Path, bundled_gguf: Path) -> None:
    from localagent.engines.base import EngineConfig
    from localagent.engines.llamacpp import LlamaCppModel

    model = LlamaCppModel(bundled_gguf, EngineConfig(n_ctx=2048, tool_mode="json"))
    try:
        config = AgentConfig(time_limit_s=0.05, max_tokens=1500)
        steps = list(Agent(model, workspace, config).run("Write a very long story about every file here."))
        # the model was called (step 1) and stopped inside that call, not before it
        assert [s.kind for s in steps] == ["final"]
        assert steps[0].stop_reason == "timeout" and steps[0].step == 1
        assert "during a model call" in steps[0].error
        # the engine is still usable after the cut
        reply = model.chat([Message("user", "Say hi.")], [], max_tokens=4)
        assert reply.usage.output_tokens > 0
    finally:
        model.close()


def test_a_tool_call_stuck_past_the_time_limit_stops_the_run_with_timeout(workspace: Path) -> None:
    """A tool that blocks where no check reaches (a hung mount, a custom tool on a socket) is
    cut off at the run's deadline; the run ends `timeout` and the caller gets control back."""
    import threading
    import time

    from pydantic import BaseModel

    from localagent.tools import TOOLS, Tool

    release = threading.Event()

    class NoArgs(BaseModel):
        pass

    def stuck(ws, args) -> str:
        release.wait(30)
        return "too late"

    tools = (*TOOLS, Tool("wait_forever", "Blocks.", NoArgs, stuck))
    model = ReplayModel([tool_reply("wait_forever")], then="never reached")
    t0 = time.perf_counter()
    try:
        steps = list(Agent(model, workspace, AgentConfig(time_limit_s=1.0), tools=tools).run("go"))
    finally:
        release.set()
    took = time.perf_counter() - t0
    tool_step, final = steps[-2], steps[-1]
    assert isinstance(tool_step, ToolStep) and tool_step.cut_off
    assert "time limit of 1 s passed during this call" in tool_step.result
    assert isinstance(final, FinalStep) and final.stop_reason == "timeout"
    assert "during a call of wait_forever" in (final.error or "")
    assert took < 10  # the 30 s wait was not waited for


def test_a_tool_error_raised_on_the_worker_thread_reaches_the_model(workspace: Path) -> None:
    steps = list(Agent(ReplayModel([tool_reply("read_file", path="missing.txt")], then="done"), workspace).run("go"))
    tool_step = next(s for s in steps if isinstance(s, ToolStep))
    assert tool_step.error and not tool_step.cut_off and "missing.txt" in tool_step.result
    assert steps[-1].stop_reason == "answer"
