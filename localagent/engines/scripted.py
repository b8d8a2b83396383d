"""Scripted models: real ChatModels that need no weights, selected by name.

`oracle` replays a task's reference solution through the real loop and tools (a suite is
valid when it passes every task); `noop` answers without looking (it must fail every task);
`ReplayModel` replays any list of replies, engine errors included (a recorded run, a
malformed call), so the whole pipeline runs for real without a model.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence, Union

from localagent.errors import EngineError, TaskFileError
from localagent.records import Message, Reply, Timings, ToolCall, ToolSpec

NOOP_ANSWER = "I don't know."


class ReplayModel:
    """One scripted reply per chat() call (an EngineError in the list is raised instead);
    past the end it answers `then`. `seen` keeps every conversation it was shown."""

    load_s = 0.0

    def __init__(self, replies: Sequence[Union[Reply, EngineError]], name: str = "replay", then: str = ""):
        self.name = name
        self.replies = list(replies)
        self.then = then
        self.position = 0
        self.seen: list[tuple[Message, ...]] = []

    def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        seed: int | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Reply:
        started = time.perf_counter()
        self.seen.append(tuple(messages))
        if self.position >= len(self.replies):
            reply: Reply | EngineError = Reply(text=self.then)
        else:
            reply = self.replies[self.position]
            self.position += 1
        if isinstance(reply, EngineError):
            raise reply
        if on_token is not None and reply.text:
            on_token(reply.text)
        return Reply(
            text=reply.text,
            tool_calls=reply.tool_calls,
            usage=reply.usage,
            timings=Timings(
                total_s=time.perf_counter() - started,
                prompt_tokens_evaluated=reply.timings.prompt_tokens_evaluated,
            ),
            finish_reason=reply.finish_reason,
            raw=reply.raw or reply.text,
        )

    def describe(self) -> dict[str, Any]:
        return {"engine": "scripted", "model": self.name, "tool_mode": None, "replies": len(self.replies)}

    def close(self) -> None:
        pass


class NoopModel(ReplayModel):
    """Answers "I don't know." to everything, never calling a tool."""

    def __init__(self) -> None:
        super().__init__([], name="noop", then=NOOP_ANSWER)


def _check_solution(solution: list[dict[str, Any]]) -> None:
    for number, step in enumerate(solution, 1):
        where = f"reference solution step {number}"
        if not isinstance(step, dict):
            raise TaskFileError(f"{where}: must be a table with 'tool' or 'answer'")
        if ("tool" in step) == ("answer" in step):
            raise TaskFileError(f"{where}: needs exactly one of 'tool' or 'answer'", hint="see TASK_FORMAT.md")
        extra = set(step) - ({"tool", "arguments"} if "tool" in step else {"answer"})
        if extra:
            raise TaskFileError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        if "tool" in step and not isinstance(step.get("arguments", {}), dict):
            raise TaskFileError(f"{where}: 'arguments' must be a table")
        if "answer" in step and number != len(solution):
            raise TaskFileError(f"{where}: the answer must be the last step")


def _solution_reply(number: int, step: dict[str, Any]) -> Reply:
    if "answer" in step:
        return Reply(text=str(step["answer"]))
    call = ToolCall(name=step["tool"], arguments=dict(step.get("arguments", {})), id=f"oracle-{number}")
    return Reply(text="", tool_calls=(call,), finish_reason="tool_calls")


class OracleModel(ReplayModel):
    """Replays a task's [[solution]] steps ({"tool", "arguments"} or {"answer"}), one per
    chat() call."""

    def __init__(self, solution: list[dict[str, Any]]):
        _check_solution(solution)
        super().__init__([_solution_reply(n, step) for n, step in enumerate(solution, 1)], name="oracle")
