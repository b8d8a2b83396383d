"""json mode's constrained decoding through llguidance (engines/guided.py), on real components:
the bundled SmolLM2-135M, and tiny random-weight models of several families (tests/archmodels.py)
with their real tokenizers. Random weights are the hostile case: their logits know nothing of
JSON, so every token of a valid reply is the mask's doing.

Speed is measured in benchmarks/speed.py, never asserted here.
"""

from __future__ import annotations

import json
import re

import archmodels
import jsonschema  # a dependency of mcp, so installed with localagent
import pytest
from fixtures_tools import LIST, NOTHING, READ, SHORT_READ, WRITE, bounded_edit

from localagent.engines import guided, toolcalls
from localagent.engines.base import EngineConfig
from localagent.engines.llamacpp import LlamaCppModel
from localagent.records import Message, ToolSpec

TOOLS = [READ, WRITE, LIST]
SYSTEM = Message("system", "You are an agent that works on the files in a workspace.")

# for random weights: bounded strings, so that a reply can end before max_tokens
RANDOM_TOOLS = [bounded_edit(with_tags=True), NOTHING, SHORT_READ]

# quotes, backslashes, newlines, tabs, a control character, accents, CJK, an emoji (4 UTF-8
# bytes, split across byte tokens by most vocabularies), a JSON-looking fragment
AWKWARD = (
    'She said "hi" \\ then left.\n\tC:\\path\\to\\file.txt\n'
    "caf\u00e9 \u00fcber \u65e5\u672c\u8a9e \U0001f30a \x07 end\n"
    '{"tool": "x", "arguments": {}} \\" \\\\n'
)


@pytest.fixture(scope="module")
def model(bundled_gguf) -> LlamaCppModel:
    m = LlamaCppModel(bundled_gguf, EngineConfig(n_ctx=2048), name="smollm2-135m")
    yield m
    m.close()


def _ask(text: str) -> list[Message]:
    return [SYSTEM, Message("user", text)]


def _valid(raw: str, tools: list[ToolSpec]) -> dict:
    """The reply parsed and checked against json mode's schema, objects closed as the grammar
    reads them; json.loads is strict (no raw control characters in strings)."""
    obj = json.loads(raw)
    jsonschema.validate(obj, guided.closed_objects(toolcalls.json_mode_schema(tools)))
    assert raw == json.dumps(obj, ensure_ascii=False) or "\\" in raw  # json.dumps' spacing
    return obj


# --- the bundled model ------------------------------------------------------------------------


def test_json_mode_decodes_through_llguidance(model):
    assert model.describe().grammar == "llguidance"
    reply = model.chat(_ask("What does README.md say?"), TOOLS, max_tokens=60)
    assert reply.finish_reason == "tool_calls"
    (call,) = reply.tool_calls
    assert call.valid and call.name in {t.name for t in TOOLS}
    assert _valid(reply.raw, TOOLS) == {"tool": call.name, "arguments": call.arguments}
    # `{"`, `": "`, the rest of the tool name, the arguments' opening and the closing braces
    # are forced: appended without sampling
    u, t = reply.usage, reply.timings
    assert 5 <= t.forced_tokens < u.output_tokens
    assert t.prompt_tokens_evaluated == u.input_tokens - u.cached_input_tokens > 0
    assert 0 < t.ttft_s <= t.total_s and t.decode_tokens_per_s > 0


