"""Native mode's lazy grammar: free text until the model opens a tool call, then the call's grammar.

A model's own call format (native mode) is parsed after the fact (native_calls.py), so a call
the model starts but writes wrong is an invalid call the loop reports back: a wasted step. As
llama.cpp's lazy grammars do, the reply is sampled freely until its text holds the family's call
marker (`<tool_call>`, `<|tool_call_start|>`, `<|tool_call>`, `<|python_tag|>`, or a reply that
opens with `{` for Llama 3.x); from there an llguidance grammar for that family's call format,
built from the tools' schemas, constrains the rest of the call (sample-then-check and
jump-forward, as json mode's GuidedDecoder), so a call once started is always well-formed.
When the call's closing marker is written, the reply is free again (another call, text, or its end).

Families (which the chat template says, see `call_format`):
- hermes (Qwen 2.5 / 3, Granite 4, the Mamba fixtures): `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`
- qwen3-coder-xml (Qwen3.5): `<tool_call>\\n<function=NAME>\\n<parameter=P>\\nVALUE\\n</parameter>\\n</function>\\n</tool_call>`;
  a string value is raw text up to the first `\\n</parameter>`, other types JSON
- lfm2-pythonic (LFM2 / LFM2.5): `<|tool_call_start|>[name(key=VALUE, ...)]<|tool_call_end|>`, values JSON
  (native_calls reads true/false/null as Python's)
- gemma4: `<|tool_call>call:NAME{key:VALUE,...}<tool_call|>`, strings between `<|"|>` quotes
- llama3-json (Llama 3.x): `{"name": ..., "parameters": {...}}` as the whole reply, or after `<|python_tag|>`

Left free (no lazy grammar): Mistral's `[TOOL_CALLS]` and gpt-oss's harmony channels, whose
templates no fixture here carries, so their grammars could not be checked against the parser;
and any template whose format is not recognized. Parameters are written in the schema's order,
required ones always, optional ones optionally (the parsers accept any order; the grammar
admits one of them). Each marker is the tokenizer's special token where it has one.

Measured on the architecture fixtures (tests/test_native_lazy.py: random weights, the call
opened for them, 4 samples per family, tools with bounded strings): free, 4 of 4 calls invalid
in every family; under the lazy grammar, 0 invalid, every call closed within 160 tokens. Until a
marker the decoder samples as llama.cpp does (the same greedy tokens as llama-cpp-python's
`generate`), at no measurable extra CPU per token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from localagent.engines import guided
from localagent.engines.loops import Loop, LoopDetector
from localagent.engines.reasoning import split_reasoning
from localagent.engines.toolcalls import inline_refs
from localagent.records import ToolSpec

# compile options llguidance reads from a schema embedded with %json: json.dumps' spacing, as
# the templates render earlier calls
_X_GUIDANCE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "lenient": True}


@dataclass(frozen=True)
class Trigger:
    """Where a call starts: `marker` in the reply's text (at its start only when `anchored`),
    and the grammar of the call from the marker on. `ends_reply`: the format has nothing after
    its calls (Llama 3.x reads the whole reply as the calls), so the reply ends with the call."""

    marker: str
    anchored: bool
    grammar: str
    ends_reply: bool = False


def call_format(template: str | None) -> str | None:
    """The native call format a chat template teaches its model, or None (left free)."""
    if not template:
        return None
    if "<|tool_call>" in template:
        return "gemma4"
    if "<function=" in template and "<parameter=" in template:
        return "qwen3-coder-xml"
    if "<tool_call>" in template:
        return "hermes"
    if "<|tool_call_start|>" in template or "List of tools: [" in template:
        return "lfm2-pythonic"
    if "<|start_header_id|>" in template and '"parameters"' in template:
        return "llama3-json"
    return None


def triggers(fmt: str, tools: Sequence[ToolSpec], special: Callable[[str], int | None]) -> list[Trigger]:
    """The lazy grammar of a call format for these tools. `special(text)`: the id of the
    single token that spells `text` in this vocabulary, else None."""

    def mark(text: str) -> str:
        # a marker the vocabulary holds as one token: that token, which llguidance names by
        # id when it is special (a literal never matches a special token), or the text
        token = special(text)
        return f"({_lit(text)} | <[{token}]>)" if token is not None else _lit(text)

    specs = [(t.name, _parameters(t)) for t in tools]
    if fmt == "hermes":
        # the newlines the templates write around the JSON, optional: a model that leaves them
        # out (`<tool_call>{`) is still held to the call rather than left free
        call = _json_call(specs, "arguments")
        return [
            Trigger("<tool_call>", False, f'start: {mark("<tool_call>")} "\\n"? {call} "\\n"? {mark("</tool_call>")}')
        ]
    if fmt == "qwen3-coder-xml":
        # a string value is raw text, lazily up to the first `\n</parameter>` (`[lazy]`, which
        # llguidance takes on rules, not on terminals: hence the lower-case name)
        strings = _Strings("strval", r"/(?s:.{%s})\n<\/parameter>/", r"/(?s:.*)\n<\/parameter>/", lazy=True)
        rules = [_xml_function(i, name, params, strings) for i, (name, params) in enumerate(specs)]
        body = " | ".join(f"f{i}" for i in range(len(specs)))
        grammar = f'start: {mark("<tool_call>")} "\\n"? ({body}) "\\n"? {mark("</tool_call>")}\n' + "\n".join(rules)
        return [Trigger("<tool_call>", False, grammar + "\n" + strings.rules())]
    if fmt == "lfm2-pythonic":
        rules = [_keyword_call(i, name, params, "=", ", ", _json_value) for i, (name, params) in enumerate(specs)]
        one = " | ".join(f"f{i}" for i in range(len(specs)))
        grammar = (
            f'start: {mark("<|tool_call_start|>")} "[" call (", " call)* "]" {mark("<|tool_call_end|>")}\n'
            f"call: {one}\n" + "\n".join(rules)
        )
        return [Trigger("<|tool_call_start|>", False, grammar)]
    if fmt == "gemma4":
        return [Trigger("<|tool_call>", False, _gemma4_grammar(specs, mark))]
    if fmt == "llama3-json":
        call = _json_call(specs, "parameters")
        return [
            Trigger("<|python_tag|>", False, f"start: {mark('<|python_tag|>')} {call}", ends_reply=True),
            Trigger("{", True, f"start: {call}", ends_reply=True),
        ]
    return []


def _gemma4_grammar(specs: list[tuple[str, dict[str, Any]]], mark: Callable[[str], str]) -> str:
    """`call:NAME{key:VALUE,...}<tool_call|>`: strings between `<|"|>` quotes, numbers and
    literals as JSON, nested objects and lists in the same notation (untyped)."""
    quote = mark('<|"|>')
    strings = _Strings("GSTR", r"/(?s:.{%s})/", r"/(?s:.*)/")

    def value(schema: dict[str, Any]) -> str:
        choices = schema.get("enum")
        if isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices):
            return f"{quote} ({' | '.join(_lit(c) for c in choices)}) {quote}"
        types = _types(schema)
        if types == {"string"}:
            return f"{quote} {strings.lexeme(schema)} {quote}"
        if types and types <= {"integer", "number", "boolean", "null"}:
            return _json_value(schema)
        return "gvalue"

    rules = [_keyword_call(i, name, params, ":", ",", value, gemma=True) for i, (name, params) in enumerate(specs)]
    one = " | ".join(f"f{i}" for i in range(len(specs)))
    strings.used.add(None)  # gvalue's strings
    return (
        f'start: {mark("<|tool_call>")} "call:" ({one}) {mark("<tool_call|>")}\n'
        + "\n".join(rules)
        + f'\ngvalue: {quote} GSTR {quote} | %json{{"type": ["number", "boolean", "null"]}}'
        + ' | "{" (GKEY ":" gvalue ("," GKEY ":" gvalue)*)? "}" | "[" (gvalue ("," gvalue)*)? "]"'
        + "\nGKEY: /[A-Za-z_][A-Za-z0-9_]*/\n"
        + strings.rules()
    )


class _Strings:
    """The text lexemes of string values: one per maxLength in use (so that a bounded string
    ends), named `{prefix}_{N}`, and `{prefix}` for unbounded ones."""

    def __init__(self, prefix: str, bounded: str, unbounded: str, *, lazy: bool = False):
        self.prefix, self.bounded, self.unbounded, self.lazy = prefix, bounded, unbounded, lazy
        self.used: set[int | None] = set()

    def lexeme(self, schema: dict[str, Any]) -> str:
        limit = schema.get("maxLength")
        n = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0 else None
        self.used.add(n)
        return self.prefix if n is None else f"{self.prefix}_{n}"

    def rules(self) -> str:
        flag = "[lazy]" if self.lazy else ""
        return "\n".join(
            f"{self.prefix}{flag}: {self.unbounded}"
            if n is None
            else f"{self.prefix}_{n}{flag}: {self.bounded % f'0,{n}'}"
            for n in sorted(self.used, key=lambda n: -1 if n is None else n)
        )


_EMPTY = '""'  # lark's empty string: an optional last item left out


def _lit(text: str) -> str:
    return json.dumps(text)


def _parameters(tool: ToolSpec) -> dict[str, Any]:
    schema = inline_refs(tool.parameters) if tool.parameters else {}
    return schema if isinstance(schema, dict) else {}


def _embedded(schema: Any) -> str:
    closed = guided.closed_objects(schema if isinstance(schema, dict) else {})
    return "%json" + json.dumps({**closed, "x-guidance": _X_GUIDANCE})


def _json_value(schema: dict[str, Any]) -> str:
    return _embedded(schema)


def _json_call(specs: list[tuple[str, dict[str, Any]]], key: str) -> str:
    """One JSON object naming one of the tools, its arguments under `key`."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": name}, key: params or {"type": "object"}},
            "required": ["name", key],
        }
        for name, params in specs
    ]
    return _embedded({"anyOf": options} if len(options) > 1 else options[0])


