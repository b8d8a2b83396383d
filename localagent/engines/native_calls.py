"""What a model writes in its own tool-call format, read into ToolCalls: Hermes / Qwen 2.5 /
Granite / SmolLM3 `<tool_call>{json}`, Qwen3.5's XML, LFM2's pythonic calls, Gemma 4, Mistral,
gpt-oss and Llama 3.x. Checked against llama.cpp's own test cases (tests/test_native_formats.py).

Pure functions. A call that cannot be read becomes a ToolCall with `error` set (an invalid call
the loop reports back to the model), never an exception.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from localagent.engines.reasoning import split_reasoning
from localagent.engines.toolcalls import InvalidJSON, guess_name, inline_refs, read_json
from localagent.records import ToolCall, ToolSpec

# --- native mode: parsing what the model wrote ---
#
# One parser per family, chosen by the first call marker in the reply. Each reads the reply
# left to right with `str.find` and anchored matches (no regex that can backtrack over the
# whole reply), so hostile or runaway text costs time linear in its length.

_MAX_CALLS = 64  # more calls than this in one reply is a runaway generation, not a plan
_MAX_DEPTH = 64  # nesting of argument values; deeper is junk (and Python's recursion limit)
_WS_RE = re.compile(r"\s*")
_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.S)
_PYTHON_TAG = "<|python_tag|>"
_MISTRAL_TAG = "[TOOL_CALLS]"


class _Malformed(Exception):
    """A call that cannot be read; caught where the call is made into a ToolCall."""


class _Calls:
    """The calls of one reply, numbered in order, with each tool's parameter schemas at hand."""

    def __init__(self, id_prefix: str, tools: Sequence[ToolSpec]) -> None:
        self.id_prefix = id_prefix
        self.items: list[ToolCall] = []
        self._tools = {t.name: t for t in tools}
        self._properties: dict[str, dict[str, Any]] = {}

    @property
    def full(self) -> bool:
        return len(self.items) > _MAX_CALLS

    def next_id(self) -> str:
        return f"{self.id_prefix}{len(self.items) + 1}"

    def add(self, name: str, arguments: dict[str, Any], error: str | None, raw: str, call_id: str = "") -> None:
        if self.full:
            return
        call_id = call_id or self.next_id()
        if len(self.items) == _MAX_CALLS:
            why = f"more than {_MAX_CALLS} tool calls in one reply; this one and the rest were not run"
            self.items.append(ToolCall(name, {}, call_id, why, raw))
            return
        self.items.append(ToolCall(name, {} if error else arguments, call_id, error, raw))

    def add_call(self, call: ToolCall) -> None:
        self.add(call.name, call.arguments, call.error, call.raw, call.id)

    def properties(self, tool: str) -> dict[str, Any]:
        """The JSON schemas of a tool's parameters, by name ({} for an unknown tool)."""
        if tool not in self._properties:
            spec = self._tools.get(tool)
            schema = inline_refs(spec.parameters) if spec else {}
            self._properties[tool] = schema.get("properties") or {}
        return self._properties[tool]


# reads the call that begins at an offset into _Calls -> where the text resumes after it
_ReadCall = Callable[[str, int, _Calls], int]


def parse_native(
    text: str, id_prefix: str = "call_", *, tools: Sequence[ToolSpec] = ()
) -> tuple[str, tuple[ToolCall, ...]]:
    """Tool calls in a model's own format -> (remaining text, calls).

    Formats: Hermes / Qwen 2.5 / Granite 4 / SmolLM3 `<tool_call>{json}</tool_call>`; Qwen3.5 /
    Qwen3-Coder `<tool_call><function=NAME><parameter=P>...` (also without `<tool_call>`), and
    Llama 3.1's `<function=NAME>{json}</function>`; LFM2 / LFM2.5 `<|tool_call_start|>[f(a=1)]
    <|tool_call_end|>`; Gemma 4 `<|tool_call>call:NAME{k:<|"|>v<|"|>}<tool_call|>`; Mistral
    `[TOOL_CALLS][{json}]` and `[TOOL_CALLS]NAME[ARGS]{json}`; gpt-oss `to=functions.NAME ...
    <|message|>{json}`; Llama 3.x `<|python_tag|>` and bare `{"name": ..., "parameters": ...}`
    (several separated by `;`), and a JSON list of calls. Text that is not a call is the answer.

    `tools` types the values of formats that write them as bare text (Qwen's `<parameter=...>`):
    a string parameter stays a string, other types are read as JSON; a parameter with no schema
    is JSON when it reads as JSON, else a string. Reasoning blocks are removed first: a call
    written while thinking is not a call. A call that cannot be read is a ToolCall with `error`.
    """
    visible = split_reasoning(text).text
    calls = _Calls(id_prefix, tools)
    parser = _family(visible)
    if parser is not None:
        answer = parser(visible, calls)
        return answer.strip(), tuple(calls.items)
    stripped = visible.strip()
    fenced = _FENCE_RE.fullmatch(stripped)
    candidate = fenced.group(1) if fenced else stripped
    if candidate[:1] in ("{", "[") and _looks_like_call(candidate):
        _json_calls(candidate, calls)
        return "", tuple(calls.items)
    return stripped, ()


