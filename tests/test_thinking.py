"""Thinking on and off, through the real templates of families that think (Qwen3.5, Qwen3,
Gemma 4) on tiny random-weight models whose output a grammar forces into a thought followed by
a call: the thought never reaches the answer or the parsed calls, it is counted as reasoning
tokens and shown again to templates that keep it, and a thought that never closes ends the run
with its own stop reason."""

from __future__ import annotations

import json

import archmodels
import pytest

from localagent.agent import Agent, AgentConfig
from localagent.engines import reasoning
from localagent.engines.base import EngineConfig
from localagent.engines.llamacpp import LlamaCppModel
from localagent.records import FinalStep, Message, ModelStep, ToolCall, ToolSpec

READ = ToolSpec(
    "read_file",
    "Read a text file in the workspace.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)
SYSTEM = Message("system", "You work on files. Use the tools.")
USER = Message("user", "When is the release? It is in notes.txt.")
THOUGHT = "The date is in notes.txt, so I read it first."

# the reply after the template's generation prompt, per family, thinking on
REPLIES = {
    # Qwen3.5's prompt ends inside `<think>\n`: the reply starts mid-thought
    "qwen35": f"{THOUGHT}\n</think>\n\n<tool_call>\n<function=read_file>\n<parameter=path>\nnotes.txt\n</parameter>\n</function>\n</tool_call>",
    # Qwen3's template leaves the opening to the model
    "qwen3": f'<think>\n{THOUGHT}\n</think>\n\n<tool_call>\n{{"name": "read_file", "arguments": {{"path": "notes.txt"}}}}\n</tool_call>',
    "gemma4": f'<|channel>thought\n{THOUGHT}<channel|><|tool_call>call:read_file{{path:<|"|>notes.txt<|"|>}}<tool_call|>',
}


def _model(family: str, *, think: bool | None, grammar: str | None = None) -> LlamaCppModel:
    config = EngineConfig(tool_mode="native", n_ctx=2048, n_threads=2, think=think, grammar=grammar)
    return LlamaCppModel(archmodels.build(family), config)


@pytest.mark.parametrize("family", sorted(REPLIES))
def test_thought_is_split_from_the_call_and_counted(family):
    model = _model(family, think=True, grammar=f"root ::= {json.dumps(REPLIES[family])}")
    assert model.think is True and model.describe().think is True
    reply = model.chat([SYSTEM, USER], [READ], max_tokens=120)
    assert reply.finish_reason == "tool_calls", reply.raw
    assert reply.reasoning == THOUGHT
    (call,) = reply.tool_calls
    assert call.valid and call.name == "read_file" and call.arguments == {"path": "notes.txt"}
    assert THOUGHT not in reply.text and "notes.txt, so" not in call.raw
    assert 0 < reply.usage.reasoning_tokens < reply.usage.output_tokens
    model.close()


def test_qwen35_template_shows_the_thought_again_after_the_call():
    """Qwen3.5's template renders the reasoning of the turns after the last user message:
    the engine hands it back, so what the model wrote is what it reads at the next step."""
    model = _model("qwen35", think=True)
    call = ToolCall("read_file", {"path": "notes.txt"}, "call_1_1")
    history = [
        SYSTEM,
        USER,
        Message("assistant", "", (call,), reasoning=THOUGHT),
        Message("tool", "3 March", tool_call_id="call_1_1", name="read_file"),
    ]
    prompt = model.render(history, [READ])
    assert f"<think>\n{THOUGHT}\n</think>" in prompt
    model.close()


@pytest.mark.parametrize("family", ["qwen35", "qwen3"])
def test_no_think_closes_the_block_in_the_prompt(family):
    on, off = _model(family, think=True), _model(family, think=False)
    prompt_on, prompt_off = on.render([SYSTEM, USER], [READ]), off.render([SYSTEM, USER], [READ])
    assert off.describe().think is False
    # thinking off: Qwen's templates write an empty, closed think block for the model
    assert prompt_off.rstrip().endswith("</think>") and not reasoning.prompt_opens_thinking(prompt_off)
    if family == "qwen35":
        assert reasoning.prompt_opens_thinking(prompt_on)
    on.close()
    off.close()


def test_json_mode_never_thinks():
    model = LlamaCppModel(
        archmodels.build("qwen35"), EngineConfig(tool_mode="json", n_ctx=2048, n_threads=2, think=True)
    )
    assert model.think is False  # the grammar starts the reply with `{`
    assert not reasoning.prompt_opens_thinking(model.render([SYSTEM, USER], [READ]))
    reply = model.chat([SYSTEM, USER], [READ], max_tokens=40)
    assert reply.reasoning == "" and reply.usage.reasoning_tokens == 0
    model.close()


def test_a_thought_that_never_closes_stops_the_run(tmp_path):
    # the model can only keep thinking: the reply runs into max_tokens inside the block
    model = _model("qwen35", think=True, grammar='root ::= ("hmm " | "wait ")+')
    agent = Agent(model, tmp_path, AgentConfig(max_steps=3, max_tokens=16))
    steps = list(agent.run("When is the release?"))
    (model_step,) = [s for s in steps if isinstance(s, ModelStep)]
    assert model_step.reply.finish_reason == "unfinished_thinking" and model_step.reply.tool_calls == ()
    assert model_step.reply.reasoning.startswith(("hmm", "wait"))
    final = steps[-1]
    assert isinstance(final, FinalStep) and final.stop_reason == "unfinished_thinking" and final.answer == ""
    assert "did not close within 16 tokens" in final.error and "--no-think" in final.hint
    model.close()