def test_the_decoder_counts_sampled_and_forced_tokens(model):
    """Straight through the decoder: every output token is either sampled or forced, and
    checking the sampled token first gives the same greedy reply as a mask every token."""
    import llguidance

    prompt = model.render(_ask("Write a short poem about the sea into sea.txt."), TOOLS)
    tokens = model.tokenize(prompt)
    ends = [t for t in range(model._llama.n_vocab()) if model._is_end(t)]
    tokenizer = guided.build_tokenizer(model._llama, ends)
    grammar = guided.compile_schema(tokenizer, toolcalls.json_mode_schema(TOOLS))
    results = []
    for check_first in (True, False):
        model.evaluate(tokens)
        decoder = guided.GuidedDecoder(
            model._llama,
            llguidance.LLMatcher(tokenizer, grammar),
            is_end=model._is_end,
            temperature=0.0,
            seed=0,
            check_first=check_first,
        )
        emitted: list[int] = []
        decoded = decoder.decode(80, emitted.extend)
        assert decoded.sampled + decoded.forced == len(decoded.tokens) == len(emitted)
        assert decoded.tokens == emitted and decoded.forced >= 3  # `{"`, `": "` and the closing at least
        # the memory holds the prompt and every reply token but the last, as llama-cpp-python's generate leaves it
        n = model._llama.n_tokens
        assert n == len(tokens) + len(decoded.tokens) - 1
        assert model._llama.input_ids[:n].tolist() == (tokens + decoded.tokens)[:n]
        results.append(decoded)
    first, every = results
    assert first.tokens == every.tokens
    assert every.masks == every.sampled  # a full mask for each sampled token
    assert first.masks < first.sampled  # only where the model's own first choice is refused


def test_greedy_is_deterministic_and_seeds_reproduce(model):
    ask = _ask("Write a haiku about rain into rain.txt.")
    # the first call evaluates the prompt in a batch, the others its last token alone: the
    # same memory from the second call on (batch-split noise can flip a near tie, DESIGN.md)
    greedy = [model.chat(ask, TOOLS, max_tokens=40).raw for _ in range(3)]
    assert greedy[1] == greedy[2]

    def sampled(seed: int) -> str:
        return model.chat(ask, TOOLS, max_tokens=40, temperature=1.2, seed=seed).raw

    assert sampled(11) == sampled(11)
    assert len({sampled(s) for s in (1, 2, 3, 4)}) > 1


def test_a_long_awkward_string_round_trips_exactly(model):
    """A forced string (here a const argument) goes through llguidance's tokenization of the
    forced bytes, the engine's UTF-8 stream and the JSON parse: it must come out unchanged."""
    save = ToolSpec(
        "save_note",
        "Save the note.",
        {"type": "object", "properties": {"text": {"const": AWKWARD}}, "required": ["text"]},
    )
    pieces: list[str] = []
    reply = model.chat(_ask("Save the note."), [save], max_tokens=200, on_token=pieces.append)
    assert reply.finish_reason == "tool_calls", reply.raw
    (call,) = reply.tool_calls
    assert call.valid and call.arguments == {"text": AWKWARD}
    assert "".join(pieces) == reply.raw
    assert reply.timings.forced_tokens > 0.8 * reply.usage.output_tokens


def test_long_sampled_strings_parse(model):
    """Strings the model writes itself (sampled, with escapes where it wants them)."""
    for temperature, seed in ((0.0, 0), (1.2, 2)):
        reply = model.chat(
            _ask('Write a poem with "quotes", a backslash \\ and several lines into poem.txt.'),
            [WRITE],
            max_tokens=160,
            temperature=temperature,
            seed=seed,
        )
        if reply.finish_reason in ("length", "repetition"):  # cut off, or stopped in a loop
            assert _closes(reply.raw), reply.raw
        else:
            obj = _valid(reply.raw, [WRITE])
            if "tool" in obj:
                assert reply.tool_calls[0].arguments == obj["arguments"]
            else:
                assert reply.text == obj["answer"]


def test_max_tokens_cuts_the_reply(model):
    for max_tokens in (1, 2, 5, 9):
        reply = model.chat(_ask("Write a long story into story.txt."), [WRITE], max_tokens=max_tokens)
        assert reply.finish_reason == "length"
        assert reply.usage.output_tokens == max_tokens  # forced tokens count, and are cut too
        (call,) = reply.tool_calls
        assert not call.valid and "max_tokens" in call.error and call.raw == reply.raw
        assert _closes(reply.raw)


