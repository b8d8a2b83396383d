"""Reasoning ("thinking") split from the rest of a reply, for the small-model families that
think in the open: `<think>...</think>` (Qwen3, Qwen3.5, SmolLM3, LFM2.5-Thinking, DeepSeek-R1),
Gemma 4's `<|channel>thought ...<channel|>`, Magistral/Ministral's `[THINK]...[/THINK]`, and
gpt-oss's harmony channels (`<|channel|>analysis<|message|>...<|end|>`).

Pure functions. The tool-call parsers only ever see `Thought.text`: a call written while the
model was thinking is not a call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Thought:
    """A reply split in two."""

    reasoning: str
    """What the model thought, markers removed, each block stripped; several blocks joined by a
    blank line. Empty when it did not think (or thought nothing, as in `<think>\\n\\n</think>`)."""
    text: str
    """The rest of the reply: the answer and/or tool calls, stripped, markers removed."""
    closed: bool = True
    """False when a reasoning block was opened (by the reply or by the prompt) and never closed:
    the model ran out of tokens while thinking, and `text` holds nothing it meant as an answer."""


@dataclass(frozen=True)
class _Block:
    open: str
    close: str
    # Markers that also end a block left unclosed; they stay in the text. llama.cpp's Qwen3-Coder
    # parser (common/parsers/qwen3-coder.cpp, thinking_end_tags) lets `<tool_call>` end Qwen3.5's
    # reasoning, because Qwen3.5 sometimes skips `</think>` and goes straight to the call.
    ends: tuple[str, ...] = ()


_BLOCKS = (
    _Block("<think>", "</think>", ends=("<tool_call>",)),
    _Block("<|channel>thought", "<channel|>"),  # Gemma 4
    _Block("[THINK]", "[/THINK]"),  # Magistral / Ministral 3
)
_BY_OPEN = {b.open: b for b in _BLOCKS}
_CLOSES = tuple(b.close for b in _BLOCKS)
_ENDS = tuple(e for b in _BLOCKS for e in b.ends)
# Gemma 4 sometimes writes an empty `<|channel>` before its thought (llama.cpp's gemma4 parser
# consumes them); stray closers are dropped from the text too.
_STRAY = ("<|channel>",)
# longest first, so `<|channel>thought` wins over `<|channel>`; literal alternatives only
_TOKENS = re.compile("|".join(re.escape(t) for t in sorted({*_BY_OPEN, *_CLOSES, *_STRAY}, key=len, reverse=True)))

# gpt-oss (harmony): messages `<|start|>assistant<|channel|>NAME<|message|>BODY<|end|>`
_HARMONY = "<|channel|>"
_HARMONY_START = "<|start|>"
_HARMONY_MESSAGE = "<|message|>"
_HARMONY_END_RE = re.compile(r"<\|(?:end|return|call)\|>")
_HARMONY_ANALYSIS = "<|channel|>analysis<|message|>"
_HARMONY_RECIPIENT_RE = re.compile(r"to=([^\s<]{1,200})")
_HARMONY_CHANNEL_RE = re.compile(r"<\|channel\|>(\w{1,50})")

# what a rendered prompt ends with when the template opened the thought for the model
_PROMPT_OPENERS = (*_BY_OPEN, _HARMONY_ANALYSIS)


def split_reasoning(raw: str, *, opened: bool = False) -> Thought:
    """Split a reply into reasoning and text.

    `opened=True` means the prompt ended inside a reasoning block (see `prompt_opens_thinking`),
    so the reply starts mid-thought: `...</think>answer`. A reply whose first marker is a closer
    is read the same way even without `opened` (the template opened it and nobody said so).
    Every complete block anywhere in the reply is reasoning; a block that never closes takes
    the rest of the reply and `closed` is False.
    """
    if _HARMONY in raw:
        return _split_harmony(raw, opened)
    finder = _Finder(raw)
    reasoning: list[str] = []
    text: list[str] = []
    pos, closed = 0, True
    first = _TOKENS.search(raw)
    if opened or (first is not None and first.group() in _CLOSES):
        pos, closed = _read_block(finder, _after_opener(raw) if opened else 0, None, reasoning)
    while closed:
        m = _TOKENS.search(raw, pos)
        if m is None:
            text.append(raw[pos:])
            break
        text.append(raw[pos : m.start()])
        block = _BY_OPEN.get(m.group())
        if block is None:  # a stray closer or an empty Gemma channel: not part of the answer
            pos = m.end()
            continue
        pos, closed = _read_block(finder, m.end(), block, reasoning)
    return Thought("\n\n".join(r for r in reasoning if r), "".join(text).strip(), closed)


def prompt_opens_thinking(prompt: str) -> bool:
    """True when a rendered prompt ends inside an open reasoning block: Qwen3.5's template
    (thinking on) ends its generation prompt with `<think>\\n`, so the model's reply starts
    mid-thought. Only the end of the prompt counts: a marker a user typed earlier does not."""
    return prompt.rstrip().endswith(_PROMPT_OPENERS)


def _after_opener(raw: str) -> int:
    """Where the reasoning starts when the prompt opened the block: past an opener the model
    wrote again anyway (`<think>` after a prompt ending in `<think>\\n`)."""
    start = len(raw) - len(raw.lstrip())
    for opener in _BY_OPEN:
        if raw.startswith(opener, start):
            return start + len(opener)
    return 0


def _read_block(finder: _Finder, start: int, block: _Block | None, reasoning: list[str]) -> tuple[int, bool]:
    """Reasoning from `start` to the block's closer (any closer when the prompt opened a block
    of unknown kind) -> (where the text resumes, closed)."""
    raw = finder.text
    at, token = finder.first((block.close,) if block else _CLOSES, start)
    if at >= 0:
        reasoning.append(raw[start:at].strip())
        return at + len(token), True
    at, _ = finder.first(block.ends if block else _ENDS, start)
    if at >= 0:
        reasoning.append(raw[start:at].strip())
        return at, True
    reasoning.append(raw[start:].strip())
    return len(raw), False


class _Finder:
    """`str.find` that remembers where each marker was last found or that it is absent from
    some point on, so a reply of many blocks with no closer is still read in linear time."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._seen: dict[str, tuple[int, int]] = {}  # token -> (searched from, found at or -1)

    def find(self, token: str, start: int) -> int:
        searched, found = self._seen.get(token, (len(self.text) + 1, -1))
        if searched <= start and (found == -1 or found >= start):
            return found
        found = self.text.find(token, start)
        self._seen[token] = (start, found)
        return found

    def first(self, tokens: tuple[str, ...], start: int) -> tuple[int, str]:
        best, best_token = -1, ""
        for token in tokens:
            at = self.find(token, start)
            if at >= 0 and (best < 0 or at < best):
                best, best_token = at, token
        return best, best_token