def _family(text: str) -> Callable[[str, _Calls], str] | None:
    """The parser of the family whose call marker comes first in the text."""
    best, parser = -1, None
    for marker, candidate in _MARKERS:
        at = text.find(marker)
        if at >= 0 and (best < 0 or at < best):
            best, parser = at, candidate
    return parser


def _looks_like_call(text: str) -> bool:
    return bool(re.search(r'"(name|function)"\s*:', text))


def _skip_ws(text: str, pos: int) -> int:
    return _WS_RE.match(text, pos).end()  # type: ignore[union-attr]  # \s* always matches


def _resume(text: str, pos: int, tag: str) -> int:
    """Where to go on after an unreadable call: past its closing tag, else the end."""
    at = text.find(tag, pos)
    return len(text) if at < 0 else at + len(tag)


def _skip_tag(text: str, pos: int, tag: str) -> int:
    """Past an optional closing tag (after whitespace)."""
    at = _skip_ws(text, pos)
    return at + len(tag) if text.startswith(tag, at) else pos


# --- JSON calls: Hermes, Granite, Llama 3.x, Mistral Nemo ---


def _json_calls(block: str, calls: _Calls, *, truncated: bool = False) -> None:
    """One or more JSON calls (objects or lists) separated by `;`, `,` or whitespace."""
    pos, before = 0, len(calls.items)
    while not calls.full:
        pos = _skip_ws_and(block, pos, " \t\r\n;,")
        if pos >= len(block):
            break
        try:
            obj, end = read_json(block, pos)
        except InvalidJSON as exc:
            rest = block[pos:]
            why = f"tool call is not valid JSON ({exc})"
            if truncated:
                why = "the tool call was cut off before it ended; " + why
            calls.add(guess_name(rest), {}, why, rest)
            return
        for item in obj if isinstance(obj, list) else [obj]:
            calls.add_call(call_from_object(item, calls.next_id(), block[pos:end]))
        pos = end
    if len(calls.items) == before:
        calls.add("", {}, "empty tool call", block)


