"""Scripted models: real ChatModels that need no weights, selected by name.

`oracle` replays a task's reference solution through the real loop and tools (a suite is
valid when it passes every task); `noop` answers without looking (it must fail every task);
`ReplayModel` replays any list of replies, engine errors included (a recorded run, a
malformed call), so the whole pipeline runs for real without a model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, Union

from localagent.engines.base import EngineInfo
from localagent.errors import EngineError
from localagent.records import ArgumentChoice, Message, Reply, Timings, ToolCall, ToolSpec

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
        choices: Sequence[ArgumentChoice] = (),
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

    def describe(self) -> EngineInfo:
        return EngineInfo(engine="scripted", model=self.name, tool_mode=None, replies=len(self.replies))

    def close(self) -> None:
        pass


class NoopModel(ReplayModel):
    """Answers "I don't know." to everything, never calling a tool."""

    def __init__(self) -> None:
        super().__init__([], name="noop", then=NOOP_ANSWER)


class ScriptStep(Protocol):
    """One step the oracle replays: a tool call (`tool` with `arguments`) or the final
    `answer`. The bench's tasks.SolutionStep is one, validated when its task file loaded, so
    it is replayed as it is."""

    @property
    def tool(self) -> str | None: ...

    @property
    def arguments(self) -> Mapping[str, Any]: ...

    @property
    def answer(self) -> str | None: ...


_STEP_KEYS = frozenset({"tool", "arguments", "answer"})


def _written_step(number: int, step: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any], str | None]:
    """A step written as a dict ({"tool", "arguments"} or {"answer"}), read as it is: a script
    may call a tool that does not exist, or answer early, on purpose. A dict that is neither a
    call nor an answer, or holds a misspelt key, is the caller's bug, refused as such."""
    unknown = sorted(set(step) - _STEP_KEYS)
    if unknown:
        raise ValueError(
            f"step {number}: unknown key(s) {', '.join(unknown)}; a step is {{tool, arguments}} or {{answer}}"
        )
    if ("tool" in step) == ("answer" in step):
        raise ValueError(f"step {number}: needs exactly one of 'tool' or 'answer'")
    return step.get("tool"), step.get("arguments", {}), step.get("answer")


def _solution_reply(number: int, step: ScriptStep | Mapping[str, Any]) -> Reply:
    if isinstance(step, Mapping):
        tool, arguments, answer = _written_step(number, step)
    else:
        tool, arguments, answer = step.tool, step.arguments, step.answer
    if answer is not None:
        return Reply(text=str(answer))
    assert tool is not None  # a step without an answer is a call: SolutionStep and _written_step see to it
    call = ToolCall(name=tool, arguments=dict(arguments), id=f"oracle-{number}")
    return Reply(text="", tool_calls=(call,), finish_reason="tool_calls")


class OracleModel(ReplayModel):
    """Replays a task's reference solution, one step per chat() call: the bench's validated
    solution steps as they are, or steps a test writes as dicts."""

    def __init__(self, solution: Sequence[ScriptStep | Mapping[str, Any]]):
        super().__init__([_solution_reply(n, step) for n, step in enumerate(solution, 1)], name="oracle")