def _split_harmony(raw: str, opened: bool) -> Thought:
    """gpt-oss: `analysis` messages are reasoning, `final` (and plain `commentary`) messages are
    text, a message addressed to a function (`to=functions.NAME` in its header) stays in the
    text whole, for the tool-call parser, and one addressed to a built-in tool the agent does
    not have (`to=python`, `to=container.exec`) is dropped, as llama.cpp does."""
    reasoning: list[str] = []
    text: list[str] = []
    closed = True
    parts = raw.split(_HARMONY_START)
    for i, part in enumerate(parts):
        header, has_body, body = part.partition(_HARMONY_MESSAGE)
        if not has_body:
            # the prompt opened the analysis message and this is its body; else stray header text
            if i == 0 and opened:
                end = _HARMONY_END_RE.search(part)
                reasoning.append(part[: end.start() if end else len(part)].strip())
                closed = end is not None or len(parts) > 1
            continue
        end = _HARMONY_END_RE.search(body)
        message = body[: end.start()] if end else body
        recipients = [r for r in _HARMONY_RECIPIENT_RE.findall(header) if r != "assistant"]
        channels = _HARMONY_CHANNEL_RE.findall(header)
        if recipients:
            if recipients[-1].startswith("functions."):
                text.append(_HARMONY_START + part if i else part)
        elif channels[-1:] == ["analysis"]:
            reasoning.append(message.strip())
            closed = end is not None or i < len(parts) - 1
        else:
            text.append(message)
    return Thought("\n\n".join(r for r in reasoning if r), "".join(text).strip(), closed)
