"""Prompt-lookup decoding (engines/lookup.py): the n-gram drafter on its own, and the decoder on
the bundled SmolLM2-135M and random-weight models of other families (tests/archmodels.py).

Counts and equality only (drafted, accepted, the same greedy tokens, what the memory holds);
speed is measured in benchmarks/speed.py --only-lookup, never asserted here.
"""

from __future__ import annotations

import dataclasses

import archmodels
import pytest

from localagent.engines import lookup
from localagent.engines.base import EngineConfig
from localagent.engines.llamacpp import LlamaCppModel
from localagent.records import Message

# --- the drafter ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "limit", "kwargs", "draft"),
    [
        ([1, 2, 3, 4, 5, 9, 1, 2, 3], 2, {}, [4, 5]),  # the 3-gram [1 2 3] found, what followed it
        ([1, 2, 3, 4, 5, 9, 1, 2, 3], 8, {}, [4, 5, 9, 1, 2, 3]),  # up to the end of the context
        ([7, 2, 3, 4, 9, 2, 3, 5, 1, 2, 3], 1, {}, [5]),  # the latest occurrence wins
        ([2, 3, 8, 9, 1, 3, 6, 7, 2, 3], 3, {}, [8, 9, 1]),  # [2 3] beats the later [3]
        ([5, 6, 7, 1, 2, 3], 3, {}, []),  # no suffix occurred before
        ([4, 5, 8, 6, 4], 2, {}, [5, 8]),  # a 1-gram is enough
        ([4, 5, 8, 6, 4], 2, {"min_ngram": 2}, []),
        ([1, 2, 3, 4, 5, 6, 7, 1, 2], 2, {"window": 4}, []),  # the match lies outside the window
        ([1, 2, 3, 4, 5, 6, 1, 2], 2, {"window": 8}, [3, 4]),
        ([1, 2, 3, 1, 2], 0, {}, []),
        ([3], 4, {}, []),
    ],
)
def test_the_drafter_proposes_what_followed_the_longest_suffix(context, limit, kwargs, draft):
    assert lookup.Drafter(context, **kwargs).draft(limit) == draft


def test_the_drafter_follows_tokens_added_one_by_one():
    """Tokens added after the context are indexed as the context's own were."""
    drafter = lookup.Drafter([10, 11, 12, 13, 14])
    for token in (20, 10, 11):
        drafter.add(token)
    assert drafter.draft(3) == [12, 13, 14]
    drafter.add(99)  # [10 11 99] never occurred, nor [11 99], nor [99]
    assert drafter.draft(3) == []
    drafter.add(20)  # [99 20] no, [20] yes: what followed the first 20
    assert drafter.draft(2) == [10, 11]
    built = lookup.Drafter([10, 11, 12, 13, 14, 20, 10, 11, 99, 20])
    assert built.draft(2) == drafter.draft(2) and built._ends == drafter._ends


# --- the bundled model ------------------------------------------------------------------------

FILE = "\n".join(f"def handler_{i}(request):\n    return store.get(request.id, {i})" for i in range(12))
COPY = [
    Message("system", "You are a helpful coding assistant."),
    Message("user", f"Here is handlers.py:\n\n{FILE}\n\nRewrite the whole file with handler_7 returning None."),
]
PROSE = [Message("user", "Write a short story about a lighthouse keeper.")]


@pytest.fixture(scope="module")
def model(bundled_gguf) -> LlamaCppModel:
    m = LlamaCppModel(bundled_gguf, EngineConfig(n_ctx=2048, n_threads=2), name="smollm2-135m")
    yield m
    m.close()


def _chat(model: LlamaCppModel, messages: list[Message], *, on: bool | None, fresh: bool = True, **kwargs):
    model.config = dataclasses.replace(model.config, lookup=on)
    if fresh:
        model._forget()  # the same memory (the prompt evaluated from scratch) for both sides
    return model.chat(messages, [], **kwargs)


def _memory_follows_the_reply(model: LlamaCppModel) -> None:
    """What llama-cpp-python's generate leaves: the prompt and every reply token but the last
    in memory (all of them when an end token was chosen), `input_ids` saying which, and no
    rejected draft left in the KV cache."""
    import llama_cpp

    llama = model._llama
    _, tokens, _, generated = model._last
    n = llama.n_tokens
    assert n == len(tokens) + len(generated) - 1 or n == len(tokens) + len(generated)
    assert llama.input_ids[:n].tolist() == (tokens + generated)[:n]
    assert llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(llama.ctx), 0) == n - 1


def test_lookup_follows_the_config_for_an_attention_cache(model):
    assert model.memory_kind == "attention"
    for asked, on in ((None, lookup.DEFAULT_ON), (True, True), (False, False)):
        model.config = dataclasses.replace(model.config, lookup=asked)
        assert model._lookup_on() is on
    # off by default: on the CPUs measured a verified batch costs what its tokens cost alone
    reply = _chat(model, PROSE, on=None, max_tokens=8)
    assert reply.timings.drafted_tokens == 0


# llama.cpp's CPU kernels give a token evaluated in a batch other logits than the same token
# evaluated alone (measured on SmolLM2-135M: up to 0.8, logits spanning ~30), and the cells it
# leaves in the KV cache carry that into later tokens. Where the reference's top two are closer
# than this, batched verification may pick the other one: the only place the replies may part.
NOISE = 1.0


def _reference(model: LlamaCppModel, messages: list[Message], n: int) -> tuple[list[int], list[float]]:
    """Greedy decoding one token per llama_decode (what `generate` does at temperature 0), with
    the top-2 margin of the logits each token was chosen from."""
    import llama_cpp
    import numpy as np

    model._forget()
    llama = model._llama
    llama.eval(model.tokenize(model.render(messages, [])))
    tokens, margins = [], []
    while len(tokens) < n:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.ctx, -1), shape=(llama.n_vocab(),))
        top2 = np.partition(logits, -2)[-2:]
        token = int(np.argmax(logits))
        if model._is_end(token):
            break
        tokens.append(token)
        margins.append(float(top2[1] - top2[0]))
        llama.eval([token])
    return tokens, margins


