"""Tool calls as text: the `json` mode's schema, instructions and parser, and the shape in which
chat templates are given tools, calls and results (native mode). What a model writes in its own
format is read by native_calls.py.

Pure functions. A reply that cannot be parsed becomes a ToolCall with `error` set (an invalid
call the loop reports back to the model), never an exception.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from localagent.records import ArgumentChoice, Message, ToolCall, ToolSpec

# --- json mode -------------------------------------------------------------------------------


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with local `#/$defs/...` references replaced by their targets, so it can be
    embedded inside another schema (pydantic puts nested models under `$defs`)."""
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}

    def visit(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [visit(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.split("/")[-1] in defs:
            name = ref.split("/")[-1]
            if name in seen:  # a recursive model: stop at an unconstrained object
                return {"type": "object"}
            return visit(defs[name], (*seen, name))
        return {k: visit(v, seen) for k, v in node.items() if k not in ("$defs", "definitions")}

    return visit(copy.deepcopy(schema), ())


def json_mode_schema(tools: Sequence[ToolSpec], choices: Sequence[ArgumentChoice] = ()) -> dict[str, Any]:
    """One schema for every reply in `json` mode: a call of one of the tools, or an answer.
    `choices` narrow string arguments to their values (pathchoices.py); a tool left with
    nothing a required argument may be is not offered in this reply."""
    options: list[dict[str, Any]] = []
    for tool in tools:
        arguments = _object_schema(inline_refs(tool.parameters))
        held = [c for c in choices if c.tool == tool.name and c.argument in arguments.get("properties", {})]
        if held:
            narrowed = _narrowed(arguments, held)
            if narrowed is None:
                continue
            arguments = narrowed
        options.append(
            {
                "type": "object",
                "properties": {"tool": {"const": tool.name}, "arguments": arguments},
                "required": ["tool", "arguments"],
            }
        )
    options.append({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]})
    return {"anyOf": options}


def _narrowed(arguments: dict[str, Any], held: Sequence[ArgumentChoice]) -> dict[str, Any] | None:
    """The arguments' schema with each held argument replaced by its choices (its description
    kept); None when a required argument can be nothing. An optional one that can be nothing
    is dropped."""
    properties = dict(arguments["properties"])
    required = set(arguments.get("required", ()))
    for choice in held:
        options: list[dict[str, Any]] = []
        if choice.values:
            options.append({"type": "string", "enum": list(choice.values)})
        if choice.pattern is not None:
            options.append({"type": "string", "pattern": choice.pattern})
        if not options:
            if choice.argument in required:
                return None
            del properties[choice.argument]
            continue
        described = {k: v for k, v in properties[choice.argument].items() if k in ("description", "title")}
        properties[choice.argument] = {**described, **(options[0] if len(options) == 1 else {"anyOf": options})}
    return {**arguments, "properties": properties}


def _object_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    # a tool without parameters still takes `{}`; a bare {"type": "object"} would admit any keys
    if not parameters.get("properties"):
        return {"type": "object", "properties": {}}
    return parameters


def json_mode_instructions(tools: Sequence[ToolSpec]) -> str:
    """The short, stable system-prompt addition that tells the model the tools and the format.
    The grammar enforces the format; this text tells the model what the fields mean."""
    lines = ["You can use these tools:"]
    for tool in tools:
        description = tool.description.strip().splitlines()[0] if tool.description.strip() else ""
        lines.append(f"- {tool.name}({_signature(tool.parameters)})" + (f": {description}" if description else ""))
    lines += [
        "",
        "Reply with exactly one JSON object. To call a tool:",
        '{"tool": "<tool name>", "arguments": {<arguments>}}',
        "You will get the tool's result and can call another tool. When you are done:",
        '{"answer": "<your final answer>"}',
    ]
    return "\n".join(lines)


def _signature(parameters: dict[str, Any]) -> str:
    schema = inline_refs(parameters)
    required = set(schema.get("required", ()))
    parts = []
    for name, prop in schema.get("properties", {}).items():
        optional = "" if name in required else "?"
        parts.append(f"{name}{optional}: {_type_name(prop)}")
    return ", ".join(parts)


def _type_name(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    if "anyOf" in prop:
        names = [_type_name(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " | ".join(names) or "null"
    kind = prop.get("type", "any")
    if isinstance(kind, list):
        return " | ".join(k for k in kind if k != "null")
    if kind == "array" and isinstance(prop.get("items"), dict):
        return f"array of {_type_name(prop['items'])}"
    return str(kind)


def render_json_call(call: ToolCall) -> str:
    """An assistant's tool call as the model wrote it in `json` mode (its raw text when it came
    from this engine, so the next prompt reproduces the generated tokens and the cache holds)."""
    if call.raw:
        return call.raw
    return json.dumps({"tool": call.name, "arguments": call.arguments}, ensure_ascii=False)


def render_json_answer(text: str) -> str:
    return json.dumps({"answer": text}, ensure_ascii=False)


def json_mode_messages(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """The conversation as plain system/user/assistant messages for any chat template: the
    tool instructions appended to the system message, the assistant's calls and answers as the
    JSON it wrote, and tool results as user messages (consecutive results merged, since some
    templates insist that user and assistant alternate)."""
    instructions = json_mode_instructions(tools)
    out: list[dict[str, Any]] = []
    if not messages or messages[0].role != "system":
        out.append({"role": "system", "content": instructions})
    after_tool = False
    for i, m in enumerate(messages):
        if m.role == "system" and i == 0:
            out.append({"role": "system", "content": f"{m.content}\n\n{instructions}" if m.content else instructions})
        elif m.role == "assistant":
            content = (
                "\n".join(render_json_call(c) for c in m.tool_calls) if m.tool_calls else render_json_answer(m.content)
            )
            out.append({"role": "assistant", "content": content})
        elif m.role == "tool":
            result = f"Result of {m.name}:\n{m.content}" if m.name else f"Tool result:\n{m.content}"
            if after_tool:
                out[-1]["content"] += "\n\n" + result
            else:
                out.append({"role": "user", "content": result})
        else:
            out.append({"role": m.role, "content": m.content})
        after_tool = m.role == "tool"
    return out


def parse_json_reply(text: str, call_id: str, *, truncated: bool = False) -> tuple[str, tuple[ToolCall, ...]]:
    """A `json`-mode reply -> (answer text, tool calls). Exactly one of the two is non-empty."""
    try:
        # strict=False: small models put raw newlines inside answer strings; the meaning is plain
        obj, _ = read_json(text, strict=False)
    except InvalidJSON as exc:
        return "", (_malformed(text, call_id, exc, truncated),)
    if isinstance(obj, dict) and isinstance(obj.get("tool"), str):
        arguments = obj.get("arguments", {})
        if not isinstance(arguments, dict):
            return "", (ToolCall(obj["tool"], {}, call_id, "'arguments' must be a JSON object", text),)
        return "", (ToolCall(obj["tool"], arguments, call_id, None, text),)
    if isinstance(obj, dict) and isinstance(obj.get("answer"), str):
        return obj["answer"], ()
    return "", (ToolCall("", {}, call_id, 'expected {"tool": ..., "arguments": {...}} or {"answer": "..."}', text),)


def _malformed(text: str, call_id: str, exc: InvalidJSON, truncated: bool) -> ToolCall:
    if truncated:
        why = "the reply was cut off at max_tokens before its JSON was complete"
    else:
        why = f"the reply is not valid JSON ({exc})"
    return ToolCall(guess_name(text), {}, call_id, why, text)


class InvalidJSON(Exception):
    """JSON that cannot be read; the message says why, in words for the model."""


def read_json(text: str, start: int | None = None, *, strict: bool = True) -> tuple[Any, int]:
    """The JSON in `text` -> (value, end): all of it (whitespace around allowed), or with
    `start` the one value that begins there. The one place a model's JSON is read (native
    parsers too): every failure is InvalidJSON, because besides JSONDecodeError Python raises
    a plain ValueError for an integer of more than 4300 digits (its int-conversion limit) and
    RecursionError for deep nesting, and a reply must never kill the run."""
    decoder = json.JSONDecoder(strict=strict)
    try:
        return (decoder.decode(text), len(text)) if start is None else decoder.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise InvalidJSON(f"{exc.msg} at character {exc.pos - (start or 0)}") from None
    except RecursionError:
        raise InvalidJSON("nested too deeply") from None
    except ValueError:  # JSONDecodeError is one, so this is the int-digits limit
        raise InvalidJSON(f"a number has more than {sys.get_int_max_str_digits()} digits") from None


_NAME_RE = re.compile(r'"(?:name|tool)"\s*:\s*"([^"\\]{1,200})"')


def guess_name(text: str) -> str:
    """The tool name of a call whose JSON is broken, when it can be read (for error messages
    and for spotting the same failing call repeated)."""
    m = _NAME_RE.search(text)
    return m.group(1) if m else ""


# --- native mode -----------------------------------------------------------------------------

_TEMPLATE_TOOLS_RE = re.compile(r"\btools\b")


def template_handles_tools(template: str | None) -> bool:
    """True when a chat template renders a `tools` list (Qwen 2.5/3, Llama 3.x, Hermes...)."""
    return bool(template) and bool(_TEMPLATE_TOOLS_RE.search(template or ""))


def openai_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Tools in the OpenAI / Hugging Face chat-template shape."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages in the shape Hugging Face chat templates expect (arguments as objects, not
    JSON strings: Qwen and Llama templates apply `tojson` to them)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in m.tool_calls
            ]
        if m.role == "tool":
            item["tool_call_id"] = m.tool_call_id
            item["name"] = m.name
        if m.reasoning:
            # Qwen3/3.5 and SmolLM3 templates show the thinking of the turns after the last
            # user message again: what the model wrote stays what it reads
            item["reasoning_content"] = m.reasoning
        out.append(item)
    return out
