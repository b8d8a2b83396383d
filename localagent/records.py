"""Frozen records shared by every layer: messages, tool calls, usage, timings, replies, steps.

Pydantic lives at the edges (files, --json, SQLite, HTTP); inside, these dataclasses are
passed around. `as_dict` turns any of them into plain JSON-able data for traces.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Union

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolSpec:
    """What a model is told about a tool: name, description, JSON schema of the arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for. `error` is set when the call could not be parsed or
    validated (an invalid call): the loop reports it back to the model instead of running it."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    error: str | None = None
    raw: str = ""

    @property
    def valid(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Message:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""  # the tool's name, for role "tool"
    reasoning: str = ""  # an assistant's thinking before `content`, for templates that show it again


@dataclass(frozen=True)
class Usage:
    """Token counts of one call (or a sum). `cached_input_tokens` are part of `input_tokens`;
    `reasoning_tokens` are part of `output_tokens` (never add them twice)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Timings:
    """Client-side timings of one model call.

    ttft_s: request sent -> first generated token. decode_tokens_per_s: (output tokens - 1) /
    (end - first token). prompt_tokens_evaluated: tokens the engine actually ran through the
    model (the cached prefix excluded); for hosted models, input minus cached input.
    """

    total_s: float
    ttft_s: float | None = None
    prompt_tokens_evaluated: int = 0
    prefill_tokens_per_s: float | None = None
    decode_tokens_per_s: float | None = None
    # output tokens a grammar forced (appended in a batch, without sampling); the other
    # output tokens were sampled one by one
    forced_tokens: int = 0
    # prompt-lookup decoding (engines/lookup.py): output tokens proposed from the context and
    # verified in a batch, and how many of them the model kept; 0 where lookup was off
    drafted_tokens: int = 0
    accepted_tokens: int = 0


# unfinished_thinking: the reply opened a think block and never closed it (no answer, no call);
# repetition: the engine stopped a reply that kept writing the same run of tokens (engines/loops.py)
FinishReason = Literal["stop", "length", "tool_calls", "error", "unfinished_thinking", "repetition"]


@dataclass(frozen=True)
class ArgumentChoice:
    """What one string argument of one tool may be in the next reply: one of `values`, or any
    string the anchored regex `pattern` matches. An engine that decodes under a grammar holds
    the reply to it; others ignore it, and the tool still checks whatever comes."""

    tool: str
    argument: str
    values: tuple[str, ...]
    pattern: str | None = None


@dataclass(frozen=True)
class Reply:
    """One model call's result. A reply with tool calls asks the loop to run them; a reply
    without is the final answer (`text`)."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    timings: Timings = Timings(total_s=0.0)
    finish_reason: FinishReason = "stop"
    raw: str = ""  # what the model produced before parsing, for traces
    reasoning: str = ""  # the thinking before the answer or calls, never part of `text`
    # how many of the call's argument choices (chat's `choices`) the engine's grammar held the
    # reply to: 0 where it could not (native mode, hosted models, llama.cpp's GBNF fallback)
    choices_held: int = 0


# --- agent steps: each is both the loop's event and one trace record ---


@dataclass(frozen=True)
class ModelStep:
    """One model call."""

    step: int
    reply: Reply
    elapsed_s: float  # since the run started, at the end of this call
    kind: Literal["model"] = "model"
    # the workspace paths offered to the grammar this step (pathchoices.py), "" when none were
    paths: str = ""


@dataclass(frozen=True)
class ToolStep:
    """One tool call, run (or refused as invalid)."""

    step: int
    call: ToolCall
    result: str
    duration_s: float
    error: str | None = None  # the tool failed or the call was invalid; `result` says why
    invalid: bool = False  # the model's call was malformed / unknown tool / bad arguments
    cut_off: bool = False  # still running when the run's time limit passed; abandoned
    elapsed_s: float = 0.0
    kind: Literal["tool"] = "tool"


StopReason = Literal[
    "answer",
    "max_steps",
    "timeout",
    "context_overflow",
    "repeated_invalid_call",
    "repeated_failing_call",
    "engine_error",
    "api_error",
    "unfinished_thinking",
    "repetition",  # the model's reply (no tool call in it) looped and the engine stopped it
]


@dataclass(frozen=True)
class FinalStep:
    """The run ended; `answer` is empty unless stop_reason is "answer"."""

    step: int
    answer: str
    stop_reason: StopReason
    usage: Usage
    wall_s: float
    model_s: float
    tool_s: float
    tool_calls: int
    invalid_tool_calls: int
    prompt_tokens_evaluated: int
    error: str | None = None
    hint: str | None = None  # what the user can do about `error` (an engine error's hint)
    kind: Literal["final"] = "final"


Step = Union[ModelStep, ToolStep, FinalStep]


def as_dict(record: Any) -> dict[str, Any]:
    """Plain JSON-able data (tuples become lists) for traces and --json."""
    return dataclasses.asdict(record)


# A lone surrogate (U+D800-U+DFFF) cannot be encoded as UTF-8: one in a prompt, a tool result or
# a trace record kills the tokenizer, an HTTP request or a file write. They arrive two ways:
# a model's JSON escape ("\ud800"), and a name or argument that is not UTF-8, which Python
# decodes with surrogateescape (the byte 0xE9 becomes U+DCE9).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    # U+DC80-U+DCFF stands for the byte it escaped (surrogateescape): shown as that byte
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """`text` with every lone surrogate written as a backslash escape: `caf\\xe9.txt` for a
    file name whose bytes are not UTF-8, `\\ud800` for a model's stray JSON escape. The result
    always encodes as UTF-8; text that already does comes back as it is."""
    if text.isascii():
        return text
    return _SURROGATE.sub(_escaped, text)


def safe_data(value: Any) -> Any:
    """safe_text applied to every string inside `value`: dicts (keys too), lists, tuples and
    the frozen records above. Anything else, and a record with nothing to escape, comes
    back as it is."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_data(k): safe_data(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(safe_data(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
        safe = {name: safe_data(v) for name, v in fields.items()}
        return value if safe == fields else dataclasses.replace(value, **safe)
    return value