def _same_up_to_noise(tokens: list[int], reference: list[int], margins: list[float]) -> int:
    """How many tokens agree; asserts that they agree to the end, or part at a near-tie."""
    agree = next((i for i, (a, b) in enumerate(zip(tokens, reference, strict=False)) if a != b), None)
    if agree is None:
        assert len(tokens) == len(reference)
        return len(tokens)
    assert margins[agree] < NOISE, f"parted at token {agree}, where the reference's margin was {margins[agree]:.2f}"
    return agree


@pytest.mark.parametrize("messages", [COPY, PROSE], ids=["copy", "prose"])
def test_greedy_replies_are_the_same_tokens_with_and_without_lookup(model, messages):
    off = _chat(model, messages, on=False, max_tokens=64)
    tokens_off = model._last[3]
    reference, margins = _reference(model, messages, 64)
    assert tokens_off == reference  # the engine's own path without lookup is that decoding
    on = _chat(model, messages, on=True, max_tokens=64)
    if _same_up_to_noise(model._last[3], reference, margins) == len(reference):
        assert on.raw == off.raw and on.finish_reason == off.finish_reason
    assert off.timings.drafted_tokens == off.timings.accepted_tokens == 0
    assert 0 <= on.timings.accepted_tokens <= on.timings.drafted_tokens
    _memory_follows_the_reply(model)


def test_a_copied_file_is_drafted_and_mostly_accepted(model):
    reply = _chat(model, COPY, on=True, max_tokens=96)
    t = reply.timings
    # the reply copies lines of the file (`def handler_7(request):\n    return`): drafts from
    # it are proposed and kept, each kept token one llama_decode saved
    assert "def handler_7(request):" in reply.raw
    assert t.drafted_tokens >= 10 and t.accepted_tokens >= 5
    assert t.accepted_tokens <= t.drafted_tokens and t.accepted_tokens < reply.usage.output_tokens
    _memory_follows_the_reply(model)


def test_the_next_call_evaluates_only_the_new_tokens(model):
    """A second chat over the extended conversation reuses the lookup reply in memory exactly
    as it reuses a reply decoded token by token."""
    evaluated = {}
    for on in (False, True):
        first = _chat(model, COPY, on=on, max_tokens=48)
        more = [*COPY, Message("assistant", first.text), Message("user", "Now add a docstring to handler_3.")]
        second = _chat(model, more, on=on, fresh=False, max_tokens=8)
        evaluated[on] = second.timings.prompt_tokens_evaluated
        assert second.usage.cached_input_tokens >= first.usage.input_tokens
    assert evaluated[True] == evaluated[False] < 40


def test_sampling_keeps_a_draft_only_where_the_sample_equals_it(model):
    replies = [_chat(model, COPY, on=True, max_tokens=48, temperature=0.7, seed=s) for s in (3, 3, 4)]
    assert replies[0].raw == replies[1].raw  # the seed's rng stream
    for reply in replies:
        assert 0 <= reply.timings.accepted_tokens <= reply.timings.drafted_tokens
        _memory_follows_the_reply(model)


def test_on_token_stops_the_reply_and_the_memory_stays_consistent(model):
    import llama_cpp

    pieces: list[str] = []

    def stop_after_twenty(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 20:
            raise TimeoutError("deadline")

    model.config = dataclasses.replace(model.config, lookup=True)
    model._forget()
    with pytest.raises(TimeoutError):
        model.chat(COPY, [], max_tokens=96, on_token=stop_after_twenty)
    llama = model._llama
    n = llama.n_tokens
    assert llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(llama.ctx), 0) == n - 1
    # the next call reuses what is in memory and decodes as a fresh start would
    again = _chat(model, COPY, on=True, fresh=False, max_tokens=24)
    assert again.timings.prompt_tokens_evaluated < again.usage.input_tokens
    assert again.raw == _chat(model, COPY, on=True, max_tokens=24).raw


# --- other families ---------------------------------------------------------------------------

LIST = [
    Message("system", "You copy text."),
    Message("user", "Repeat: alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi"),
]


@pytest.mark.parametrize("family", ["llama", "qwen3", "smollm3"])
def test_random_weights_decode_the_same_greedy_tokens(family):
    m = LlamaCppModel(archmodels.build(family), EngineConfig(n_ctx=1024, n_threads=2, tool_mode="native"))
    try:
        off = _chat(m, LIST, on=False, max_tokens=64)
        tokens_off = m._last[3]
        on = _chat(m, LIST, on=True, max_tokens=64)
        assert m._last[3] == tokens_off and on.finish_reason == off.finish_reason  # no near-tie flipped here
        assert on.timings.drafted_tokens > 0
        _memory_follows_the_reply(m)
    finally:
        m.close()


@pytest.mark.parametrize("family", ["mamba", "lfm2", "gemma3"])
def test_memory_that_cannot_be_cut_back_never_gets_lookup(family):
    """Recurrent, hybrid and sliding-window memory cannot drop rejected drafts: lookup is
    off there even when asked for."""
    m = LlamaCppModel(archmodels.build(family), EngineConfig(n_ctx=1024, n_threads=2, tool_mode="native", lookup=True))
    try:
        assert m.memory_kind != "attention" and not m._lookup_on()
        reply = m.chat(LIST, [], max_tokens=24)
        assert reply.timings.drafted_tokens == reply.timings.accepted_tokens == 0
    finally:
        m.close()
