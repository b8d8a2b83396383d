"""The llama.cpp engine given what it cannot use as it is: a GGUF of an architecture llama.cpp
does not know, a chat template that fails to render or to parse, a template without a system
role, prompts it cannot evaluate, and a checkpoint budget that holds only one or two states.

Each failure reaches the user as one `error:` / `hint:` pair whose hint fits the cause, never
as a traceback; each workaround (the folded system prompt, the checkpoint budget) keeps what it
works around correct: the cache is still reused and still gives what a fresh model gives.

The models are the tiny random-weight GGUFs of tests/archmodels.py, or copies of them with
one field changed (gguf's own writer and gguf-new-metadata), run by the real llama.cpp.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import archmodels
import gguf
import llama_cpp
import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from test_cache_reuse import SYSTEM, TOOLS, _assert_same, _Fresh, _step1, _step2, _step3
from test_cli_run import localagent, workspace  # noqa: F401 (fixture)

from localagent.engines.base import EngineConfig
from localagent.engines.llamacpp import LlamaCppModel
from localagent.errors import ContextOverflowError, EngineError, ModelLoadError
from localagent.records import Message, ToolCall

MADE_UP_ARCH = "zorblax"
BROKEN = "this template is broken"


def _config(**overrides) -> EngineConfig:
    return EngineConfig(**{"n_ctx": 2048, "n_threads": 2, "think": False, **overrides})


def _with_architecture(src: Path, dst: Path, arch: str) -> Path:
    """A copy of a GGUF whose general.architecture (and the keys named after it) is `arch`."""
    reader = gguf.GGUFReader(src)
    old = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        key = arch + name[len(old) :] if name.startswith(old + ".") else name
        kind = field.types[0]
        sub_type = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), kind, sub_type=sub_type)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def _with_template(src: Path, folder: Path, name: str, template: str) -> Path:
    """A copy of a GGUF whose tokenizer.chat_template is `template`."""
    source = folder / f"{name}.jinja"
    source.write_text(template, encoding="utf-8")
    out = folder / f"{name}.gguf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            "--chat-template-file",
            str(source),
            str(src),
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


def _one_error_and_hint(done: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """The run failed the way a user error should: exit 1, no traceback, exactly one
    `error:` line and one `hint:` line on stderr -> (error, hint)."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == "", done.stderr
    lines = done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(errors) == 1 and len(hints) == 1, done.stderr
    return errors[0], hints[0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad-input")


# --- an architecture llama.cpp does not know -----------------------------------------------


@pytest.fixture(scope="module")
def unknown_arch_gguf(folder) -> Path:
    # gemma3 is the smallest family (5 MB); only its architecture name changes
    return _with_architecture(archmodels.build("gemma3"), folder / "unknown-arch.gguf", MADE_UP_ARCH)


def test_the_copy_differs_from_a_loadable_model_only_in_its_architecture(folder):
    """The writer above makes a GGUF llama.cpp loads when the name is one it knows, so the
    failure below is the architecture's and not a broken file's."""
    same = _with_architecture(archmodels.build("gemma3"), folder / "same-arch.gguf", "gemma3")
    model = LlamaCppModel(same, _config(n_ctx=256))
    assert model.describe().memory.startswith("sliding-window")
    model.close()


def test_unknown_architecture_is_named_with_the_llama_cpp_python_version(unknown_arch_gguf):
    with pytest.raises(ModelLoadError) as caught:
        LlamaCppModel(unknown_arch_gguf, _config(n_ctx=256))
    error = caught.value
    assert f"'{MADE_UP_ARCH}'" in error.message and llama_cpp.__version__ in error.message
    assert "upgrade llama-cpp-python" in error.hint and "pip install -U llama-cpp-python" in error.hint
    # not the hint for a damaged download
    assert "models verify" not in error.hint and "truncated" not in error.hint


def test_unknown_architecture_through_the_cli(unknown_arch_gguf, workspace):
    done = localagent("run", "hello", "--model", str(unknown_arch_gguf), "-w", str(workspace), "--offline", timeout=120)
    error, hint = _one_error_and_hint(done)
    assert MADE_UP_ARCH in error and llama_cpp.__version__ in error
    assert "upgrade llama-cpp-python" in hint


# --- chat templates that fail ---------------------------------------------------------------


@pytest.fixture(scope="module")
def raising_template_gguf(folder) -> Path:
    # renders nothing: the template calls raise_exception whatever the messages
    template = "{{ raise_exception('" + BROKEN + "') }}"
    return _with_template(archmodels.build("gemma3"), folder, "raising-template", template)


@pytest.fixture(scope="module")
def unparsable_template_gguf(folder) -> Path:
    # a Jinja syntax error: the closing `}}` is missing one brace
    template = "{% for message in messages %}{{ message['content'] }{% endfor %}"
    return _with_template(archmodels.build("gemma3"), folder, "unparsable-template", template)


@pytest.mark.parametrize("mode", ["json", "native"])
def test_a_template_that_fails_to_render_names_the_model_and_the_error(raising_template_gguf, mode):
    model = LlamaCppModel(raising_template_gguf, _config(tool_mode=mode))
    try:
        with pytest.raises(EngineError) as caught:
            model.chat(_step1(), TOOLS, max_tokens=4)
        assert model.name in caught.value.message and BROKEN in caught.value.message
        assert caught.value.hint
        # without a system message there is no fold to try: the same error, not a traceback
        with pytest.raises(EngineError, match=BROKEN):
            model.chat([Message("user", "no system prompt")], (), max_tokens=4)
    finally:
        model.close()


def test_a_template_that_fails_to_render_through_the_cli(raising_template_gguf, workspace):
    done = localagent(
        "run", "hello", "--model", str(raising_template_gguf), "-w", str(workspace), "--offline", timeout=120
    )
    error, hint = _one_error_and_hint(done)
    assert "chat template" in error and BROKEN in error and raising_template_gguf.stem in error


# llama_cpp.Llama() compiles every chat template in the GGUF while loading: a syntax error is
# a load error naming the file


def test_a_template_that_does_not_parse_is_an_engine_error(unparsable_template_gguf):
    with pytest.raises(EngineError) as caught:
        LlamaCppModel(unparsable_template_gguf, _config(n_ctx=256))
    assert unparsable_template_gguf.stem in caught.value.message and "template" in caught.value.message
    assert "unexpected '}'" in caught.value.message  # Jinja's own words


def test_a_template_that_does_not_parse_through_the_cli(unparsable_template_gguf, workspace):
    done = localagent(
        "run", "hello", "--model", str(unparsable_template_gguf), "-w", str(workspace), "--offline", timeout=120
    )
    error, _ = _one_error_and_hint(done)
    assert "template" in error


# --- a template without a system role -------------------------------------------------------


@pytest.fixture(scope="module")
def gemma3() -> Path:
    return archmodels.build("gemma3")


def test_the_gemma2_template_rejects_a_system_turn(gemma3):
    """What the fold works around: the template itself raises on a system message."""
    model = LlamaCppModel(gemma3, _config(n_ctx=256))
    formatter = Jinja2ChatFormatter(template=model.chat_template, eos_token="</s>", bos_token="<s>")
    model.close()
    with pytest.raises(Exception, match="(?i)system role"):
        formatter(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])


