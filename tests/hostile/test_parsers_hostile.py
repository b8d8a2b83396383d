"""Tool-call parsers given JSON that Python's json module cannot hold: an integer of more
digits than int() converts (4300), nesting past the recursion limit. Each is an invalid call
whose error says why (the model sees it and can write it again), never an exception."""

from __future__ import annotations

import pytest

from localagent.engines.native_calls import call_from_object, parse_native
from localagent.engines.toolcalls import parse_json_reply

BIG = "1" * 5000  # past sys.get_int_max_str_digits() (4300)
DEEP = "[" * 100_000 + "]" * 100_000  # past the recursion limit


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            '<tool_call>{"name": "read_file", "arguments": {"path": "a", "start_line": %s}}</tool_call>' % BIG,
            id="hermes",
        ),
        pytest.param(
            '{"name": "read_file", "parameters": {"path": "a", "start_line": %s}}' % BIG, id="llama-bare-json"
        ),
        pytest.param(
            '<|python_tag|>{"name": "read_file", "parameters": {"start_line": %s}}' % BIG, id="llama-python-tag"
        ),
        pytest.param('<function=read_file>{"path": "a", "start_line": %s}</function>' % BIG, id="llama-function-tag"),
        pytest.param('[TOOL_CALLS]read_file[ARGS]{"path": "a", "start_line": %s}' % BIG, id="mistral-args"),
        pytest.param('[TOOL_CALLS][{"name": "read_file", "arguments": {"start_line": %s}}]' % BIG, id="mistral-list"),
        pytest.param(
            '<|start|>assistant to=functions.read_file<|channel|>commentary<|message|>{"start_line": %s}<|call|>' % BIG,
            id="gpt-oss",
        ),
        pytest.param('<|tool_call>call:read_file{path:<|"|>a<|"|>,start_line:%s}<tool_call|>' % BIG, id="gemma4"),
        pytest.param(
            '<tool_call>{"name": "read_file", "arguments": "{\\"start_line\\": %s}"}</tool_call>' % BIG,
            id="arguments-as-text",
        ),
    ],
)
def test_a_5000_digit_integer_is_an_invalid_call(text: str) -> None:
    answer, (call,) = parse_native(text)
    assert call.name == "read_file" and not call.valid and call.arguments == {}
    assert "more than 4300 digits" in call.error


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('<tool_call>{"name": "read_file", "arguments": {"path": %s}}</tool_call>' % DEEP, id="hermes"),
        pytest.param('[TOOL_CALLS]read_file[ARGS]{"path": %s}' % DEEP, id="mistral-args"),
        pytest.param('<function=read_file>{"path": %s}</function>' % DEEP, id="llama-function-tag"),
    ],
)
def test_deep_nesting_is_an_invalid_call(text: str) -> None:
    _, (call,) = parse_native(text)
    assert not call.valid and "nested too deeply" in call.error


def test_a_big_integer_the_model_wrote_as_a_string_parameter_stays_text() -> None:
    # Qwen's XML writes bare text: with no schema a number too long for int() is kept as text
    _, (call,) = parse_native(
        f"<tool_call><function=read_file><parameter=start_line>\n{BIG}\n</parameter></function></tool_call>"
    )
    assert call.valid and call.arguments == {"start_line": BIG}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (
            '{"tool": "read_file", "arguments": {"path": "a", "start_line": %s}}' % BIG,
            "a number has more than 4300 digits",
        ),
        ('{"answer": %s}' % DEEP, "nested too deeply"),
        ('{"tool": "read_file", "arguments": {"path": %s}}' % DEEP, "nested too deeply"),
    ],
)
def test_json_mode_reply_python_cannot_hold_is_an_invalid_call(text: str, why: str) -> None:
    answer, (call,) = parse_json_reply(text, "call_1")
    assert answer == "" and not call.valid and call.id == "call_1"
    assert call.error == f"the reply is not valid JSON ({why})"
    assert call.name == "read_file" or why == "nested too deeply"


def test_hosted_arguments_with_a_5000_digit_integer_are_an_invalid_call() -> None:
    raw = '{"path": "a", "start_line": %s}' % BIG
    call = call_from_object({"name": "read_file", "arguments": raw}, "call_x", raw)
    assert (call.name, call.id, call.valid, call.raw) == ("read_file", "call_x", False, raw)
    assert call.error == "the arguments are not valid JSON (a number has more than 4300 digits)"


def test_more_than_64_calls_in_one_reply_are_capped() -> None:
    text = "".join('<tool_call>{"name": "list_directory", "arguments": {}}</tool_call>' for _ in range(500))
    _, calls = parse_native(text)
    assert len(calls) == 65 and all(c.valid for c in calls[:64])
    assert calls[64].error == "more than 64 tool calls in one reply; this one and the rest were not run"
