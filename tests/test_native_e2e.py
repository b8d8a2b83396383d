"""Native tool calls end to end, one run per family: the agent loop in native mode on a tiny
random-weight model of the family (tests/archmodels.py), its output forced by a grammar into
the family's own call format. What runs for real: the family's chat template rendering the
tools, the call and the tool result; llama.cpp sampling under the grammar (special tokens
included); the family's parser; the tool; the cache across steps.

A random model cannot choose to call a tool, so the grammar admits exactly one call; the loop
then repeats it until max_steps. The model's judgement is not under test, the plumbing is.
"""

from __future__ import annotations

import json

import archmodels
import pytest

from localagent.agent import Agent, AgentConfig
from localagent.engines.base import EngineConfig
from localagent.engines.llamacpp import LlamaCppModel
from localagent.records import FinalStep, Message, ModelStep, ToolStep
from localagent.tools import TOOLS

# what each family writes for read_file(path="notes.txt"), as llama.cpp's test-chat.cpp shows it
CALLS = {
    "hermes": '<tool_call>\n{"name": "read_file", "arguments": {"path": "notes.txt"}}\n</tool_call>',
    "qwen3-coder-xml": "<tool_call>\n<function=read_file>\n<parameter=path>\nnotes.txt\n</parameter>\n</function>\n</tool_call>",
    "lfm2-pythonic": '<|tool_call_start|>[read_file(path="notes.txt")]<|tool_call_end|>',
    "gemma4": '<|tool_call>call:read_file{path:<|"|>notes.txt<|"|>}<tool_call|>',
    "llama3-json": '{"name": "read_file", "parameters": {"path": "notes.txt"}}',
}
NOTES = "The release is planned for 3 March.\n"


def gbnf_literal(text: str) -> str:
    # JSON string escapes (\", \\, \n) are GBNF's too
    return f"root ::= {json.dumps(text)}"


@pytest.mark.parametrize("name", [n for n, f in archmodels.FAMILIES.items() if f.tool_format in CALLS])
def test_native_call_through_the_loop(name, tmp_path):
    family = archmodels.FAMILIES[name]
    path = archmodels.build(name)
    call_text = CALLS[family.tool_format]
    config = EngineConfig(tool_mode="native", n_ctx=4096, n_threads=2, think=False, grammar=gbnf_literal(call_text))
    model = LlamaCppModel(path, config)
    assert model.tool_mode == "native"
    (tmp_path / "notes.txt").write_text(NOTES)
    agent = Agent(model, tmp_path, AgentConfig(max_steps=2, max_tokens=96))
    steps = list(agent.run("When is the release? Read notes.txt."))

    model_steps = [s for s in steps if isinstance(s, ModelStep)]
    tool_steps = [s for s in steps if isinstance(s, ToolStep)]
    final = steps[-1]
    assert isinstance(final, FinalStep) and final.stop_reason == "max_steps", final
    assert len(model_steps) == 2 and len(tool_steps) == 2
    for step in model_steps:
        assert step.reply.raw.strip() == call_text  # the special tokens came through as text
        (call,) = step.reply.tool_calls
        assert call.valid and call.name == "read_file" and call.arguments == {"path": "notes.txt"}
    for step in tool_steps:
        assert step.error is None and NOTES.strip() in step.result
    # the second step reused the first step's prompt from the cache (or a checkpoint)
    second = model_steps[1].reply
    assert second.usage.cached_input_tokens > model_steps[0].reply.usage.input_tokens // 2

    # the real template rendered the call and its result into the second prompt
    first_call = model_steps[0].reply.tool_calls[0]
    prompt = model.render(
        [
            Message("system", agent.system_prompt),
            Message("user", "When is the release? Read notes.txt."),
            Message("assistant", "", (first_call,)),
            Message("tool", tool_steps[0].result, tool_call_id=first_call.id, name="read_file"),
        ],
        [t.spec() for t in TOOLS],
    )
    assert "notes.txt" in prompt and "3 March" in prompt and "read_file" in prompt
    model.close()