def test_system_prompt_folds_into_the_first_user_turn_and_stays_folded(gemma3):
    """An agent conversation (json mode: the template renders no tools) on Gemma 2's template."""
    model = LlamaCppModel(gemma3, _config(tool_mode="json"))
    try:
        first = model.render(_step1(), TOOLS)
        user_turn = first.split("<start_of_turn>user\n", 1)[1]
        assert user_turn.startswith(SYSTEM.content)  # the system prompt opens the user turn
        assert _step1()[1].content in user_turn.split("<end_of_turn>", 1)[0]  # and the task follows it
        assert "<start_of_turn>system" not in first and first.count("<start_of_turn>user") == 1

        one = model.chat(_step1(), TOOLS, max_tokens=6)
        two = model.chat(_step2(), TOOLS, max_tokens=6)
        three = model.chat(_step3(), TOOLS, max_tokens=6)
        # every later prompt renders the first turn the same way (the whole step-1 prompt up
        # to the model's reply is still the start of step 3's), so the cache serves it
        assert model.render(_step3(), TOOLS).startswith(first.rsplit("<start_of_turn>model", 1)[0])
        for reply in (two, three):
            assert reply.timings.prompt_tokens_evaluated < reply.usage.input_tokens
            assert reply.usage.cached_input_tokens >= one.usage.input_tokens - 8
        # a new conversation shares the folded system prompt with the last one
        fresh_task = model.chat(_step1("List the folder."), TOOLS, max_tokens=4)
        assert fresh_task.usage.cached_input_tokens >= len(model.tokenize(SYSTEM.content))
    finally:
        model.close()


def test_a_plain_chat_folds_the_same_way_without_tools(gemma3):
    """Native mode with no tools: user and assistant turns only, the system prompt folded."""
    model = LlamaCppModel(gemma3, _config(tool_mode="native"))
    try:
        turns = [SYSTEM, Message("user", "Say hello.")]
        one = model.chat(turns, (), max_tokens=5)
        assert SYSTEM.content + "\n\nSay hello." in model.render(turns, ())
        turns += [Message("assistant", one.text or "hello"), Message("user", "Again, shorter.")]
        two = model.chat(turns, (), max_tokens=5)
        assert two.usage.cached_input_tokens >= one.usage.input_tokens - 8
        assert two.timings.prompt_tokens_evaluated < two.usage.input_tokens
    finally:
        model.close()


# --- failures whose hint fits their cause ---------------------------------------------------


def test_a_context_overflow_says_raise_the_context(gemma3):
    model = LlamaCppModel(gemma3, _config(n_ctx=256))
    try:
        with pytest.raises(ContextOverflowError) as caught:
            model.chat(_step2(), TOOLS, max_tokens=16)  # ~1,200 prompt tokens in a 256 window
        assert "context" in caught.value.message and "raise the context" in caught.value.hint
    finally:
        model.close()


