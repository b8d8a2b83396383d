"""The ChatModel protocol every engine implements: llama.cpp, hosted, oracle, noop.

The agent loop and the bench only ever see this, so they never branch on the kind of model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from localagent.records import Message, Reply, ToolSpec

ToolMode = Literal["auto", "json", "native"]


@dataclass(frozen=True)
class EngineConfig:
    """How to open a model. One object instead of a long parameter list."""

    tool_mode: ToolMode = "auto"
    n_ctx: int | None = None  # None: the catalog's context length, capped (engine decides)
    n_threads: int | None = None  # None: physical cores
    cpu_only: bool = False  # never offload layers to a GPU
    seed: int = 0
    offline: bool = False  # never touch the network (also settings.offline())
    timeout_s: float = 120.0  # hosted: per request
    max_retries: int = 3  # hosted: on 429 / 5xx
    # think before answering: None follows the model (the catalog's default, else the
    # template's); True/False is passed to templates that take `enable_thinking`
    think: bool | None = None
    # llama.cpp: memory for state checkpoints of recurrent / hybrid / sliding-window models
    checkpoint_mib: float = 256.0
    # llama.cpp, native mode: a GBNF grammar every reply must follow (json mode has its own)
    grammar: str | None = None
    # llama.cpp: stop a reply that keeps writing the same run of tokens (engines/loops.py)
    # instead of letting it run to max_tokens; its finish reason is then `repetition`
    stop_loops: bool = True
    # llama.cpp, native mode: once the model opens a tool call, the rest of the call is held to
    # the tools' schemas by a lazy grammar (engines/lazy.py), so a started call is well-formed
    constrain_calls: bool = True


@runtime_checkable
class ChatModel(Protocol):
    name: str  # the alias the user asked for
    load_s: float  # seconds spent loading (0 for hosted)

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
        """One model call. Raises ContextOverflowError, HostedAPIError, EngineError.

        `on_token` gets each piece of text as it is generated, and "" now and then while the
        engine waits with nothing to show (a hosted stream of keep-alives): the caller's
        deadline check runs there, and an exception it raises ends the call."""
        ...

    def describe(self) -> dict[str, Any]:
        """Engine settings for traces and results: engine, tool_mode, n_ctx, threads, gpu..."""
        ...

    def close(self) -> None: ...
