"""The ChatModel protocol every engine implements: llama.cpp, hosted, oracle, noop.

The agent loop and the bench only ever see this, so they never branch on the kind of model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from localagent.records import ArgumentChoice, Message, Reply, ToolSpec

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
    # llama.cpp, free replies: prompt-lookup decoding (engines/lookup.py) drafts tokens the
    # reply copies from the conversation and verifies them in one batch. None: where it was
    # measured to win (lookup.DEFAULT_ON: nowhere yet; on the CPUs here a batch costs what
    # its tokens cost alone, 0.85x on a copy-heavy reply); True turns it on. Never on for
    # memory that cannot be cut back (recurrent, hybrid, sliding-window): rejected drafts
    # must leave it
    lookup: bool | None = None


EngineKind = Literal["llama.cpp", "openai-compatible", "scripted"]

# the keys each kind of engine reports, in the order it reports them: EngineInfo.as_dict()
# writes exactly these, so traces, results.jsonl, results.db, `--json` and MCP replies keep
# the shape older readers (and older stored runs) have
_REPORTED: dict[EngineKind, tuple[str, ...]] = {
    "llama.cpp": (
        "engine",
        "model",
        "path",
        "sha256",
        "tool_mode",
        "n_ctx",
        "n_threads",
        "n_gpu_layers",
        "gpu_offload",
        "load_s",
        "llama_cpp",
        "think",
        "grammar",
        "stop_loops",
        "memory",
        "checkpoints",
    ),
    "openai-compatible": (
        "engine",
        "model",
        "provider",
        "base_url",
        "tool_mode",
        "n_ctx",
        "streaming",
        "max_retries",
        "timeout_s",
        "openai_sdk",
    ),
    "scripted": ("engine", "model", "tool_mode", "replies"),
}


@dataclass(frozen=True)
class EngineInfo:
    """What an engine reports about itself (ChatModel.describe()), for traces and results.

    One record for every engine: a field that one kind of engine does not have is None, and
    `as_dict()` leaves it out, so the stored form is the one each engine always wrote."""

    engine: EngineKind
    model: str  # llama.cpp and scripted: the alias asked for; hosted: the provider's model id
    tool_mode: ToolMode | None  # as resolved (json or native); None: a scripted model
    n_ctx: int | None = None  # the context window (hosted: the catalog's, None if unknown)
    # llama.cpp
    path: str | None = None  # the GGUF file
    sha256: str | None = None  # the catalog's or the store's, None for a bare path
    n_threads: int | None = None
    n_gpu_layers: int | None = None  # -1: every layer offloaded
    gpu_offload: bool | None = None
    load_s: float | None = None  # rounded to ms
    llama_cpp: str | None = None  # llama-cpp-python's version
    think: bool | None = None  # what the template was told; None: nothing (the model's default)
    grammar: str | None = None  # what constrains the replies (LlamaCppModel.grammar_kind)
    stop_loops: bool | None = None
    memory: str | None = None  # attention, sliding-window (N), recurrent or hybrid
    checkpoints: dict[str, int] | None = None  # state checkpoints: count, bytes, saved, ...
    # hosted (OpenAI-compatible)
    provider: str | None = None
    base_url: str | None = None
    streaming: bool | None = None  # False once the endpoint streamed without usage
    max_retries: int | None = None
    timeout_s: float | None = None
    openai_sdk: str | None = None  # the openai package's version
    # scripted
    replies: int | None = None  # replies in the script

    def as_dict(self) -> dict[str, Any]:
        """The stored and printed form: the keys this kind of engine reports, in its order."""
        out = {key: getattr(self, key) for key in _REPORTED[self.engine]}
        if self.checkpoints is not None and "checkpoints" in out:
            out["checkpoints"] = dict(self.checkpoints)  # a copy: the record stays as it was
        return out


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
        choices: Sequence[ArgumentChoice] = (),
    ) -> Reply:
        """One model call. Raises ContextOverflowError, HostedAPIError, EngineError.

        `on_token` gets each piece of text as it is generated, and "" now and then while the
        engine waits with nothing to show (a hosted stream of keep-alives): the caller's
        deadline check runs there, and an exception it raises ends the call.

        `choices` narrow string arguments of the tools for this reply only (the workspace's
        paths, pathchoices.py); an engine that decodes under a grammar holds the reply to them
        and says how many in `Reply.choices_held`, others ignore them. They never change the
        prompt, so the tools' text, and the cached prefix, stay the same from call to call."""
        ...

    def describe(self) -> EngineInfo:
        """Engine settings for traces and results: engine, tool_mode, n_ctx, threads, gpu...
        (EngineInfo.as_dict() is the form stored and printed)"""
        ...

    def close(self) -> None: ...