def _skip_ws_and(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def call_from_object(obj: Any, call_id: str, raw: str) -> ToolCall:
    """{"name": ..., "arguments": {...} or JSON text} (or "parameters", or the OpenAI
    {"function": {...}} shape) -> a ToolCall, with `error` set when it is not a valid call."""
    if not isinstance(obj, dict):
        return ToolCall("", {}, call_id, "a tool call must be a JSON object", raw)
    if isinstance(obj.get("function"), dict):  # OpenAI shape {"type": "function", "function": {...}}
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return ToolCall("", {}, call_id, "the tool call has no 'name'", raw)
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = read_json(arguments)[0] if arguments.strip() else {}
        except InvalidJSON as exc:
            return ToolCall(name, {}, call_id, f"the arguments are not valid JSON ({exc})", raw)
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return ToolCall(name, {}, call_id, "the arguments must be a JSON object", raw)
    return ToolCall(name, arguments, call_id, None, raw)


def capped(calls: Iterable[ToolCall]) -> tuple[ToolCall, ...]:
    """Calls that arrive already split (a hosted API's tool_calls), held to the cap of one
    reply as parse_native's are; their ids are kept. Read lazily: nothing past the cap."""
    kept = _Calls("call_", ())
    for call in calls:
        if kept.full:
            break
        kept.add_call(call)
    return tuple(kept.items)


def _json_arguments(text: str) -> dict[str, Any]:
    """A JSON object of arguments written after a tool name (Mistral `[ARGS]`, gpt-oss, Llama
    3.1's `<function=NAME>`); empty text is no arguments."""
    if not text.strip():
        return {}
    try:
        arguments, _ = read_json(text)
    except InvalidJSON as exc:
        raise _Malformed(f"the arguments are not valid JSON ({exc})") from None
    if not isinstance(arguments, dict):
        raise _Malformed("the arguments must be a JSON object")
    return arguments


def _outside_calls(text: str, calls: _Calls, start_re: re.Pattern[str], read_call: _ReadCall) -> str:
    """The text outside the calls that begin where `start_re` matches; `read_call` reads the
    call at a start into `calls` and says where the text resumes. At the cap the rest of the
    text is dropped, neither content nor calls."""
    content: list[str] = []
    pos = 0
    while not calls.full:
        m = start_re.search(text, pos)
        if m is None:
            content.append(text[pos:])
            break
        content.append(text[pos : m.start()])
        pos = read_call(text, m.start(), calls)
    return "".join(content)


def _parse_python_tag(text: str, calls: _Calls) -> str:
    """Llama 3.1: `<|python_tag|>{...}; {...}`."""
    before, _, after = text.partition(_PYTHON_TAG)
    _json_calls(after.strip(), calls)
    return before


# --- Hermes / Qwen: <tool_call>{json}</tool_call> and <tool_call><function=NAME>... ---

_TAGGED_START_RE = re.compile(r"<tool_call>|<function=")
_FUNCTION_OPEN_RE = re.compile(r"<function=([^>\s]{1,200})>")
_PARAMETER_OPEN_RE = re.compile(r"<parameter=([^>\s]{1,200})>\n?")
_PARAMETER_CLOSE = "</parameter>"
# what may follow a parameter's closing tag; anything else means the tag was part of the value
_AFTER_PARAMETER = ("<parameter=", "</function>", "</tool_call>")


def _parse_tagged(text: str, calls: _Calls) -> str:
    return _outside_calls(text, calls, _TAGGED_START_RE, _tagged_call)


def _tagged_call(text: str, start: int, calls: _Calls) -> int:
    if text.startswith("<tool_call>", start):
        return _tool_call_block(text, start + len("<tool_call>"), calls)
    # Qwen3-Coder sometimes leaves out the opening <tool_call>
    return _skip_tag(text, _function_call(text, start, calls), "</tool_call>")


def _tool_call_block(text: str, start: int, calls: _Calls) -> int:
    """One `<tool_call>` block from just after its tag -> where the text resumes."""
    at = _skip_ws(text, start)
    if text.startswith("<function=", at):
        return _skip_tag(text, _function_call(text, at, calls), "</tool_call>")
    # JSON: read up to the closing tag, so one broken call cannot swallow the next (a JSON
    # string holding a literal "</tool_call>" is then an error call, which the model can fix)
    close = text.find("</tool_call>", at)
    end = len(text) if close < 0 else close
    _json_calls(text[at:end].strip(), calls, truncated=close < 0)
    return end if close < 0 else close + len("</tool_call>")


def _function_call(text: str, start: int, calls: _Calls) -> int:
    """`<function=NAME>` then `<parameter=P>` values or a JSON object, to `</function>`
    -> where the text resumes."""
    m = _FUNCTION_OPEN_RE.match(text, start)
    if m is None:
        end = _resume(text, start, "</function>")
        calls.add("", {}, "a <function=NAME> tag whose name cannot be read", text[start:end])
        return end
    name, pos = m.group(1), _skip_ws(text, m.end())
    if text.startswith("{", pos):  # Llama 3.1's <function=NAME>{json}</function>
        close = text.find("</function>", pos)
        end = len(text) if close < 0 else close + len("</function>")
        try:
            calls.add(name, _json_arguments(text[pos : end if close < 0 else close]), None, text[start:end])
        except _Malformed as exc:
            calls.add(name, {}, str(exc), text[start:end])
        return end
    arguments, errors, pos = _xml_parameters(text, pos, calls.properties(name))
    calls.add(name, arguments, "; ".join(errors) or None, text[start:pos])
    return pos


def _xml_parameters(text: str, pos: int, properties: dict[str, Any]) -> tuple[dict[str, Any], list[str], int]:
    """`<parameter=P>\\nVALUE\\n</parameter>` ... `</function>` -> (arguments, errors, end).

    llama.cpp's rule (common/parsers/qwen3-coder.cpp): the newline after the opening tag and the
    one before `</parameter>` belong to the format, everything between is the value, so a value
    that ends in a newline keeps it (`#include\\n\\n</parameter>` is "#include\\n")."""
    arguments: dict[str, Any] = {}
    errors: list[str] = []
    while True:
        pos = _skip_ws(text, pos)
        if text.startswith("</function>", pos):
            return arguments, errors, pos + len("</function>")
        if pos >= len(text):
            return arguments, [*errors, "the call was cut off before </function>"], pos
        m = _PARAMETER_OPEN_RE.match(text, pos)
        if m is None:
            errors.append(f"unexpected text {text[pos : pos + 40]!r}: expected <parameter=NAME> or </function>")
            return arguments, errors, _resume(text, pos, "</function>")
        parameter = m.group(1)
        close = _parameter_close(text, m.end())
        if close < 0:
            errors.append(f"the call was cut off inside parameter {parameter!r}")
            return arguments, errors, len(text)
        value = text[m.end() : close]
        value = value[:-1] if value.endswith("\n") else value
        arguments[parameter], error = _typed_value(parameter, value, properties.get(parameter))
        if error:
            errors.append(error)
        pos = close + len(_PARAMETER_CLOSE)


def _parameter_close(text: str, start: int) -> int:
    """The `</parameter>` that ends a value: one followed by another parameter, the end of the
    function, or the end of the reply (so a value may itself mention `</parameter>`)."""
    pos = start
    while True:
        at = text.find(_PARAMETER_CLOSE, pos)
        if at < 0:
            return -1
        after = _skip_ws(text, at + len(_PARAMETER_CLOSE))
        if after == len(text) or text.startswith(_AFTER_PARAMETER, after):
            return at
        pos = at + 1


def _typed_value(parameter: str, text: str, schema: Any) -> tuple[Any, str | None]:
    """A parameter written as bare text, typed by its schema -> (value, error).

    As llama.cpp does: a string-only parameter is the text as written ("123" stays "123"); a
    parameter of other types is read as JSON; a union with string is typed when the text reads
    as one of the other types, else a string. Without a schema: JSON when it reads as JSON."""
    types = _schema_types(schema)
    if types == {"string"}:
        return text, None
    value, readable = _read_json(text, types)
    if types is None:
        return (value if readable else text), None
    if readable and _has_type(value, types):
        return _narrow(value, types), None
    if "string" in types:
        return text, None
    expected = " or ".join(sorted(types))
    return text, f"parameter {parameter!r} must be {expected}, not {text[:80]!r}"


def _read_json(text: str, types: set[str] | None) -> tuple[Any, bool]:
    stripped = text.strip()
    # Qwen3.5's own template writes booleans with Python's `| string`: True / False
    if types is not None and "boolean" in types and stripped in ("True", "False"):
        return stripped == "True", True
    try:
        return read_json(stripped)[0], True
    except InvalidJSON:
        return None, False


def _schema_types(schema: Any) -> set[str] | None:
    """The JSON types a schema admits, or None when it does not say."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)} or None
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            found: set[str] = set()
            for option in schema[key]:
                option_types = _schema_types(option)
                if option_types is None:
                    return None
                found |= option_types
            return found or None
    values = (
        schema["enum"] if isinstance(schema.get("enum"), list) else [schema["const"]] if "const" in schema else None
    )
    if values:
        return {_json_type(v) for v in values}
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "string"


def _has_type(value: Any, types: set[str]) -> bool:
    kind = _json_type(value)
    if kind == "integer" and "number" in types:
        return True
    if kind == "number" and "integer" in types:
        return float(value).is_integer()
    return kind in types


def _narrow(value: Any, types: set[str]) -> Any:
    # 3.0 for an integer parameter is 3; a number parameter keeps what was written
    if isinstance(value, float) and "integer" in types and "number" not in types:
        return int(value)
    return value


# --- LFM2 / LFM2.5: <|tool_call_start|>[name(arg=value, ...), ...]<|tool_call_end|> ---

_LFM2_START = "<|tool_call_start|>"
_LFM2_END = "<|tool_call_end|>"
_LFM2_START_RE = re.compile(re.escape(_LFM2_START))
_PYTHONIC_NAME_RE = re.compile(r"\s*\[?\s*([A-Za-z_][\w.]{0,199})\s*\(")
# llama.cpp's LFM2 grammar takes JSON's literals as well as Python's
_NAME_LITERALS = {"true": True, "false": False, "null": None}


def _parse_lfm2(text: str, calls: _Calls) -> str:
    return _outside_calls(text, calls, _LFM2_START_RE, _lfm2_call)


def _lfm2_call(text: str, start: int, calls: _Calls) -> int:
    body_start = start + len(_LFM2_START)
    close = text.find(_LFM2_END, body_start)
    _pythonic_calls(text[body_start : len(text) if close < 0 else close], calls, close < 0)
    return len(text) if close < 0 else close + len(_LFM2_END)


def _pythonic_calls(body: str, calls: _Calls, truncated: bool) -> None:
    """`[f(a=1), g(b="x")]` read with `ast`: parsed, never run; only literal values pass."""
    source = body.strip()
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        if truncated:
            why = "the tool call was cut off before <|tool_call_end|>"
        else:
            detail = exc.msg if isinstance(exc, SyntaxError) else "too deeply nested"
            why = f"the tool call is not a Python-style call list like [name(arg=value)] ({detail})"
        m = _PYTHONIC_NAME_RE.match(source)
        calls.add(m.group(1) if m else "", {}, why, body)
        return
    node = tree.body
    items = node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]
    if not items:
        calls.add("", {}, "empty tool call", body)
    segment = _Segments(source)
    for item in items:
        raw = segment(item)
        try:
            name, arguments = _pythonic_call(item)
        except _Malformed as exc:
            calls.add(_dotted_name(item.func) or "" if isinstance(item, ast.Call) else "", {}, str(exc), raw)
            continue
        calls.add(name, arguments, None, raw)


class _Segments:
    """The source text of a node. `ast.get_source_segment` re-encodes the line for each offset
    and takes minutes on a long one-line call; node offsets are UTF-8 byte columns, so slice
    the encoded source once."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.data = source.encode()
        self.line_starts = [0]
        at = self.data.find(b"\n")
        while at >= 0:
            self.line_starts.append(at + 1)
            at = self.data.find(b"\n", at + 1)

    def __call__(self, node: ast.expr) -> str:
        end_line, end_col = node.end_lineno, node.end_col_offset
        if "\r" in self.source or end_line is None or end_col is None:  # offsets we cannot map
            return self.source
        start = self.line_starts[node.lineno - 1] + node.col_offset
        return self.data[start : self.line_starts[end_line - 1] + end_col].decode(errors="replace")


def _pythonic_call(node: ast.expr) -> tuple[str, dict[str, Any]]:
    if not isinstance(node, ast.Call):
        raise _Malformed("each tool call must look like name(arg=value, ...)")
    name = _dotted_name(node.func)
    if not name:
        raise _Malformed("the tool name must be a plain (or dotted) name")
    if node.args:
        raise _Malformed("positional arguments are not supported: write name(arg=value, ...)")
    arguments: dict[str, Any] = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise _Malformed("**arguments are not supported: write name(arg=value, ...)")
        try:
            arguments[keyword.arg] = _literal(keyword.value, 0)
        except _Malformed as exc:
            raise _Malformed(f"argument {keyword.arg!r}: {exc}") from None
    return name, arguments


def _dotted_name(node: ast.expr) -> str | None:
    """`f` or `Calendar.create_event` (llama.cpp's LFM2 grammar allows dotted names)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _literal(node: ast.expr, depth: int) -> Any:
    """A JSON-able value from a literal node; anything that would need evaluating is refused."""
    if depth > _MAX_DEPTH:
        raise _Malformed("the value is nested too deeply")
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, int, float))):
        return node.value  # bool is an int; bytes, complex and ... are refused below
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        number = node.operand.value if isinstance(node.operand, ast.Constant) else None
        if isinstance(number, (int, float)) and not isinstance(number, bool):  # -True is refused
            return -number if isinstance(node.op, ast.USub) else number
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item, depth + 1) for item in node.elts]
    if isinstance(node, ast.Dict):
        result = {}
        for key, value in zip(node.keys, node.values, strict=False):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise _Malformed("object keys must be strings")
            result[key.value] = _literal(value, depth + 1)
        return result
    if isinstance(node, ast.Name) and node.id in _NAME_LITERALS:
        return _NAME_LITERALS[node.id]
    raise _Malformed(f"{type(node).__name__} is not a literal value")


# --- Gemma 4: <|tool_call>call:NAME{key:<|"|>text<|"|>,n:3}<tool_call|> ---

_GEMMA_START = "<|tool_call>"
_GEMMA_END = "<tool_call|>"
_GEMMA_START_RE = re.compile(re.escape(_GEMMA_START))
_GEMMA_QUOTE = '<|"|>'
_GEMMA_NAME_RE = re.compile(r"call:([^{}\s<>]{1,200})(?=\{)")
# llama.cpp: a key is any run of characters but ':' and '}' (common/parsers/gemma4.cpp)
_GEMMA_KEY_RE = re.compile(r"([^:}]{1,200}):")
_JSON_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_JSON_LITERALS = (("true", True), ("false", False), ("null", None))


def _parse_gemma4(text: str, calls: _Calls) -> str:
    return _outside_calls(text, calls, _GEMMA_START_RE, _gemma4_call)


def _gemma4_call(text: str, start: int, calls: _Calls) -> int:
    body = start + len(_GEMMA_START)
    m = _GEMMA_NAME_RE.match(text, body)
    if m is None:
        end = _resume(text, body, _GEMMA_END)
        calls.add("", {}, "expected call:NAME{...} after <|tool_call>", text[start:end])
        return end
    name = m.group(1)
    try:
        arguments, pos = _gemma4_dict(text, m.end(), 0)
        pos = _skip_ws(text, pos)
        if text.startswith(_GEMMA_END, pos):
            pos += len(_GEMMA_END)
        elif pos < len(text):  # the arguments ended but something else follows
            raise _Malformed(f"expected {_GEMMA_END} after the arguments, not {text[pos : pos + 20]!r}")
    except _Malformed as exc:
        end = _resume(text, m.end(), _GEMMA_END)
        calls.add(name, {}, str(exc), text[start:end])
        return end
    calls.add(name, arguments, None, text[start:pos])
    return pos


def _gemma4_value(text: str, pos: int, depth: int) -> tuple[Any, int]:
    if depth > _MAX_DEPTH:
        raise _Malformed("the arguments are nested too deeply")
    pos = _skip_ws(text, pos)
    if text.startswith(_GEMMA_QUOTE, pos):
        return _gemma4_string(text, pos)
    if text.startswith("{", pos):
        return _gemma4_dict(text, pos, depth + 1)
    if text.startswith("[", pos):
        return _gemma4_list(text, pos, depth + 1)
    m = _JSON_NUMBER_RE.match(text, pos)
    if m:
        try:
            return read_json(m.group())[0], m.end()
        except InvalidJSON as exc:
            raise _Malformed(f"unreadable number: {exc}") from None
    for word, value in _JSON_LITERALS:
        if text.startswith(word, pos):
            return value, pos + len(word)
    if pos >= len(text):
        raise _Malformed("the tool call was cut off before it ended")
    raise _Malformed(
        f'expected a value (<|"|>text<|"|>, number, true, false, null, {{...}} or [...]), not {text[pos : pos + 20]!r}'
    )


def _gemma4_string(text: str, pos: int) -> tuple[str, int]:
    close = text.find(_GEMMA_QUOTE, pos + len(_GEMMA_QUOTE))
    if close < 0:
        raise _Malformed('a <|"|> string was never closed (the call was cut off?)')
    return text[pos + len(_GEMMA_QUOTE) : close], close + len(_GEMMA_QUOTE)


def _gemma4_dict(text: str, pos: int, depth: int) -> tuple[dict[str, Any], int]:
    result: dict[str, Any] = {}
    pos = _skip_ws(text, pos + 1)  # past "{"
    if text.startswith("}", pos):
        return result, pos + 1
    while True:
        if text.startswith(_GEMMA_QUOTE, pos):  # keys are bare in calls, quoted in declarations
            key, pos = _gemma4_string(text, pos)
            pos = _skip_ws(text, pos)
            if not text.startswith(":", pos):
                raise _Malformed(f"expected ':' after the key {key!r}")
            pos += 1
        else:
            m = _GEMMA_KEY_RE.match(text, pos)
            if m is None:
                raise _Malformed(f"expected key:value, not {text[pos : pos + 20]!r}")
            key, pos = m.group(1).strip(), m.end()
        result[key], pos = _gemma4_value(text, pos, depth)
        pos = _skip_ws(text, pos)
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)
        elif text.startswith("}", pos):
            return result, pos + 1
        else:
            raise _Malformed(f"expected ',' or '}}' in the arguments, not {text[pos : pos + 20]!r}")


def _gemma4_list(text: str, pos: int, depth: int) -> tuple[list[Any], int]:
    result: list[Any] = []
    pos = _skip_ws(text, pos + 1)  # past "["
    if text.startswith("]", pos):
        return result, pos + 1
    while True:
        value, pos = _gemma4_value(text, pos, depth)
        result.append(value)
        pos = _skip_ws(text, pos)
        if text.startswith(",", pos):
            pos += 1
        elif text.startswith("]", pos):
            return result, pos + 1
        else:
            raise _Malformed(f"expected ',' or ']' in a list, not {text[pos : pos + 20]!r}")


# --- Mistral: [TOOL_CALLS][{json}, ...] (Nemo) and [TOOL_CALLS]NAME[CALL_ID]id[ARGS]{json} ---

_MISTRAL_NAME_RE = re.compile(r"([^\[\]{}\s]{1,200})(?:\[CALL_ID\][^\[\]]{0,100})?\[ARGS\]")


def _parse_mistral(text: str, calls: _Calls) -> str:
    start = text.find(_MISTRAL_TAG)
    pos = start
    while pos < len(text) and not calls.full:
        at = _skip_ws(text, pos + len(_MISTRAL_TAG))
        following = text.find(_MISTRAL_TAG, at)
        end = len(text) if following < 0 else following
        segment = text[at:end]
        if segment[:1] in ("[", "{"):
            _json_calls(segment.strip(), calls)
        else:
            _mistral_call(text, pos, at, end, calls)
        pos = end
    return text[:start]


def _mistral_call(text: str, start: int, at: int, end: int, calls: _Calls) -> None:
    m = _MISTRAL_NAME_RE.match(text, at, end)
    if m is None:
        calls.add("", {}, "expected NAME[ARGS]{...} after [TOOL_CALLS]", text[start:end])
        return
    try:
        calls.add(m.group(1), _json_arguments(text[m.end() : end]), None, text[start:end])
    except _Malformed as exc:
        calls.add(m.group(1), {}, str(exc), text[start:end])


# --- gpt-oss (harmony): <|start|>assistant to=functions.NAME<|channel|>commentary
#     <|constrain|>json<|message|>{json}<|call|> ---

_HARMONY_CALL_RE = re.compile(r"to=functions\.([^\s<]{1,200})")
_HARMONY_END_RE = re.compile(r"<\|(?:end|return|call)\|>")


def _parse_harmony(text: str, calls: _Calls) -> str:
    content: list[str] = []
    for i, part in enumerate(text.split("<|start|>")):
        header, has_body, body = part.partition("<|message|>")
        m = _HARMONY_CALL_RE.search(header)
        if calls.full or not has_body or m is None:
            content.append(body if has_body else part if i == 0 else "")
            continue
        end = _HARMONY_END_RE.search(body)
        arguments = body[: end.start()] if end else body
        try:
            calls.add(m.group(1), _json_arguments(arguments), None, part)
        except _Malformed as exc:
            calls.add(m.group(1), {}, str(exc), part)
    return "".join(content)


_MARKERS: tuple[tuple[str, Callable[[str, _Calls], str]], ...] = (
    ("<tool_call>", _parse_tagged),
    ("<function=", _parse_tagged),
    (_LFM2_START, _parse_lfm2),
    (_GEMMA_START, _parse_gemma4),
    (_MISTRAL_TAG, _parse_mistral),
    ("to=functions.", _parse_harmony),
    (_PYTHON_TAG, _parse_python_tag),
)
