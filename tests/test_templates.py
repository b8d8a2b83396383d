"""Chat templates through the bounded environment render exactly as llama-cpp-python's
formatter renders them, for the real templates of every architecture fixture."""

from __future__ import annotations

import archmodels
import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from localagent.engines.templates import ChatTemplate

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    }
]


def conversation(turns: int) -> list[dict]:
    chat = [{"role": "system", "content": "You work on files."}, {"role": "user", "content": "What is in README.md?"}]
    for i in range(turns):
        call = {
            "type": "function",
            "id": f"c{i}",
            "function": {"name": "read_file", "arguments": {"path": "README.md"}},
        }
        chat.append({"role": "assistant", "content": "", "tool_calls": [call]})
        chat.append({"role": "tool", "content": f"line {i}\n", "tool_call_id": f"c{i}", "name": "read_file"})
    return chat


@pytest.mark.parametrize("family", sorted(archmodels.FAMILIES))
@pytest.mark.parametrize("opening", [True, False])
def test_real_templates_render_as_llama_cpp_python_renders_them(family: str, opening: bool) -> None:
    source = archmodels.template_text(family)
    theirs = Jinja2ChatFormatter(template=source, eos_token="</s>", bos_token="<s>", add_generation_prompt=opening)
    ours = ChatTemplate(source, eos_token="</s>", bos_token="<s>", add_generation_prompt=opening)
    for chat in (conversation(0), conversation(3)):
        for tools in (None, TOOLS):
            try:
                expected = theirs(messages=chat, tools=tools).prompt
            except Exception as exc:  # Gemma 2's template refuses a system turn: ours must too
                with pytest.raises(type(exc)):
                    ours.render(messages=chat, tools=tools)
                continue
            assert ours.render(messages=chat, tools=tools) == expected