def _types(schema: Any) -> set[str] | None:
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return None


def _properties(params: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    """(name, schema, required) per parameter, in the schema's order."""
    required = set(params.get("required") or ())
    props = params.get("properties") or {}
    return [(k, v if isinstance(v, dict) else {}, k in required) for k, v in props.items()]


def _sequence(prefix: str, items: list[tuple[str, bool]], sep: str) -> list[str]:
    """Rules `{prefix}_0`: the items in order, each optional unless required, `sep` between
    those written. Two rules per position: before any item was written, and after."""
    rules = []
    n = len(items)
    for i, (item, required) in enumerate(items):
        for after in (False, True):
            name = f"{prefix}_{i}_{'a' if after else 'b'}"
            head = f"{_lit(sep)} {item}" if after else item
            rest_after = f" {prefix}_{i + 1}_a" if i + 1 < n else ""
            rest_before = f" {prefix}_{i + 1}_{'a' if after else 'b'}" if i + 1 < n else ""
            with_item = f"{head}{rest_after}"
            without = rest_before.strip() or _EMPTY
            body = with_item if required else f"{with_item} | {without}"
            rules.append(f"{name}: {body}")
    return rules


def _keyword_call(
    i: int,
    name: str,
    params: dict[str, Any],
    assign: str,
    sep: str,
    value: Callable[[dict[str, Any]], str],
    *,
    gemma: bool = False,
) -> str:
    """`name(key=value, ...)` (pythonic) or `name{key:value,...}` (Gemma 4) as rule f{i}."""
    opening, closing = ("{", "}") if gemma else ("(", ")")
    items = [(f"{_lit(key + assign)} {value(schema)}", req) for key, schema, req in _properties(params)]
    if not items:
        return f"f{i}: {_lit(name + opening + closing)}"
    rules = _sequence(f"f{i}a", items, sep)
    return f"f{i}: {_lit(name + opening)} f{i}a_0_b {_lit(closing)}\n" + "\n".join(rules)


def _xml_function(i: int, name: str, params: dict[str, Any], strings: _Strings) -> str:
    items = []
    for key, schema, req in _properties(params):
        opening = _lit(f"<parameter={key}>\n")
        choices = schema.get("enum")
        if isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices):
            # written bare, as native_calls reads a string-only parameter
            items.append((f'{opening} ({" | ".join(_lit(c) for c in choices)}) "\\n</parameter>\\n"', req))
        elif _types(schema) == {"string"}:
            items.append((f'{opening} {strings.lexeme(schema)} "\\n"', req))
        else:
            items.append((f'{opening} {_json_value(schema)} "\\n</parameter>\\n"', req))
    head = _lit(f"<function={name}>\n")
    if not items:
        return f'f{i}: {head} "</function>"'
    rules = _sequence(f"f{i}a", items, "")
    return f'f{i}: {head} f{i}a_0_b "</function>"\n' + "\n".join(rules)