@pytest.mark.parametrize("family", ["llama", "mamba"])
def test_a_decode_failure_that_is_not_a_full_cache_does_not_blame_the_context(family):
    """A token id outside the vocabulary makes llama_decode fail (-1): nothing to do with the
    context size, so the hint does not send the user to change it; the engine starts afresh."""
    model = LlamaCppModel(archmodels.build(family), _config(tool_mode="json"))
    try:
        model.prefill(_step1(), TOOLS)  # something in the memory to be reset
        good = model.tokenize("Hello there")
        with pytest.raises(EngineError) as caught:
            model.evaluate([*good, model._llama.n_vocab() + 7])
        error = caught.value
        assert not isinstance(error, ContextOverflowError)
        assert "llama_decode returned -1" in error.message and model.name in error.message
        assert "smaller context" not in error.hint and "raise the context" not in error.hint
        assert "n_ctx" not in error.hint
        # the next call works, from an empty memory
        again = model.prefill(_step1(), TOOLS)
        assert again.evaluated == len(again.tokens)
        reply = model.chat(_step1(), TOOLS, max_tokens=4)
        assert reply.usage.output_tokens > 0
    finally:
        model.close()


# --- the checkpoint memory bound ------------------------------------------------------------


def _short_step2() -> list[Message]:
    """test_cache_reuse's step 2 with a short tool result: a hybrid's state does not depend on
    the length (that file's long one is there for a sliding window), and fresh evaluations of
    short prompts keep this test quick."""
    call = ToolCall("read_file", {"path": "notes.txt"}, "call_1_1")
    result = "The release is planned for 3 March.\nOwner: Ada.\n"
    return [
        *_step1(),
        Message("assistant", "", (call,)),
        Message("tool", result, tool_call_id="call_1_1", name="read_file"),
    ]


def _short_step3() -> list[Message]:
    call = ToolCall("list_directory", {"path": "."}, "call_2_1")
    listing = Message("tool", "notes.txt\nREADME.md", tool_call_id="call_2_1", name="list_directory")
    return [*_short_step2(), Message("assistant", "", (call,)), listing]


def _checkpoint_bytes(path: Path) -> int:
    """The size of one checkpoint of this model (a recurrent state has one size)."""
    model = LlamaCppModel(path, _config(tool_mode="json"))
    model.prefill(_step1(), TOOLS)
    stats = model.checkpoint_stats()
    model.close()
    assert stats is not None and stats["count"] >= 1
    return stats["bytes"] // stats["count"]


@pytest.mark.parametrize("fits", [1, 2])
def test_a_small_checkpoint_budget_is_never_exceeded_and_reuse_stays_correct(fits):
    """granitehybrid (attention + Mamba-2 layers): a budget for `fits` checkpoints, over the
    conversation of test_cache_reuse (a re-rendered reply, two more steps, a retry after a
    cancelled reply, a new conversation). The budget holds after every call, checkpoints are
    evicted and still restored, and every prompt's next-token logits equal a fresh model's."""
    path = archmodels.build("granitehybrid")
    size = _checkpoint_bytes(path)
    # checkpoint_mib is in MiB and a tiny model's state is ~20 KB: a fraction of one
    config = _config(tool_mode="json", checkpoint_mib=(fits + 0.5) * size / 2**20)
    cached, fresh, other = LlamaCppModel(path, config), _Fresh(path, "json"), _Fresh(path, "json")
    budget = cached.checkpoint_stats()["budget_bytes"]
    assert fits * size <= budget < (fits + 1) * size

    def within_budget(where: str) -> None:
        stats = cached.checkpoint_stats()
        assert stats["bytes"] <= budget and stats["count"] <= fits, f"{where}: {stats}"

    def check(messages, where):
        done = cached.prefill(messages, TOOLS)
        within_budget(where)
        changed = list(done.tokens)
        for i in range(-24, -16):
            changed[i] = (changed[i] + 1) % len(done.logits)
        _assert_same(done.logits, fresh.logits(done.tokens), other.logits(changed), f"granitehybrid/{fits}: {where}")
        return done

    class Stop(Exception):
        pass

    def cancel_after_three():
        pieces: list[str] = []

        def on_token(piece: str) -> None:
            pieces.append(piece)
            if len(pieces) >= 3:
                raise Stop

        return on_token

    try:
        check(_step1(), "step 1")
        cached.chat(_step1(), TOOLS, max_tokens=6)
        within_budget("the reply to step 1")
        check(_short_step2(), "step 2 after a re-rendered reply")
        check(_short_step3(), "step 3")
        with pytest.raises(Stop):
            cached.chat(_short_step3(), TOOLS, max_tokens=50, on_token=cancel_after_three())
        within_budget("a cancelled reply")
        check(_short_step3(), "the same prompt after a cancelled reply")
        check(_step1("List the folder and say how many files it holds."), "a new conversation")
        stats = cached.checkpoint_stats()
        assert stats["evicted"] >= 1, stats  # the bound was reached, not merely respected
        assert stats["restored"] >= 1, stats  # and what it kept was still used
        assert 0 < stats["bytes"] <= budget
    finally:
        cached.close()
        fresh.model.close()
        other.model.close()
