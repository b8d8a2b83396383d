"""Tool calls as text: the json-mode schema and messages, and the parsers for every format."""

from __future__ import annotations

import json

import pytest

from localagent.engines import native_calls, toolcalls
from localagent.records import Message, ToolCall, ToolSpec

READ = ToolSpec(
    "read_file",
    "Read a text file.\nLonger details the prompt leaves out.",
    {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "start_line": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        },
        "required": ["path"],
    },
)
LIST = ToolSpec("list_directory", "List a directory.", {"type": "object", "properties": {}})


# --- json mode ---


def test_schema_offers_each_tool_or_an_answer():
    schema = toolcalls.json_mode_schema([READ, LIST])
    options = schema["anyOf"]
    assert [o["properties"].get("tool") for o in options] == [{"const": "read_file"}, {"const": "list_directory"}, None]
    assert options[0]["properties"]["arguments"]["required"] == ["path"]
    assert options[1]["properties"]["arguments"] == {"type": "object", "properties": {}}
    assert options[2] == {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def test_inline_refs_resolves_pydantic_defs():
    schema = {
        "$defs": {"Range": {"type": "object", "properties": {"start": {"type": "integer"}}}},
        "type": "object",
        "properties": {
            "range": {"$ref": "#/$defs/Range"},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Range"}},
        },
    }
    out = toolcalls.inline_refs(schema)
    assert "$defs" not in out
    assert out["properties"]["range"] == {"type": "object", "properties": {"start": {"type": "integer"}}}
    assert out["properties"]["items"]["items"]["properties"]["start"] == {"type": "integer"}
    assert "$defs" in schema  # the input is not modified


def test_inline_refs_stops_at_recursion():
    schema = {
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    out = toolcalls.inline_refs(schema)
    assert out["properties"]["child"] == {"type": "object"}


def test_instructions_list_signatures_and_the_two_reply_forms():
    text = toolcalls.json_mode_instructions([READ, LIST])
    assert "- read_file(path: string, start_line?: integer): Read a text file." in text
    assert "Longer details" not in text
    assert "- list_directory(): List a directory." in text
    assert '{"tool": "<tool name>", "arguments": {<arguments>}}' in text
    assert '{"answer": "<your final answer>"}' in text


def test_json_mode_messages_render_calls_and_results_append_only():
    call = ToolCall(
        "read_file", {"path": "a.txt"}, "call_1", raw='{"tool": "read_file", "arguments": {"path": "a.txt"}}'
    )
    history = [
        Message("system", "Be brief."),
        Message("user", "What is in a.txt?"),
        Message("assistant", "", (call, ToolCall("list_directory", {}, "call_2"))),
        Message("tool", "hello", tool_call_id="call_1", name="read_file"),
        Message("tool", "a.txt", tool_call_id="call_2", name="list_directory"),
        Message("assistant", "It says hello."),
    ]
    out = toolcalls.json_mode_messages(history, [READ])
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user", "assistant"]
    assert out[0]["content"].startswith("Be brief.\n\nYou can use these tools:")
    assert out[2]["content"] == call.raw + '\n{"tool": "list_directory", "arguments": {}}'
    assert out[3]["content"] == "Result of read_file:\nhello\n\nResult of list_directory:\na.txt"
    assert json.loads(out[4]["content"]) == {"answer": "It says hello."}
    # at every step boundary, the longer conversation renders the earlier messages as before
    assert toolcalls.json_mode_messages(history[:5], [READ]) == out[:4]
    assert toolcalls.json_mode_messages(history[:2], [READ]) == out[:2]


def test_json_mode_messages_add_a_system_message_when_there_is_none():
    out = toolcalls.json_mode_messages([Message("user", "hi")], [READ])
    assert out[0]["role"] == "system" and "read_file" in out[0]["content"]
    assert out[1] == {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    "text, answer, name, arguments, error",
    [
        ('{"tool": "read_file", "arguments": {"path": "a"}}', "", "read_file", {"path": "a"}, None),
        ('{"answer": "done"}', "done", None, None, None),
        ('{"answer": "two\nlines"}', "two\nlines", None, None, None),
        ('{"tool": "read_file", "arguments": {"path": "a', "", "read_file", {}, "not valid JSON"),
        ('{"tool": "read_file", "arguments": []}', "", "read_file", {}, "must be a JSON object"),
        ('{"something": 1}', "", "", {}, "expected"),
        ("", "", "", {}, "not valid JSON"),
    ],
)
def test_parse_json_reply(text, answer, name, arguments, error):
    got_answer, calls = toolcalls.parse_json_reply(text, "call_7")
    assert got_answer == answer
    if name is None:
        assert calls == ()
        return
    (call,) = calls
    assert (call.name, call.arguments, call.id, call.raw) == (name, arguments, "call_7", text)
    if error is None:
        assert call.valid
    else:
        assert error in call.error


def test_parse_json_reply_says_when_max_tokens_cut_it():
    _, (call,) = toolcalls.parse_json_reply('{"answer": "a long', "c", truncated=True)
    assert "cut off at max_tokens" in call.error


# --- native mode ---


@pytest.mark.parametrize(
    "template, handles",
    [
        ("{% for m in messages %}{{ m.content }}{% endfor %}", False),
        ("{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}", True),
        (None, False),
        ("", False),
    ],
)
def test_template_handles_tools(template, handles):
    assert toolcalls.template_handles_tools(template) is handles


def test_template_messages_keep_arguments_as_objects():
    history = [
        Message("assistant", "", (ToolCall("read_file", {"path": "a"}, "call_1"),)),
        Message("tool", "text", tool_call_id="call_1", name="read_file"),
    ]
    out = toolcalls.template_messages(history)
    assert out[0]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": {"path": "a"}}}
    ]
    assert out[1] == {"role": "tool", "content": "text", "tool_call_id": "call_1", "name": "read_file"}
    assert toolcalls.openai_tools([READ])[0]["function"]["parameters"] is READ.parameters


NATIVE_CASES = [
    # Hermes / Qwen 2.5
    (
        '<tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n</tool_call>',
        "",
        [("read_file", {"path": "a.txt"})],
    ),
    # text before the call, two calls
    (
        'Let me look.\n<tool_call>\n{"name": "read_file", "arguments": {"path": "a"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "list_directory", "arguments": {}}\n</tool_call>',
        "Let me look.",
        [("read_file", {"path": "a"}), ("list_directory", {})],
    ),
    # arguments as a JSON string (OpenAI style)
    (
        '<tool_call>{"name": "read_file", "arguments": "{\\"path\\": \\"a\\"}"}</tool_call>',
        "",
        [("read_file", {"path": "a"})],
    ),
    # Llama 3.x bare JSON with "parameters"
    ('{"name": "read_file", "parameters": {"path": "a"}}', "", [("read_file", {"path": "a"})]),
    # Llama 3.2 with "type": "function"
    (
        '{"type": "function", "name": "list_directory", "parameters": {"path": "."}}',
        "",
        [("list_directory", {"path": "."})],
    ),
    # Llama 3.1 python tag, several calls separated by ;
    (
        '<|python_tag|>{"name": "read_file", "parameters": {"path": "a"}}; {"name": "read_file", "parameters": {"path": "b"}}',
        "",
        [("read_file", {"path": "a"}), ("read_file", {"path": "b"})],
    ),
    # a JSON list of calls, in a code fence
    (
        '```json\n[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]\n```',
        "",
        [("a", {}), ("b", {"x": 1})],
    ),
    # OpenAI shape
    ('{"type": "function", "function": {"name": "a", "arguments": {"k": true}}}', "", [("a", {"k": True})]),
    # Mistral
    ('[TOOL_CALLS][{"name": "a", "arguments": {"x": 2}}]', "", [("a", {"x": 2})]),
    # Llama 3.1 custom function tag
    ('<function=read_file>{"path": "a"}</function>', "", [("read_file", {"path": "a"})]),
    # Qwen3-Coder XML parameters inside <tool_call>
    (
        "<tool_call>\n<function=read_file>\n<parameter=path>\nsrc/app.py\n</parameter>\n<parameter=start_line>\n3\n</parameter>\n</function>\n</tool_call>",
        "",
        [("read_file", {"path": "src/app.py", "start_line": 3})],
    ),
    # Qwen3 thinking is not parsed for calls
    ('<think>maybe <tool_call>{"name": "x"}</tool_call></think>The answer is 4.', "The answer is 4.", []),
    # plain answers, including JSON that is not a call
    ("The file says hello.", "The file says hello.", []),
    ('{"result": 4}', '{"result": 4}', []),
    ("", "", []),
]


@pytest.mark.parametrize("text, answer, expected", NATIVE_CASES)
def test_parse_native(text, answer, expected):
    got_answer, calls = native_calls.parse_native(text, id_prefix="call_3_")
    assert got_answer == answer
    assert [(c.name, c.arguments) for c in calls] == expected
    assert all(c.valid for c in calls)
    assert [c.id for c in calls] == [f"call_3_{i + 1}" for i in range(len(expected))]


@pytest.mark.parametrize(
    "text, name, error",
    [
        ('<tool_call>\n{"name": "read_file", "arguments": {"path": "a.t', "read_file", "not valid JSON"),  # cut off
        ('<tool_call>{"name": "read_file", "arguments": {"path": }}</tool_call>', "read_file", "not valid JSON"),
        ('<tool_call>{"arguments": {}}</tool_call>', "", "no 'name'"),
        ('<tool_call>{"name": "a", "arguments": "{not json"}</tool_call>', "a", "arguments are not valid JSON"),
        ('<tool_call>{"name": "a", "arguments": [1]}</tool_call>', "a", "must be a JSON object"),
        ('<tool_call>"read_file"</tool_call>', "", "must be a JSON object"),
        ('{"name": "read_file", "parameters": {"path": "a"', "read_file", "not valid JSON"),
        ('<function=read_file>{"path": </function>', "read_file", "not valid JSON"),
    ],
)
def test_parse_native_reports_malformed_calls(text, name, error):
    _, calls = native_calls.parse_native(text)
    assert len(calls) == 1
    (call,) = calls
    assert not call.valid
    assert call.name == name
    assert error in call.error
    assert call.raw


def test_parse_native_reports_an_empty_block():
    _, (call,) = native_calls.parse_native("<tool_call>\n</tool_call>")
    assert call.error == "empty tool call"


def test_parse_native_keeps_good_calls_next_to_a_bad_one():
    text = '<tool_call>{"name": "a", "arguments": {}}</tool_call>\n<tool_call>{"name": "b", "arguments": {</tool_call>'
    _, calls = native_calls.parse_native(text)
    assert [(c.name, c.valid) for c in calls] == [("a", True), ("b", False)]