def test_the_next_call_evaluates_only_new_tokens(model):
    history = _ask("Please read notes.txt and tell me what it says.")
    first = model.chat(history, TOOLS, max_tokens=40)
    assert first.timings.forced_tokens > 0
    call = first.tool_calls[0]
    history += [
        Message("assistant", first.text, first.tool_calls),
        Message("tool", "The meeting is at 10 am on Tuesday.", tool_call_id=call.id, name=call.name),
    ]
    second = model.chat(history, TOOLS, max_tokens=40)
    # the reply's tokens (sampled and forced) are in the cache, all but the last
    assert second.usage.cached_input_tokens >= first.usage.input_tokens + first.usage.output_tokens - 1
    new = second.usage.input_tokens - first.usage.input_tokens - first.usage.output_tokens
    assert (
        second.timings.prompt_tokens_evaluated
        == second.usage.input_tokens - second.usage.cached_input_tokens
        <= new + 1
    )
    again = model.chat(history, TOOLS, max_tokens=40)
    assert again.timings.prompt_tokens_evaluated == 1
    assert again.tool_calls or again.text


def test_a_reply_stopped_by_on_token_leaves_the_engine_usable(model):
    class Deadline(Exception):
        pass

    seen: list[str] = []

    def stop_late(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 6:
            raise Deadline

    ask = _ask("What does README.md say?")
    with pytest.raises(Deadline):
        model.chat(ask, TOOLS, max_tokens=60, on_token=stop_late)
    reply = model.chat(ask, TOOLS, max_tokens=60)
    assert reply.tool_calls and reply.tool_calls[0].valid
    assert reply.timings.prompt_tokens_evaluated == 1  # the prompt is still cached


def test_gbnf_decodes_where_llguidance_cannot_compile_the_schema(bundled_gguf):
    m = LlamaCppModel(bundled_gguf, EngineConfig(n_ctx=1024))
    try:
        # an inverted repetition range: llguidance's regex parser refuses it, llama.cpp's
        # converter writes "aa" (a back-reference or `\b` would do for llguidance too, but
        # llama.cpp's GBNF sampler crashes on what its converter makes of those)
        odd = ToolSpec(
            "pair",
            "Two letters.",
            {"type": "object", "properties": {"p": {"type": "string", "pattern": "^a{2,1}$"}}, "required": ["p"]},
        )
        reply = m.chat(_ask("Call pair."), [odd], max_tokens=12)
        assert m.describe().grammar.startswith("llama.cpp GBNF (llguidance cannot compile")
        assert reply.timings.forced_tokens == 0 and reply.raw.startswith("{")
        # other tools compile again
        assert m.chat(_ask("Read a.txt"), [READ], max_tokens=30).tool_calls[0].valid
        assert m.describe().grammar == "llguidance"
        m.guided = False
        assert m.chat(_ask("Read a.txt"), [READ], max_tokens=12).timings.forced_tokens == 0
        assert m.describe().grammar == "llama.cpp GBNF (switched off)"
    finally:
        m.close()


def test_closed_objects_reads_schemas_as_the_gbnf_converter_does():
    schema = {
        "type": "object",
        "properties": {
            "properties": {"type": "object", "properties": {"a": {"type": "integer"}}},
            "open": {"type": "object", "properties": {"b": {}}, "additionalProperties": True},
            "list": {
                "type": "array",
                "items": {"anyOf": [{"type": "object", "properties": {"c": {}}}, {"type": "null"}]},
            },
        },
    }
    closed = guided.closed_objects(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["properties"]["additionalProperties"] is False
    assert "additionalProperties" not in closed["properties"]  # a property named "properties" is not a schema keyword
    assert closed["properties"]["open"]["additionalProperties"] is True
    assert closed["properties"]["list"]["items"]["anyOf"][0]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the input is left alone


# --- random weights, several families -----------------------------------------------------------

FAMILIES = ["llama", "qwen3", "gemma3", "mamba", "granitehybrid"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_reply_is_valid_json_whatever_the_logits(family):
    m = LlamaCppModel(archmodels.build(family), EngineConfig(tool_mode="json", n_ctx=1024, n_threads=2))
    try:
        assert m.describe().grammar == "llguidance"
        ended = 0
        for i, (temperature, task) in enumerate(
            ((0.0, "Edit notes.txt."), (0.7, "What time is it?"), (1.5, "Edit a.txt."), (1.0, "Hi"))
        ):
            reply = m.chat(_ask(task), RANDOM_TOOLS, max_tokens=48, temperature=temperature, seed=i)
            assert reply.usage.output_tokens <= 48
            assert 0 < reply.timings.forced_tokens <= reply.usage.output_tokens
            if reply.finish_reason in ("length", "repetition"):
                cut = (
                    reply.usage.output_tokens == 48
                    if reply.finish_reason == "length"
                    else reply.usage.output_tokens < 48
                )
                assert cut and _closes(reply.raw), reply.raw
                continue
            ended += 1
            obj = _valid(reply.raw, RANDOM_TOOLS)
            if reply.tool_calls:
                (call,) = reply.tool_calls
                assert call.valid and (call.name, call.arguments) == (obj["tool"], obj["arguments"])
            else:
                assert reply.text == obj["answer"]
        assert ended > 0  # bounded strings end: some replies are whole
    finally:
        m.close()


# --- a JSON prefix checker, independent of the grammar ----------------------------------------

_PARTIAL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*(\\u[0-9a-fA-F]{0,3}|\\)$")


def _closes(prefix: str) -> bool:
    """Whether `prefix` is the start of a JSON document: completed with the fewest characters
    (a partial escape dropped, the string, literal or number finished, a value for a dangling
    key, the open containers closed), it must parse."""
    stack: list[str] = []
    expect, i, n = "value", 0, len(prefix)
    while i < n:
        c = prefix[i]
        if c in " \t\r\n":
            i += 1
        elif c == '"' and expect in ("value", "key"):
            j = i + 1
            while j < n and prefix[j] != '"':
                j += 2 if prefix[j] == "\\" else 1
            if j >= n:  # the reply ends inside this string
                body = prefix[i:]
                partial = _PARTIAL_ESCAPE.search(body)
                body = body[: partial.start(1)] if partial else body
                return _parses(prefix[:i] + body + '"', stack, "colon" if expect == "key" else "comma")
            i, expect = j + 1, "colon" if expect == "key" else "comma"
        elif c in "{[" and expect == "value":
            stack.append(c)
            expect, i = ("key" if c == "{" else "value"), i + 1
        elif c in "}]" and stack:
            stack.pop()
            expect, i = "comma", i + 1
        elif c == ":" and expect == "colon":
            expect, i = "value", i + 1
        elif c == "," and expect == "comma" and stack:
            expect, i = ("key" if stack[-1] == "{" else "value"), i + 1
        elif expect == "value" and (c.isalnum() or c in "-+."):
            j = i
            while j < n and (prefix[j].isalnum() or prefix[j] in "-+."):
                j += 1
            if j >= n:  # the reply ends inside this literal or number
                word = prefix[i:]
                done = next((w for w in ("true", "false", "null") if w.startswith(word)), None)
                done = done or (word + "0" if word[-1] in "-+.eE" else word)
                return _parses(prefix[:i] + done, stack, "comma")
            i, expect = j, "comma"
        else:
            return False
    return _parses(prefix, stack, expect)


def _parses(text: str, stack: list[str], expect: str) -> bool:
    tail = {"value": "0", "key": '"_": 0', "colon": ": 0", "comma": ""}[expect]
    if expect == "value" and not stack and text.strip():
        tail = ""  # a whole top-level value
    closing = "".join("}" if c == "{" else "]" for c in reversed(stack))
    try:
        json.loads(text + tail + closing)
    except json.JSONDecodeError:
        return False
    return True


@pytest.mark.parametrize(
    "prefix, ok",
    [
        ('{"tool": "re', True),
        ('{"tool": "read_file", "arguments": {"pa', True),
        ('{"tool": "read_file", "arguments": {"path": "a\\', True),
        ('{"tool": "read_file", "arguments": {"path": "a\\u00', True),
        ('{"answer": "x"}', True),
        ('{"tool": "e", "arguments": {"line": 1', True),
        ('{"tool": "e", "arguments": {"line": -', True),
        ('{"tool": "e", "arguments": {"dry_run": tr', True),
        ('{"tool": "e", "arguments": {"tags": ["ab", ', True),
        ('{"tool": "e", "arguments": {', True),
        ("{", True),
        ('{"tool" "x"', False),
        ('{"tool": "x"}}', False),
        ('{"a": tx', False),
        ('{"a": "\\q', False),
        ('{"a": "b\n', False),  # a raw newline inside a string
    ],
)
def test_the_prefix_checker(prefix, ok):
    assert _closes(prefix) is ok
