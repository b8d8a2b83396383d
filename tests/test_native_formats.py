"""Native tool-call formats and reasoning blocks of the small-model families, checked against
llama.cpp's own reference cases: tests/test-chat.cpp as shipped in llama-cpp-python 0.3.36
(vendor/llama.cpp). Each row names the line of the `tst.test(` it transcribes.

A row is what the model wrote, whether the prompt opened a reasoning block (the template's
generation prompt ended in `<think>\\n`), and what llama.cpp parses out of it: content, reasoning
and calls (name + arguments). Two conventions of ours apply to every row: content and reasoning
are compared stripped (llama.cpp keeps e.g. the "\\n" before a `<tool_call>`), and call ids are
ours, not the model's (Mistral's `[CALL_ID]`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from localagent.engines.native_calls import parse_native
from localagent.engines.reasoning import Thought, prompt_opens_thinking, split_reasoning
from localagent.records import ToolSpec


def _tool(name: str, properties: dict[str, Any], required: tuple[str, ...] = ()) -> ToolSpec:
    return ToolSpec(name, "", {"type": "object", "properties": properties, "required": list(required)})


INT, NUM, STR, BOOL = {"type": "integer"}, {"type": "number"}, {"type": "string"}, {"type": "boolean"}

# the tools of test-chat.cpp (lines 425-951), all offered in every row
TOOLS = (
    _tool("special_function", {"arg1": INT}, ("arg1",)),
    _tool("special_function_with_opt", {"arg1": INT, "arg2": INT}, ("arg1",)),
    _tool("empty_args", {}),
    ToolSpec("empty_args_no_props", "", {"type": "object"}),
    _tool("python", {"code": STR}, ("code",)),
    _tool("html", {"markup": STR}, ("markup",)),
    _tool("get_time", {"city": STR}, ("city",)),
    _tool("get_weather", {"city": STR}, ("city",)),
    _tool("todo_list", {"todos": {"type": "array"}}, ("todos",)),
    _tool("edit", {"filename": STR, "oldString": STR, "newString": STR}),
    _tool("manage_todo_list", {"todos": {"type": "array"}}),
    _tool("run_in_terminal", {"command": STR}, ("command",)),
    _tool("amount", {"orig": NUM}),
    _tool("toggle", {"enabled": BOOL}),
    _tool("set_nullable", {"value": {"type": "null"}}),
    _tool("set_config", {"config": {"type": "object"}}),
    _tool(
        "Calendar.create_event",
        {"title": STR, "participants": {"type": "array", "items": STR}, "metadata": {"type": "object"}},
    ),
    _tool("set_nullable_str", {"name": {"type": ["string", "null"]}}),
    _tool("set_nullable_str_nf", {"name": {"type": ["null", "string"]}}),
    _tool("set_nullable_int", {"count": {"type": ["integer", "null"]}}),
    _tool("set_union", {"value": {"type": ["string", "object"]}, "amount": {"type": ["string", "integer"]}}),
    _tool("set_unit", {"unit": {"enum": ["celsius", "fahrenheit"]}}),
    _tool("tool_2req_4opt", {"req1": STR, "req2": INT, "opt1": STR, "opt2": INT, "opt3": STR, "opt4": INT}),
    _tool(
        "tool_2req_5opt", {"req1": STR, "req2": INT, "opt1": STR, "opt2": INT, "opt3": STR, "opt4": INT, "opt5": STR}
    ),
)


@dataclass(frozen=True)
class Case:
    output: str
    content: str = ""
    reasoning: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    opened: bool = False  # the prompt ended inside a think block


HELLO = "Hello, world!\nWhat's up?"
THINKING = "I'm\nthinking"
CALL_1 = [("special_function", {"arg1": 1})]
PWD = [("run_in_terminal", {"command": "pwd"})]
QWEN_CALL_1 = "<tool_call>\n<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n</tool_call>"
QWEN_PWD = "<tool_call>\n<function=run_in_terminal>\n<parameter=command>\npwd\n</parameter>\n</function>\n</tool_call>"
QWEN_TWO = (
    "<tool_call>\n<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n</tool_call>\n"
    "<tool_call>\n<function=special_function_with_opt>\n<parameter=arg1>\n1\n</parameter>\n"
    "<parameter=arg2>\n2\n</parameter>\n</function>\n</tool_call>"
)
TWO = [("special_function", {"arg1": 1}), ("special_function_with_opt", {"arg1": 1, "arg2": 2})]
PY_HELLO = 'def hello():\n    print("Hello, world!")\n\nhello()'


def _xml(name: str, *params: tuple[str, str]) -> str:
    body = "".join(f"<parameter={p}>\n{v}\n</parameter>\n" for p, v in params)
    return f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>"


QWEN35 = [
    # Qwen3.5-4B.jinja: thinking on ends the prompt with "<think>\n" (opened); off with a closed empty block
    Case("I'm\nthinking\n</think>\n\nHello, world!\nWhat's up?", HELLO, THINKING, opened=True),  # test-chat.cpp:2150
    Case(QWEN_CALL_1, calls=CALL_1),  # test-chat.cpp:2162
    Case("I'm\nthinking\n</think>\n\n" + QWEN_CALL_1, "", THINKING, CALL_1, opened=True),  # test-chat.cpp:2174
    Case(QWEN_TWO, calls=TWO),  # test-chat.cpp:2186
    Case(_xml("python", ("code", PY_HELLO)), calls=[("python", {"code": PY_HELLO})]),  # test-chat.cpp:2210
    Case(  # test-chat.cpp:2231
        _xml("edit", ("filename", "foo.c"), ("oldString", "#iclunde"), ("newString", "#include")),
        calls=[("edit", {"filename": "foo.c", "oldString": "#iclunde", "newString": "#include"})],
    ),
    Case(  # test-chat.cpp:2260 -- a value ending in a newline keeps it
        _xml("edit", ("filename", "foo.c"), ("oldString", "#iclunde"), ("newString", "#include\n")),
        calls=[("edit", {"filename": "foo.c", "oldString": "#iclunde", "newString": "#include\n"})],
    ),
    Case(  # test-chat.cpp:2287 -- leading indentation kept
        _xml("python", ("code", '    print("Hello, world!")')),
        calls=[("python", {"code": '    print("Hello, world!")'})],
    ),
    Case(  # test-chat.cpp:2305 -- structured output is content, not a call
        'I need to output the invoice details in JSON\n</think>\n\n{"amount": 123.45, "date": "2025-12-03"}',
        '{"amount": 123.45, "date": "2025-12-03"}',
        "I need to output the invoice details in JSON",
        opened=True,
    ),
    Case(QWEN_PWD, calls=PWD, opened=True),  # test-chat.cpp:2317 -- a call ends the open think block
    Case(
        "Need to inspect the current directory.\n" + QWEN_PWD,
        "",
        "Need to inspect the current directory.",
        PWD,
        opened=True,
    ),  # test-chat.cpp:2334
    Case(
        "<tool_call>\n<function=empty_args>\n</function>\n</tool_call>", calls=[("empty_args", {})]
    ),  # test-chat.cpp:2353
    Case(
        "<tool_call>\n<function=empty_args_no_props>\n</function>\n</tool_call>", calls=[("empty_args_no_props", {})]
    ),  # test-chat.cpp:2365
    # test-chat.cpp:2377 -- llama.cpp's reasoning is "<think>\n\n" (the re-opened tag); ours drops the tag
    Case("<think>\n\n</think>\n\n" + QWEN_CALL_1, calls=CALL_1, opened=True),
    Case("</think>\n\n" + QWEN_CALL_1, calls=CALL_1, opened=True),  # test-chat.cpp:2392
    Case("</think>\n\n" + QWEN_PWD, calls=PWD, opened=True),  # test-chat.cpp:2407
    Case(
        "</think>\n\nLet me inspect the current directory.\n" + QWEN_PWD,
        "Let me inspect the current directory.",
        calls=PWD,
        opened=True,
    ),  # test-chat.cpp:2426
    Case(
        "</think>\n\nLet me inspect the current directory.\n" + QWEN_PWD,
        "Let me inspect the current directory.",
        calls=PWD,
        opened=True,
    ),  # test-chat.cpp:2447
    Case(  # test-chat.cpp:2469
        "I should inspect the directory.\n</think>\n\nLet me inspect it now.\n" + QWEN_PWD,
        "Let me inspect it now.",
        "I should inspect the directory.",
        PWD,
        opened=True,
    ),
    Case(
        "I need to run a terminal command.\n</think>\n\n" + QWEN_PWD,
        "",
        "I need to run a terminal command.",
        PWD,
        opened=True,
    ),  # test-chat.cpp:2531
    Case(  # test-chat.cpp:2553
        "I need to run a terminal command.\n</think>\n\nLet me inspect the current directory.\n" + QWEN_PWD,
        "Let me inspect the current directory.",
        "I need to run a terminal command.",
        PWD,
        opened=True,
    ),
    Case("</think>\n\n" + QWEN_PWD, calls=PWD, opened=True),  # test-chat.cpp:2578
]

QWEN3_CODER = [
    Case(HELLO, HELLO),  # test-chat.cpp:3554
    Case(QWEN_CALL_1, calls=CALL_1),  # test-chat.cpp:3556
    # some models leave out the opening <tool_call>
    Case(
        "<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n</tool_call>", calls=CALL_1
    ),  # test-chat.cpp:3570
    Case(
        "Let me call it.\n<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n</tool_call>",
        "Let me call it.",
        calls=CALL_1,
    ),  # test-chat.cpp:3581
    Case(QWEN_TWO.removeprefix("<tool_call>\n"), calls=TWO),  # test-chat.cpp:3597
    Case(QWEN_TWO, calls=TWO),  # test-chat.cpp:3624
    Case(_xml("python", ("code", PY_HELLO)), calls=[("python", {"code": PY_HELLO})]),  # test-chat.cpp:3654
    Case(_xml("python", ("code", "格")), calls=[("python", {"code": "格"})]),  # test-chat.cpp:3675
    Case(  # test-chat.cpp:3693
        _xml("html", ("markup", "<html>\n <head>\n  <title>Hello!</title>\n </head>\n</html>")),
        calls=[("html", {"markup": "<html>\n <head>\n  <title>Hello!</title>\n </head>\n</html>"})],
    ),
    Case(  # test-chat.cpp:3715 -- an array parameter is JSON
        _xml(
            "todo_list",
            ("todos", '[{"item": "Check stuff", "selected": false}, {"item": "Prepare stuff", "selected": true}]'),
        ),
        calls=[
            (
                "todo_list",
                {"todos": [{"item": "Check stuff", "selected": False}, {"item": "Prepare stuff", "selected": True}]},
            )
        ],
    ),
    Case(  # test-chat.cpp:3733
        _xml("edit", ("newString", "#include"), ("filename", "foo.c"), ("oldString", "#iclunde")),
        calls=[("edit", {"newString": "#include", "filename": "foo.c", "oldString": "#iclunde"})],
    ),
    Case(  # test-chat.cpp:3748
        _xml("tool_2req_4opt", ("req2", "42"), ("req1", "hello"), ("opt2", "200")),
        calls=[("tool_2req_4opt", {"req2": 42, "req1": "hello", "opt2": 200})],
    ),
    Case(  # test-chat.cpp:3764
        _xml("tool_2req_4opt", ("req1", "hello"), ("req2", "42"), ("opt4", "100"), ("opt2", "200")),
        calls=[("tool_2req_4opt", {"req1": "hello", "req2": 42, "opt4": 100, "opt2": 200})],
    ),
    Case(  # test-chat.cpp:3781
        _xml(
            "tool_2req_5opt", ("req1", "world"), ("req2", "7"), ("opt5", "last"), ("opt3", "middle"), ("opt1", "first")
        ),
        calls=[("tool_2req_5opt", {"req1": "world", "req2": 7, "opt5": "last", "opt3": "middle", "opt1": "first"})],
    ),
    Case(  # test-chat.cpp:3799
        _xml(
            "tool_2req_5opt",
            ("req1", "test"),
            ("req2", "99"),
            ("opt3", "c"),
            ("opt1", "a"),
            ("opt5", "e"),
            ("opt4", "4"),
            ("opt2", "2"),
        ),
        calls=[
            (
                "tool_2req_5opt",
                {"req1": "test", "req2": 99, "opt3": "c", "opt1": "a", "opt5": "e", "opt4": 4, "opt2": 2},
            )
        ],
    ),
    Case(
        _xml("set_nullable_str", ("name", "hello world")), calls=[("set_nullable_str", {"name": "hello world"})]
    ),  # test-chat.cpp:3819
    Case(
        _xml("set_nullable_str_nf", ("name", "hello world")), calls=[("set_nullable_str_nf", {"name": "hello world"})]
    ),  # test-chat.cpp:3832
    Case(_xml("set_nullable_int", ("count", "42")), calls=[("set_nullable_int", {"count": 42})]),  # test-chat.cpp:3845
    Case(
        _xml("set_nullable_str", ("name", "null")), calls=[("set_nullable_str", {"name": None})]
    ),  # test-chat.cpp:3858
    Case(  # test-chat.cpp:3871 -- unions with string: typed when the text reads as another type
        _xml("set_union", ("value", '{"a": 1}'), ("amount", "2 dollars")),
        calls=[("set_union", {"value": {"a": 1}, "amount": "2 dollars"})],
    ),
    Case(  # test-chat.cpp:3884
        _xml("set_union", ("value", "{not valid json"), ("amount", "42")),
        calls=[("set_union", {"value": "{not valid json", "amount": 42})],
    ),
    Case(_xml("set_unit", ("unit", "celsius")), calls=[("set_unit", {"unit": "celsius"})]),  # test-chat.cpp:3898
]

LFM2 = [
    # test_lfm2_parser (run for LFM2-8B-A1B, LFM2.5-Instruct and LFM2.5-8B-A1B)
    Case(HELLO, HELLO),  # test-chat.cpp:2019
    Case("<|tool_call_start|>[special_function(arg1=1)]<|tool_call_end|>", calls=CALL_1),  # test-chat.cpp:2022
    Case(
        '<|tool_call_start|>[get_time(city="XYZCITY")]<|tool_call_end|>', calls=[("get_time", {"city": "XYZCITY"})]
    ),  # test-chat.cpp:2028
    Case(
        "<|tool_call_start|>[toggle(enabled=True)]<|tool_call_end|>", calls=[("toggle", {"enabled": True})]
    ),  # test-chat.cpp:2034
    Case(
        "<|tool_call_start|>[set_nullable(value=None)]<|tool_call_end|>", calls=[("set_nullable", {"value": None})]
    ),  # test-chat.cpp:2039
    Case(  # test-chat.cpp:2045
        '<|tool_call_start|>[set_config(config={"enabled": True, "count": 3})]<|tool_call_end|>',
        calls=[("set_config", {"config": {"enabled": True, "count": 3}})],
    ),
    Case(  # test-chat.cpp:2051 -- JSON literals too
        '<|tool_call_start|>[set_config(config={"enabled": true, "note": null})]<|tool_call_end|>',
        calls=[("set_config", {"config": {"enabled": True, "note": None}})],
    ),
    Case(  # test-chat.cpp:2057 -- dotted name
        '<|tool_call_start|>[Calendar.create_event(title="demo", participants=["Alice", "Bob"], '
        'metadata={"priority": "high", "reminder": true})]<|tool_call_end|>',
        calls=[
            (
                "Calendar.create_event",
                {"title": "demo", "participants": ["Alice", "Bob"], "metadata": {"priority": "high", "reminder": True}},
            )
        ],
    ),
    Case(  # test-chat.cpp:2066 -- markdown links stay content
        "Use this format: [link text](url). Example: [Wikipedia](https://www.wikipedia.org).",
        "Use this format: [link text](url). Example: [Wikipedia](https://www.wikipedia.org).",
    ),
    Case(  # test-chat.cpp:2073
        "<|tool_call_start|>[python(code=\"def hello():\\n    print('hey')\")]<|tool_call_end|>",
        calls=[("python", {"code": "def hello():\n    print('hey')"})],
    ),
    Case(  # test-chat.cpp:2082
        '<|tool_call_start|>[python(code="First line\\nSecond line\\tindented")]<|tool_call_end|>',
        calls=[("python", {"code": "First line\nSecond line\tindented"})],
    ),
    Case(
        '<|tool_call_start|>[python(code="print(\\"hi\\")")]<|tool_call_end|>',
        calls=[("python", {"code": 'print("hi")'})],
    ),  # test-chat.cpp:2090
    Case(  # test-chat.cpp:2098
        'Let me check the time.<|tool_call_start|>[get_time(city="Paris")]<|tool_call_end|>',
        "Let me check the time.",
        calls=[("get_time", {"city": "Paris"})],
    ),
    Case(  # test-chat.cpp:2106
        "<|tool_call_start|>[special_function(arg1=1), special_function_with_opt(arg1=1, arg2=2)]<|tool_call_end|>",
        calls=TWO,
    ),
    # test-chat.cpp:2116 (a partial stream) is in test_truncated_calls_are_errors below
    Case("<|tool_call_start|>[empty_args()]<|tool_call_end|>", calls=[("empty_args", {})]),  # test-chat.cpp:2123
    # LFM2.5-8B-A1B, the LFM2 template that thinks
    Case(
        "<think>I'm\nthinking</think><|tool_call_start|>[special_function(arg1=1)]<|tool_call_end|>",
        "",
        THINKING,
        CALL_1,
    ),  # test-chat.cpp:5242
    Case(  # test-chat.cpp:5249
        '<think>I need to call a function</think>Let me check the time.<|tool_call_start|>[get_time(city="Paris")]<|tool_call_end|>',
        "Let me check the time.",
        "I need to call a function",
        [("get_time", {"city": "Paris"})],
    ),
    Case(  # test-chat.cpp:5259 -- a call marker inside reasoning is not a call
        "<think>Let me think about <|tool_call_start|>[special_function(arg1=1)]<|tool_call_end|> hmm</think>"
        "<|tool_call_start|>[special_function(arg1=1)]<|tool_call_end|>",
        "",
        "Let me think about <|tool_call_start|>[special_function(arg1=1)]<|tool_call_end|> hmm",
        CALL_1,
    ),
    Case("<think>I'm\nthinking</think>Hello, world!\nWhat's up?", HELLO, THINKING),  # test-chat.cpp:5270
    Case(
        "<think>I'm\nthinking</think><|tool_call_start|>[special_function(arg1=1)]<|tool_call_end|>",
        "",
        THINKING,
        CALL_1,
    ),  # test-chat.cpp:5276
]

GEMMA4 = [
    Case("Hello, world!", "Hello, world!"),  # test-chat.cpp:2994
    Case("<|channel>thought\nI'm\nthinking<channel|>Hello, world!\nWhat's up?", HELLO, THINKING),  # test-chat.cpp:2997
    Case("<|channel>thought<channel|>Hello, world!\nWhat's up?", HELLO),  # test-chat.cpp:3004
    Case(
        '<|tool_call>call:get_time{city:<|"|>London<|"|>}<tool_call|>', calls=[("get_time", {"city": "London"})]
    ),  # test-chat.cpp:3018
    Case(
        '<|tool_call>call:get_time{city:<|"|>San Francisco<|"|>}<tool_call|>',
        calls=[("get_time", {"city": "San Francisco"})],
    ),  # test-chat.cpp:3025
    Case("<|tool_call>call:empty_args{}<tool_call|>", calls=[("empty_args", {})]),  # test-chat.cpp:3032
    Case(  # test-chat.cpp:3039
        'Hello, world!\nWhat\'s up?<|tool_call>call:get_time{city:<|"|>Paris<|"|>}<tool_call|>',
        HELLO,
        calls=[("get_time", {"city": "Paris"})],
    ),
    Case(
        '<|tool_call>call:get_time{city:<|"|>Paris<|"|>}<tool_call|>', calls=[("get_time", {"city": "Paris"})]
    ),  # test-chat.cpp:3046
    Case(  # test-chat.cpp:3054
        '<|channel>thought\nI\'m\nthinking<channel|><|tool_call>call:get_time{city:<|"|>Paris<|"|>}<tool_call|>',
        "",
        THINKING,
        [("get_time", {"city": "Paris"})],
    ),
    Case(  # test-chat.cpp:3066
        '<|tool_call>call:get_time{city:<|"|>London<|"|>}<tool_call|><|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>',
        calls=[("get_time", {"city": "London"}), ("get_weather", {"city": "Paris"})],
    ),
    Case(
        "<|tool_call>call:special_function{arg1:42}<tool_call|>", calls=[("special_function", {"arg1": 42})]
    ),  # test-chat.cpp:3078
    Case(
        "<|tool_call>call:special_function{arg1:-7}<tool_call|>", calls=[("special_function", {"arg1": -7})]
    ),  # test-chat.cpp:3085
    Case("<|tool_call>call:amount{orig:3.14}<tool_call|>", calls=[("amount", {"orig": 3.14})]),  # test-chat.cpp:3092
    Case(
        "<|tool_call>call:toggle{enabled:true}<tool_call|>", calls=[("toggle", {"enabled": True})]
    ),  # test-chat.cpp:3099
    Case(
        "<|tool_call>call:toggle{enabled:false}<tool_call|>", calls=[("toggle", {"enabled": False})]
    ),  # test-chat.cpp:3106
    Case(
        "<|tool_call>call:set_nullable{value:null}<tool_call|>", calls=[("set_nullable", {"value": None})]
    ),  # test-chat.cpp:3113
    Case(  # test-chat.cpp:3120
        '<|tool_call>call:todo_list{todos:[<|"|>buy milk<|"|>,<|"|>walk dog<|"|>]}<tool_call|>',
        calls=[("todo_list", {"todos": ["buy milk", "walk dog"]})],
    ),
    Case(  # test-chat.cpp:3127
        '<|tool_call>call:set_config{config:{theme:<|"|>dark<|"|>,count:3}}<tool_call|>',
        calls=[("set_config", {"config": {"theme": "dark", "count": 3}})],
    ),
    Case(
        "<|tool_call>call:todo_list{todos:[]}<tool_call|>", calls=[("todo_list", {"todos": []})]
    ),  # test-chat.cpp:3134
    Case(
        "<|tool_call>call:set_config{config:{}}<tool_call|>", calls=[("set_config", {"config": {}})]
    ),  # test-chat.cpp:3141
    Case(
        "<|tool_call>call:amount{orig:1.5e10}<tool_call|>", calls=[("amount", {"orig": 1.5e10})]
    ),  # test-chat.cpp:3148
    Case("<|channel>thought\n<channel|>Hello, world!\nWhat's up?<channel|>", HELLO),  # test-chat.cpp:3155
    Case(
        "<|channel>thought\n<channel|>Hello, world!\nWhat's up?<|channel>thought\n<channel|>", HELLO
    ),  # test-chat.cpp:3161
    Case(
        "<|channel>thought\n<channel|>Hello, world!\nWhat's up?<|channel>thought\n<channel|><channel|>", HELLO
    ),  # test-chat.cpp:3167
    Case("<|channel><|channel>thought\n<channel|>Hello, world!\nWhat's up?", HELLO),  # test-chat.cpp:3173
]

HERMES_GRANITE = [
    Case(HELLO, HELLO),  # test-chat.cpp:3409 (Granite 4.0)
    Case(
        '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>', calls=CALL_1
    ),  # test-chat.cpp:3411 (Granite 4.0)
    Case(HELLO, HELLO),  # test-chat.cpp:3432 (Granite 4.1)
    Case(
        '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>', calls=CALL_1
    ),  # test-chat.cpp:3434 (Granite 4.1)
    # test-chat.cpp:6106-6107, run for MiMo-VL, Hermes 3 and Qwen2.5-7B-Instruct
    Case(HELLO, HELLO),  # test-chat.cpp:6106
    Case(
        '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>', calls=CALL_1
    ),  # test-chat.cpp:6107
]

MISTRAL_LLAMA = [
    Case(HELLO, HELLO),  # test-chat.cpp:5916 (Mistral Nemo)
    Case(
        '[TOOL_CALLS][{"name": "special_function", "arguments": {"arg1": 1}, "id": "123456789"}]', calls=CALL_1
    ),  # test-chat.cpp:5917
    Case(HELLO, HELLO),  # test-chat.cpp:6253 (Mistral Small 3.2)
    Case('[TOOL_CALLS]special_function[CALL_ID]123456789[ARGS]{"arg1": 1}', calls=CALL_1),  # test-chat.cpp:6254
    Case(  # test-chat.cpp:6260
        '[TOOL_CALLS]special_function[CALL_ID]000000001[ARGS]{"arg1": 1}'
        '[TOOL_CALLS]special_function_with_opt[CALL_ID]000000002[ARGS]{"arg1": 1, "arg2": 2}',
        calls=TWO,
    ),
    Case(HELLO, HELLO),  # test-chat.cpp:6284 (Devstral)
    Case('[TOOL_CALLS]special_function[ARGS]{"arg1": 1}', calls=CALL_1),  # test-chat.cpp:6285
    Case(
        'Hello, world!\nWhat\'s up?[TOOL_CALLS]special_function[ARGS]{"arg1": 1}', HELLO, calls=CALL_1
    ),  # test-chat.cpp:6290
    Case(HELLO, HELLO),  # test-chat.cpp:6300 (Llama 3.1)
    Case(HELLO, HELLO),  # test-chat.cpp:6328 (Llama 3.2; test-chat.cpp has no Llama 3.2 call case)
]

GPT_OSS = [
    Case("<|channel|>final<|message|>Hello, world!\nWhat's up?", HELLO),  # test-chat.cpp:6428
    Case("<|channel|>commentary<|message|>Hello, world!\nWhat's up?", HELLO),  # test-chat.cpp:6431
    Case(  # test-chat.cpp:6434
        "<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant<|channel|>final<|message|>Hello, world!\nWhat's up?",
        HELLO,
        THINKING,
    ),
    Case(' to=functions.special_function<|channel|>analysis<|message|>{"arg1": 1}', calls=CALL_1),  # test-chat.cpp:6457
    Case('<|channel|>analysis to=functions.special_function<|message|>{"arg1": 1}', calls=CALL_1),  # test-chat.cpp:6464
    Case(
        ' to=functions.special_function<|channel|>analysis <|constrain|>json<|message|>{"arg1": 1}', calls=CALL_1
    ),  # test-chat.cpp:6471
    Case(
        '<|channel|>commentary to=functions.special_function<|message|>{"arg1": 1}', calls=CALL_1
    ),  # test-chat.cpp:6478
    Case(  # test-chat.cpp:6485
        "<|channel|>analysis<|message|>I'm\nthinking<|end|>"
        '<|start|>assistant to=functions.special_function<|channel|>analysis<|message|>{"arg1": 1}',
        "",
        THINKING,
        CALL_1,
    ),
    Case(  # test-chat.cpp:6494
        "<|channel|>analysis<|message|>Thinking about edit...<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.edit <|constrain|>json"
        '<|message|>{"oldString": "if (part < railCount - 1) {", "newString": "if (part < 4) {", "replaceAll": false}',
        "",
        "Thinking about edit...",
        [("edit", {"oldString": "if (part < railCount - 1) {", "newString": "if (part < 4) {", "replaceAll": False})],
    ),
    Case(  # test-chat.cpp:6531
        "<|channel|>analysis<|message|>I need to output the invoice details in JSON<|end|>"
        '<|start|>assistant<|channel|>final <|constrain|>json<|message|>{"amount": 123.45, "date": "2025-12-03"}',
        '{"amount": 123.45, "date": "2025-12-03"}',
        "I need to output the invoice details in JSON",
    ),
    Case(  # test-chat.cpp:6547 -- a built-in tool the agent does not have: dropped
        "<|channel|>analysis<|message|>I will execute python to say hello<|end|>"
        "<|start|>assistant to=container.exec<|channel|>commentary<|message|>python3 -c 'print(\"hello\")'",
        "",
        "I will execute python to say hello",
    ),
    Case(  # test-chat.cpp:6556
        "<|channel|>analysis<|message|>I will execute python to say hello<|end|>"
        '<|start|>assistant<|channel|>commentary to=python <|constrain|>code<|message|>print("hello")',
        "",
        "I will execute python to say hello",
    ),
    Case(  # test-chat.cpp:6567
        "<|channel|>commentary to=assistant<|channel|>analysis<|message|>I'm\nthinking<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Hello, world!\nWhat's up?",
        HELLO,
        THINKING,
    ),
    Case(  # test-chat.cpp:6575
        "<|channel|>analysis<|message|>I'm\nthinking<|end|>"
        "<|start|>assistant<|channel|>commentary to=assistant<|channel|>final<|message|>Hello, world!\nWhat's up?",
        HELLO,
        THINKING,
    ),
]

REASONING_ONLY = [
    Case(
        "Let me think about this...\n</think>\nThe answer is 42.",
        "The answer is 42.",
        "Let me think about this...",
        opened=True,
    ),  # test-chat.cpp:3299 (QwQ)
    Case(
        "</think>Hello, world!", "Hello, world!"
    ),  # test-chat.cpp:3305 (QwQ; no opened flag: a leading closer says so)
    Case("</think>Hello, world!\nWhat's up?", HELLO),  # test-chat.cpp:5990 (R1 Distill Llama)
    Case("I'm\nthinking</think>Hello, world!\nWhat's up?", HELLO, THINKING, opened=True),  # test-chat.cpp:5994
    Case("</think>Hello, world!\nWhat's up?", HELLO, opened=True),  # test-chat.cpp:6063 (R1 Distill Qwen)
    Case("I'm\nthinking</think>Hello, world!\nWhat's up?", HELLO, THINKING),  # test-chat.cpp:6066 (opened inferred)
]

FAMILIES = {
    "qwen3.5": QWEN35,
    "qwen3-coder": QWEN3_CODER,
    "lfm2": LFM2,
    "gemma4": GEMMA4,
    "hermes-granite": HERMES_GRANITE,
    "mistral-llama": MISTRAL_LLAMA,
    "gpt-oss": GPT_OSS,
    "reasoning": REASONING_ONLY,
}
ROWS = [pytest.param(case, id=f"{family}-{i}") for family, cases in FAMILIES.items() for i, case in enumerate(cases)]


@pytest.mark.parametrize("case", ROWS)
def test_llama_cpp_reference_case(case: Case):
    thought = split_reasoning(case.output, opened=case.opened)
    answer, calls = parse_native(thought.text, id_prefix="call_9_", tools=TOOLS)
    assert thought.closed
    assert thought.reasoning == case.reasoning.strip()
    assert answer == case.content.strip()
    assert [c.error for c in calls] == [None] * len(calls)
    assert [(c.name, c.arguments) for c in calls] == case.calls
    assert [c.id for c in calls] == [f"call_9_{i + 1}" for i in range(len(calls))]


# --- values typed by the tool's schema (Qwen's bare-text parameters) ---

TYPED = _tool(
    "typed",
    {
        "name": STR,
        "count": INT,
        "ratio": NUM,
        "flag": BOOL,
        "items": {"type": "array", "items": STR},
        "options": {"type": "object"},
        "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "ref": {"$ref": "#/$defs/Count"},
    },
)
TYPED = ToolSpec(TYPED.name, "", {**TYPED.parameters, "$defs": {"Count": INT}})


@pytest.mark.parametrize(
    "parameter, written, value",
    [
        ("name", "123", "123"),  # a string parameter stays a string
        ("name", "true", "true"),
        ("name", '"quoted"', '"quoted"'),  # as written
        ("name", "line one\nline two\n", "line one\nline two\n"),  # a trailing newline is kept
        ("name", "  indented", "  indented"),
        ("count", "42", 42),
        ("count", " 7 ", 7),
        ("count", "3.0", 3),
        ("ratio", "0.5", 0.5),
        ("ratio", "2", 2),
        ("flag", "false", False),
        ("flag", "True", True),  # Qwen3.5's template renders Python booleans
        ("items", '["a", "b"]', ["a", "b"]),
        ("options", '{"k": {"deep": [1]}}', {"k": {"deep": [1]}}),
        ("maybe", "null", None),
        ("maybe", "5", 5),
        ("ref", "9", 9),  # pydantic's $defs are followed
        ("unknown", "12", 12),  # no schema: JSON when it reads as JSON
        ("unknown", "src/app.py", "src/app.py"),
    ],
)
def test_xml_values_are_typed_by_the_schema(parameter, written, value):
    text = f"<tool_call>\n<function=typed>\n<parameter={parameter}>\n{written}\n</parameter>\n</function>\n</tool_call>"
    _, (call,) = parse_native(text, tools=[TYPED])
    assert call.valid, call.error
    assert call.arguments == {parameter: value}
    assert type(call.arguments[parameter]) is type(value)


def test_without_tools_values_are_guessed_as_before():
    text = _xml("typed", ("name", "123"), ("path", "a.txt"))
    _, (call,) = parse_native(text)
    assert call.arguments == {"name": 123, "path": "a.txt"}


@pytest.mark.parametrize(
    "parameter, written",
    [("count", "many"), ("count", "1.5"), ("flag", "yes"), ("items", "a, b"), ("options", "[1]"), ("ratio", "true")],
)
def test_xml_value_of_the_wrong_type_is_an_error_call(parameter, written):
    _, (call,) = parse_native(_xml("typed", (parameter, written)), tools=[TYPED])
    assert not call.valid
    assert f"parameter {parameter!r} must be" in call.error
    assert call.name == "typed" and call.raw


def test_xml_value_may_mention_closing_tags():
    code = "s = '</parameter>'\nt = '</function></tool_call>'"
    _, (call,) = parse_native(_xml("python", ("code", code)), tools=TOOLS)
    assert call.arguments == {"code": code}


# --- malformed and truncated calls become error calls, never exceptions ---

MALFORMED = [
    # (reply, name, error fragment)
    (
        "<tool_call>\n<function=special_function>\n<parameter=arg1>\n1",
        "special_function",
        "cut off inside parameter 'arg1'",
    ),
    (
        "<tool_call>\n<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n",
        "special_function",
        "cut off before </function>",
    ),
    (
        "<tool_call>\n<function=special_function>\nnoise\n</function>\n</tool_call>",
        "special_function",
        "unexpected text",
    ),
    ("<tool_call>\n<function=>\n</function>\n</tool_call>", "", "name cannot be read"),
    (
        "<|tool_call_start|>[special_function(arg1=",
        "special_function",
        "cut off",
    ),  # test-chat.cpp:2116, a partial stream
    ("<|tool_call_start|>[special_function(1)]<|tool_call_end|>", "special_function", "positional arguments"),
    ("<|tool_call_start|>[special_function(**kw)]<|tool_call_end|>", "special_function", "**arguments"),
    (
        "<|tool_call_start|>[special_function(arg1=__import__('os').system('x'))]<|tool_call_end|>",
        "special_function",
        "not a literal",
    ),
    ("<|tool_call_start|>[special_function(arg1=1+1)]<|tool_call_end|>", "special_function", "not a literal"),
    ("<|tool_call_start|>[special_function(arg1={1: 2})]<|tool_call_end|>", "special_function", "keys must be strings"),
    (
        "<|tool_call_start|>[special_function(arg1=1) junk]<|tool_call_end|>",
        "special_function",
        "not a Python-style call",
    ),
    ("<|tool_call_start|>[42]<|tool_call_end|>", "", "must look like name("),
    ("<|tool_call_start|>[]<|tool_call_end|>", "", "empty tool call"),
    ('<|tool_call>call:get_time{city:<|"|>Par', "get_time", "never closed"),
    ("<|tool_call>call:get_time{city:London}<tool_call|>", "get_time", "expected a value"),
    ("<|tool_call>call:get_time{city:1 2}<tool_call|>", "get_time", "expected ','"),
    ("<|tool_call>call:get_time{arg1:1}junk<tool_call|>", "get_time", "expected <tool_call|>"),
    ("<|tool_call>get_time{}<tool_call|>", "", "expected call:NAME"),
    ("<|tool_call>call:get_time{city:", "get_time", "cut off"),
    ('[TOOL_CALLS]special_function[ARGS]{"arg1": ', "special_function", "not valid JSON"),
    ("[TOOL_CALLS]special_function[ARGS][1]", "special_function", "must be a JSON object"),
    ("[TOOL_CALLS]no args here", "", "expected NAME[ARGS]"),
    ('<|channel|>commentary to=functions.special_function<|message|>{"arg1": ', "special_function", "not valid JSON"),
]


@pytest.mark.parametrize("text, name, error", MALFORMED)
def test_malformed_calls_are_error_calls(text, name, error):
    _, calls = parse_native(split_reasoning(text).text, tools=TOOLS)
    (call,) = calls
    assert not call.valid
    assert call.name == name
    assert error in call.error, call.error
    assert call.arguments == {} and call.raw


def test_a_bad_call_does_not_hide_the_good_ones():
    text = (
        '<|tool_call>call:get_time{city:<|"|>Paris<|"|>}<tool_call|>'
        "<|tool_call>call:get_time{city:???}<tool_call|>"
        '<|tool_call>call:get_weather{city:<|"|>Oslo<|"|>}<tool_call|>'
    )
    _, calls = parse_native(text)
    assert [(c.name, c.valid) for c in calls] == [("get_time", True), ("get_time", False), ("get_weather", True)]


def test_a_runaway_reply_is_capped_with_an_error_call():
    text = "<|tool_call_start|>[" + ", ".join(f"f(i={i})" for i in range(200)) + "]<|tool_call_end|>"
    _, calls = parse_native(text)
    assert len(calls) == 65
    assert all(c.valid for c in calls[:64])
    assert "more than 64 tool calls" in calls[64].error


# --- hostile input: bounded work (the wall limit is only a watchdog, not a benchmark) ---

MB = 1_000_000
HOSTILE = {
    "qwen-openers": "<tool_call>" * (MB // 11),
    "qwen-function": "<tool_call>\n<function=f>\n" + "<parameter=a>\n" * (MB // 14),
    "qwen-closers": "<tool_call>\n<function=f>\n<parameter=a>\n" + "</parameter>x" * (MB // 13),
    "qwen-json": "<tool_call>{" * (MB // 12),
    "qwen-deep-json": "<tool_call>" + "[" * MB,
    "bare-deep-json": '{"name": "x", "arguments": ' + "[" * MB,
    "lfm2-openers": "<|tool_call_start|>[" * (MB // 20),
    "lfm2-deep": "<|tool_call_start|>[f(a=" + "[" * MB + "]<|tool_call_end|>",
    "lfm2-long": '<|tool_call_start|>[f(a="' + "x" * MB + '")]<|tool_call_end|>',
    "gemma-openers": "<|tool_call>call:f{" * (MB // 19),
    "gemma-deep": "<|tool_call>call:f{a:" + "[" * MB,
    "gemma-keys": "<|tool_call>call:f{" + "k" * MB,
    "gemma-strings": "<|tool_call>call:f{a:" + '<|"|>' * (MB // 5),
    "mistral": "[TOOL_CALLS]" * (MB // 12),
    "mistral-args": "[TOOL_CALLS]f[ARGS]" + "{" * MB,
    "harmony": "<|start|>assistant to=functions.f<|channel|>commentary<|message|>{" * (MB // 60),
    "think-openers": "<think>" * (MB // 7),
    "think-closers": "</think>" * (MB // 8),
    "think-and-calls": "<think><tool_call>" * (MB // 18),
    "gemma-channels": "<|channel>thought" * (MB // 17),
    "junk": "<{[(\"'<|" * (MB // 8),
}


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_reply_parses_in_bounded_work(text):
    started = time.monotonic()
    for opened in (False, True):
        thought = split_reasoning(text, opened=opened)
        assert isinstance(thought, Thought)
        _, calls = parse_native(text, tools=TOOLS)
        parse_native(thought.text, tools=TOOLS)
        assert len(calls) <= 65
    assert time.monotonic() - started < 30  # watchdog only: quadratic work would take hours


# --- the reasoning splitter ---

REASONING = [
    # (reply, opened, reasoning, text, closed)
    ("Hello", False, "", "Hello", True),
    ("<think>\nplan\n</think>\n\nanswer", False, "plan", "answer", True),
    ("plan\n</think>\n\nanswer", True, "plan", "answer", True),
    ("plan\n</think>\n\nanswer", False, "plan", "answer", True),  # a leading closer: the prompt opened it
    ("<think>\n\n</think>\n\nanswer", False, "", "answer", True),
    ("<think>still thinking when max_tokens hit", False, "still thinking when max_tokens hit", "", False),
    ("still thinking", True, "still thinking", "", False),
    ("", True, "", "", False),
    ("<think>a</think>b<think>c</think>d", False, "a\n\nc", "bd", True),
    ("<think>a</think>answer with a stray </think>", False, "a", "answer with a stray", True),
    (
        "plan\n<tool_call>\n{}\n</tool_call>",
        True,
        "plan",
        "<tool_call>\n{}\n</tool_call>",
        True,
    ),  # Qwen3.5: a call ends the thought
    (
        '<think>maybe <tool_call>{"name": "x"}</tool_call> no</think>4',
        False,
        'maybe <tool_call>{"name": "x"}</tool_call> no',
        "4",
        True,
    ),
    ("<|channel>thought\nplan<channel|>answer", False, "plan", "answer", True),
    ("<|channel>thought\nplan", False, "plan", "", False),
    (" thinking<channel|>Hello", True, "thinking", "Hello", True),  # test-chat.cpp:3190 shape (Gemma 4)
    ("[THINK]plan[/THINK]answer", False, "plan", "answer", True),  # Magistral / Ministral 3
    ("<|channel|>analysis<|message|>I'm\nthinking", False, "I'm\nthinking", "", False),  # test-chat.cpp:6450
    ("thinking<|end|><|start|>assistant<|channel|>final<|message|>Hi", True, "thinking", "Hi", True),
]


@pytest.mark.parametrize("raw, opened, reasoning, text, closed", REASONING)
def test_split_reasoning(raw, opened, reasoning, text, closed):
    assert split_reasoning(raw, opened=opened) == Thought(reasoning, text, closed)


def test_a_call_written_while_thinking_is_not_a_call():
    for text in (
        '<think>I could call <tool_call>{"name": "read_file", "arguments": {}}</tool_call></think>No need.',
        '<think>maybe <|tool_call>call:get_time{city:<|"|>Oslo<|"|>}<tool_call|></think>No need.',
        "<|channel>thought\n<|tool_call_start|>[f(a=1)]<|tool_call_end|><channel|>No need.",
    ):
        assert parse_native(text) == ("No need.", ())
    # and when the prompt opened the thought, the caller splits first
    thought = split_reasoning('I could call {"name": "read_file", "parameters": {}}\n</think>\nNo need.', opened=True)
    assert parse_native(thought.text) == ("No need.", ())


@pytest.mark.parametrize(
    "prompt, opens",
    [
        ("<|im_start|>assistant\n<think>\n", True),  # Qwen3.5 / DeepSeek-R1 distills, thinking on
        ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False),  # Qwen3 / Qwen3.5, thinking off
        ("<|im_start|>assistant\n<think>\n\n</think>\n", False),  # SmolLM3 /no_think
        ("<|im_start|>assistant\n", False),  # SmolLM3 /think, Qwen3-0.6B: the model opens it
        ("<|turn>model\n<|channel>thought\n<channel|>", False),  # Gemma 4, thinking off
        ("<|turn>model\n<|channel>thought\n", True),
        ("<|start|>assistant<|channel|>analysis<|message|>", True),  # gpt-oss
        ("<|im_start|>user\nWhat does <think> do?<|im_end|>\n<|im_start|>assistant\n", False),
    ],
)
def test_prompt_opens_thinking(prompt, opens):
    assert prompt_opens_thinking(prompt) is opens
