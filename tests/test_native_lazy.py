"""Native mode's lazy grammar (engines/lazy.py): once a model opens its tool-call marker, the
rest of the call is held to the tools' schemas, so a started call is well-formed.

Random weights never choose to open a call, so each case opens one for them: the prompt and
the family's marker are evaluated, and the model writes the rest, free (before) or under the
lazy grammar (after). Random weights make nearly every free call invalid; that is the point.
Counts only. `pytest -s` prints the table the report quotes.
"""

from __future__ import annotations

import archmodels
import pytest
from fixtures_tools import NOTHING, SHORT_READ, bounded_edit

from localagent.engines import lazy
from localagent.engines.base import EngineConfig
from localagent.engines.llamacpp import LlamaCppModel
from localagent.engines.native_calls import parse_native
from localagent.records import Message
from localagent.tools import TOOLS

# the marker each format's calls start with, as the model would write it
MARKERS = {
    "hermes": "<tool_call>",
    "qwen3-coder-xml": "<tool_call>",
    "lfm2-pythonic": "<|tool_call_start|>",
    "gemma4": "<|tool_call>",
    "llama3-json": "{",
}
NATIVE = [n for n, f in archmodels.FAMILIES.items() if f.tool_format in MARKERS]
# the real tools' schemas, their strings bounded so that random weights can end a call within
# the budget (fixtures_tools)
BOUNDED = [bounded_edit(), NOTHING, SHORT_READ]
SAMPLES = ((0.0, 0), (0.8, 1), (0.8, 2), (1.2, 3))  # (temperature, seed)
MAX_TOKENS = 160


def _open_calls(model: LlamaCppModel, marker: str, *, constrained: bool) -> list[tuple[bool, str]]:
    """(whether the grammar saw the call to its end, text from the marker on) for each sample,
    the call opened with `marker`."""
    tools = BOUNDED
    messages = [Message("system", "Use the tools."), Message("user", "Read notes.txt, then list the folder docs.")]
    prompt = model.render(messages, tools)
    marker_tokens = model.tokenize(marker)
    calls = model._lazy(tools) if constrained else []
    assert calls is not None
    out = []
    for temperature, seed in SAMPLES:
        model.evaluate(model.tokenize(prompt) + marker_tokens)
        decoder = model.lazy_decoder(calls, temperature=temperature, seed=seed)
        decoded = decoder.decode(MAX_TOKENS, lambda tokens: None, prefix=marker_tokens)
        text = marker + model._llama.detokenize(decoded.tokens, special=True).decode("utf-8", "replace")
        if constrained:
            assert decoder.counts.opened >= 1 and decoder.counts.refused == 0
        out.append((decoder.counts.closed > 0, text))
    return out


def _invalid(text: str) -> bool:
    _, calls = parse_native(text, tools=BOUNDED)
    return not calls or any(not c.valid for c in calls)


@pytest.mark.parametrize("name", NATIVE)
def test_a_started_call_is_well_formed(name):
    family = archmodels.FAMILIES[name]
    model = LlamaCppModel(
        archmodels.build(name), EngineConfig(tool_mode="native", n_ctx=2048, n_threads=2, think=False)
    )
    try:
        assert model.call_format == family.tool_format
        assert model.describe().grammar == f"llguidance lazy ({family.tool_format})"
        assert model._lazy([t.spec() for t in TOOLS])  # the real tools' schemas compile too
        marker = MARKERS[family.tool_format]
        free = _open_calls(model, marker, constrained=False)
        held = _open_calls(model, marker, constrained=True)
    finally:
        model.close()
    free_invalid = sum(_invalid(text) for _, text in free)
    finished = [text for closed, text in held if closed]
    held_invalid = sum(_invalid(text) for text in finished)
    cut = len(held) - len(finished)
    print(
        f"\n{name:14} {family.tool_format:16} free: {free_invalid}/{len(free)} invalid   "
        f"lazy grammar: {held_invalid}/{len(finished)} invalid, {cut} unclosed at {MAX_TOKENS} tokens or a loop"
    )
    assert held_invalid == 0, [text for text in finished if _invalid(text)]
    assert finished  # some calls end within the budget
    assert free_invalid > 0  # random weights: the free calls are junk


def test_call_formats_follow_the_templates():
    for family in archmodels.FAMILIES.values():
        expected = None if family.tool_format == "none" else family.tool_format
        assert lazy.call_format(archmodels.template_text(family)) == expected, family.name


@pytest.mark.parametrize("name", ["qwen2", "gemma4"])
def test_free_text_is_llama_cpps_own_greedy_output(name):
    """Until a marker, the lazy decoder samples as llama.cpp does: the same greedy reply, token
    for token, through chat() with the lazy grammar on and off (llama-cpp-python's generate)."""
    tools = [t.spec() for t in TOOLS]
    ask = [Message("system", "Use the tools."), Message("user", "What is in notes.txt?")]
    replies = []
    for constrain in (True, False):
        config = EngineConfig(tool_mode="native", n_ctx=2048, n_threads=2, think=False, constrain_calls=constrain)
        model = LlamaCppModel(archmodels.build(name), config)
        kind = model.describe().grammar
        replies.append((model.chat(ask, tools, max_tokens=40), model._last[3]))
        model.close()
        assert (kind is not None) == constrain
    (lazy_reply, lazy_tokens), (free_reply, free_tokens) = replies
    assert lazy_tokens == free_tokens and len(free_tokens) > 0
    assert lazy_reply.raw == free_reply.raw and lazy_reply.finish_reason == free_reply.finish_reason
    assert lazy_reply.timings.forced_tokens == 0  # no call was opened: nothing forced


# one family per format: its canonical call (as llama.cpp's test-chat.cpp shows it) is what the
# grammar admits, and the parser reads it back as the same call
ONE_PER_FORMAT = {
    "llama": "llama3-json",
    "qwen2": "hermes",
    "qwen35": "qwen3-coder-xml",
    "lfm2": "lfm2-pythonic",
    "gemma4": "gemma4",
}


@pytest.mark.parametrize("name", list(ONE_PER_FORMAT))
def test_the_grammar_admits_the_canonical_call_and_refuses_a_broken_one(name):
    from test_native_e2e import CALLS

    call = CALLS[ONE_PER_FORMAT[name]]
    tools = [t.spec() for t in TOOLS]
    model = LlamaCppModel(archmodels.build(name), EngineConfig(tool_mode="native", n_ctx=512, n_threads=2, think=False))
    try:
        compiled = model._lazy(tools)
        assert compiled
        trigger, matcher = next((t, m) for t, m in compiled if call.startswith(t.marker))
        matcher.reset()
        assert matcher.consume_tokens(model.tokenize(call)), matcher.get_error()
        assert matcher.is_stopped()  # the call is whole: nothing may follow inside it
        broken = call.replace("read_file", "read_fil", 1)  # no such tool
        matcher.reset()
        assert not matcher.consume_tokens(model.tokenize(broken))
    finally:
        model.close()
    (parsed,) = parse_native(call, tools=tools)[1]
    assert parsed.valid and (parsed.name, parsed.arguments) == ("read_file", {"path": "notes.txt"})