# --- decoding --------------------------------------------------------------------------------


@dataclass
class LazyCounts:
    """What the lazy grammar did in one reply."""

    opened: int = 0  # calls whose marker was seen and that the grammar then constrained
    closed: int = 0  # of those, calls the grammar saw to their end
    refused: int = 0  # markers whose following text the grammar could not take (left free)


class LazyDecoder(guided.GuidedDecoder):
    """Decodes a native-mode reply: free until a trigger, then the call's grammar.

    `matchers[i]` is a fresh llguidance matcher for `triggers[i]` (reset before each use);
    `token_bytes(tokens)` spells tokens as the model's bytes (special tokens as their text).
    `thinking`: the prompt opened a think block: markers inside thoughts do not count.
    """

    def __init__(
        self,
        llama: Any,
        triggers: Sequence[Trigger],
        matchers: Sequence[Any],
        *,
        tokenize: Callable[[bytes], list[int]],
        token_bytes: Callable[[list[int]], bytes],
        is_end: Callable[[int], bool],
        temperature: float,
        seed: int,
        thinking: bool = False,
        loops: LoopDetector | None = None,
    ):
        super().__init__(llama, None, is_end=is_end, temperature=temperature, seed=seed, loops=loops)
        self.triggers, self.matchers = list(triggers), list(matchers)
        self.tokenize, self.token_bytes, self.thinking = tokenize, token_bytes, thinking
        self.counts = LazyCounts()
        self._trigger: Trigger | None = None  # the trigger of the call being written

    def decode(self, max_tokens: int, emit: Callable[[list[int]], None], prefix: Sequence[int] = ()) -> guided.Decoded:
        """`prefix`: reply tokens already in the model's memory (all evaluated), read as the
        start of the reply: a benchmark opens a call with them to see how the model goes on."""
        out: list[int] = []
        pending: list[int] = []
        text = bytearray(self.token_bytes(list(prefix)))
        first_at: float | None = None
        finish: guided.Finish = "length"
        loop: Loop | None = None
        self._open(text, 0)
        scanned = len(text)  # bytes of `text` searched for markers (a marker may straddle this point)
        while len(out) < max_tokens:
            if self.matcher is not None:
                forced = self.matcher.compute_ff_tokens()[: max_tokens - len(out)]
                if forced:
                    self._consume(forced)
                    first_at = first_at or time.perf_counter()
                    out += forced
                    pending += forced
                    text += self.token_bytes(forced)
                    self.forced += len(forced)
                    emit(forced)
                    loop = self.loops.extend(forced) if self.loops is not None else None
                    if loop is not None:
                        finish = "repetition"
                        break
                if self.matcher.is_stopped():  # the call closed: free text again, or the end
                    self.matcher = None
                    self.counts.closed += 1
                    if self._trigger is not None and self._trigger.ends_reply:
                        finish = "stop"
                        break
                    scanned = len(text)
                    continue
                if len(out) >= max_tokens:
                    break
            if pending:
                self.llama.eval(pending)
                pending = []
            token = self._choose() if self.matcher is not None else self._free()
            first_at = first_at or time.perf_counter()
            if self.is_end(token):
                finish = "stop"
                break
            out.append(token)
            pending = [token]
            text += self.token_bytes([token])
            self.sampled += 1
            emit([token])
            loop = self.loops.add(token) if self.loops is not None else None
            if loop is not None:
                finish = "repetition"
                break
            if self.matcher is None:
                self._open(text, scanned)
                scanned = len(text)
        if len(pending) > 1:
            self.llama.eval(pending[:-1])
        return guided.Decoded(out, finish, first_at, self.sampled, self.forced, self.masks, loop)

    def _free(self) -> int:
        import llama_cpp
        import numpy as np

        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llama.ctx, -1), shape=(self.n_vocab,))
        return self._pick(logits)

    def _open(self, text: bytearray, scanned: int) -> None:
        """Start the grammar of the first trigger whose marker the new text completes."""
        for trigger, matcher in zip(self.triggers, self.matchers, strict=True):
            marker = trigger.marker.encode("utf-8")
            if trigger.anchored:
                at = len(text) - len(text.lstrip())
                if not (scanned <= at < len(text) and text.startswith(marker, at)):
                    continue
            else:
                at = text.find(marker, max(0, scanned - len(marker) + 1))
                if at < 0:
                    continue
            if not split_reasoning(text[:at].decode("utf-8", "replace"), opened=self.thinking).closed:
                continue  # a marker inside a thought is not a call
            matcher.reset()
            # the tokens already written from the marker on, as the grammar reads them
            if matcher.consume_tokens(self.tokenize(bytes(text[at:]))) and not matcher.is_error():
                self.matcher, self._trigger = matcher, trigger
                self.counts.opened += 1
            else:
                self.counts.refused += 1
            return
