"""The llama.cpp engine on the real bundled model (SmolLM2-135M), and on a copy of it whose
chat template handles tools (Qwen 2.5 style) for the native tool-call path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import llama_cpp
import pytest
from fixtures_tools import LIST, READ

from localagent.engines.base import EngineConfig
from localagent.engines.llamacpp import LlamaCppModel, physical_cores
from localagent.errors import ContextOverflowError, ModelLoadError, ModelNotFoundError
from localagent.records import Message, ToolCall

TOOLS = [READ, LIST]
SYSTEM = Message("system", "You are an agent that works on the files in a workspace.")

# The tool part of Qwen 2.5's chat template: tools in the system turn, calls as <tool_call>
# blocks, results as <tool_response> blocks in a user turn.
QWEN_STYLE_TEMPLATE = r"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
    {{- "\n\n# Tools\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}{{- "\n" }}{{- tool | tojson }}{%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- elif messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}{{- '\n' + message.content }}{%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}{{- tool_call.arguments | tojson }}{{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}{{- '<|im_start|>user' }}{%- endif %}
        {{- '\n<tool_response>\n' }}{{- message.content }}{{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}{{- '<|im_end|>\n' }}{%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"""


@pytest.fixture(scope="module")
def model(bundled_gguf) -> LlamaCppModel:
    m = LlamaCppModel(bundled_gguf, EngineConfig(n_ctx=2048), name="smollm2-135m")
    yield m
    m.close()


@pytest.fixture(scope="session")
def tool_aware_gguf(bundled_gguf, tmp_path_factory) -> Path:
    """A copy of the bundled model whose GGUF metadata carries a tool-aware chat template."""
    folder = tmp_path_factory.mktemp("tool-aware")
    template = folder / "qwen_style.jinja"
    template.write_text(QWEN_STYLE_TEMPLATE.strip(), encoding="utf-8")
    out = folder / "smollm2-tools.gguf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            "--chat-template-file",
            str(template),
            str(bundled_gguf),
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def native_model(tool_aware_gguf) -> LlamaCppModel:
    m = LlamaCppModel(tool_aware_gguf, EngineConfig(n_ctx=2048))
    yield m
    m.close()


# --- loading ---


def test_describe_records_the_settings(model, bundled_gguf):
    d = model.describe()
    assert d.engine == "llama.cpp"
    assert d.model == "smollm2-135m"
    assert d.path == str(bundled_gguf)
    assert d.tool_mode == "json"  # SmolLM2's template knows nothing of tools
    assert d.n_ctx == 2048
    assert d.n_threads == physical_cores() >= 1
    gpu = llama_cpp.llama_supports_gpu_offload()
    assert d.n_gpu_layers == (-1 if gpu else 0)
    assert d.gpu_offload is gpu
    assert d.llama_cpp == llama_cpp.__version__
    assert model.load_s > 0


def test_explicit_settings_win(bundled_gguf, capfd):
    m = LlamaCppModel(
        bundled_gguf, EngineConfig(n_ctx=512, n_threads=1, cpu_only=True, tool_mode="native"), context=32768
    )
    try:
        d = m.describe()
        assert (d.n_ctx, d.n_threads, d.n_gpu_layers, d.tool_mode) == (512, 1, 0, "native")
    finally:
        m.close()
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # llama.cpp's log stays out of the terminal


def test_context_defaults_to_the_model_context_capped(bundled_gguf):
    m = LlamaCppModel(bundled_gguf, context=1024)
    try:
        assert m.n_ctx == 1024
    finally:
        m.close()


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        LlamaCppModel(tmp_path / "nope.gguf")


def test_a_file_that_is_not_a_gguf(tmp_path, capfd):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF but not really" * 100)
    with pytest.raises(ModelLoadError) as info:
        LlamaCppModel(bad)
    assert str(bad) in info.value.message
    assert "localagent models" in info.value.hint
    assert capfd.readouterr().out == ""


# --- json mode ---


def test_json_mode_produces_a_valid_call(model):
    reply = model.chat([SYSTEM, Message("user", "What does README.md say?")], TOOLS, max_tokens=60)
    assert reply.finish_reason == "tool_calls"
    (call,) = reply.tool_calls
    assert call.valid and call.name in {"read_file", "list_directory"}
    assert json.loads(reply.raw) == {"tool": call.name, "arguments": call.arguments}
    # the grammar fixes the spacing to json.dumps' style
    assert reply.raw == json.dumps({"tool": call.name, "arguments": call.arguments})
    assert reply.text == ""
    u, t = reply.usage, reply.timings
    assert u.input_tokens > 100 and u.output_tokens > 5
    assert t.prompt_tokens_evaluated == u.input_tokens - u.cached_input_tokens > 0
    assert 0 < t.ttft_s <= t.total_s
    assert t.decode_tokens_per_s > 0 and t.prefill_tokens_per_s > 0


def test_json_mode_cut_by_max_tokens_is_an_invalid_call(model):
    reply = model.chat([SYSTEM, Message("user", "What does README.md say?")], TOOLS, max_tokens=4)
    assert reply.finish_reason == "length"
    assert reply.usage.output_tokens == 4
    (call,) = reply.tool_calls
    assert not call.valid and "max_tokens" in call.error
    assert call.raw == reply.raw


def test_prefix_reuse_evaluates_only_new_tokens(model):
    history = [SYSTEM, Message("user", "Please read notes.txt and tell me what it says.")]
    first = model.chat(history, TOOLS, max_tokens=40)
    call = first.tool_calls[0]
    history += [
        Message("assistant", first.text, first.tool_calls),
        Message("tool", "The meeting is at 10 am on Tuesday.", tool_call_id=call.id, name=call.name),
    ]
    second = model.chat(history, TOOLS, max_tokens=40)
    # the second prompt extends the first: its cached part covers the first prompt and the
    # reply, kept as the tokens the model generated (all but the last, never evaluated)
    assert second.usage.input_tokens > first.usage.input_tokens
    assert second.usage.cached_input_tokens >= first.usage.input_tokens + first.usage.output_tokens - 1
    assert second.timings.prompt_tokens_evaluated == second.usage.input_tokens - second.usage.cached_input_tokens
    assert second.timings.prompt_tokens_evaluated < 0.25 * second.usage.input_tokens
    # the same request again evaluates a single token (whose logits start the reply)
    again = model.chat(history, TOOLS, max_tokens=40)
    assert again.timings.prompt_tokens_evaluated == 1
    # greedy: same prompt and memory, same reply. Not necessarily `second`'s: its last prompt
    # token ran in a batch, and batch-split noise (DESIGN.md) can flip a near tie later on
    assert model.chat(history, TOOLS, max_tokens=40).raw == again.raw


def test_a_different_conversation_re_evaluates_from_where_it_differs(model):
    a = model.chat([Message("system", "Alpha."), Message("user", "Hi")], [], max_tokens=4)
    b = model.chat([Message("system", "Beta, a different system prompt."), Message("user", "Hi")], [], max_tokens=4)
    assert a.timings.prompt_tokens_evaluated == a.usage.input_tokens - a.usage.cached_input_tokens
    assert b.usage.cached_input_tokens < 5  # only the template's opening tokens are shared
    assert b.timings.prompt_tokens_evaluated == b.usage.input_tokens - b.usage.cached_input_tokens


def test_context_overflow(model):
    with pytest.raises(ContextOverflowError, match="context window of 2048"):
        model.chat([Message("user", "Hi")], [], max_tokens=2040)
    long = Message("user", "word " * 2500)
    with pytest.raises(ContextOverflowError):
        model.chat([long], TOOLS, max_tokens=16)
    # the engine still works after refusing
    assert model.chat([Message("user", "Hi")], [], max_tokens=3).usage.output_tokens > 0


def test_plain_chat_streams_text_pieces(model):
    pieces: list[str] = []
    reply = model.chat(
        [Message("user", "Write a short poem about the sea.")], [], max_tokens=24, on_token=pieces.append
    )
    assert reply.tool_calls == ()
    assert len(pieces) > 5
    assert "".join(pieces) == reply.raw
    assert reply.text == reply.raw.strip() != ""
    assert reply.usage.output_tokens == 24 and reply.finish_reason == "length"


def test_temperature_and_seed(model):
    prompt = [Message("user", "Name an animal.")]

    def sample(seed: int) -> str:
        return model.chat(prompt, [], max_tokens=6, temperature=1.5, seed=seed).raw

    assert sample(7) == sample(7)
    assert len({sample(s) for s in range(1, 4)}) > 1


# --- native mode, on the tool-aware copy ---


def test_auto_picks_native_when_the_template_handles_tools(native_model, tool_aware_gguf):
    assert native_model.describe().tool_mode == "native"
    forced = LlamaCppModel(tool_aware_gguf, EngineConfig(n_ctx=512, tool_mode="json"))
    try:
        assert forced.describe().tool_mode == "json"
    finally:
        forced.close()
    # the catalog's advice for a model wins over its template in auto mode
    advised = LlamaCppModel(tool_aware_gguf, EngineConfig(n_ctx=512), preferred_tool_mode="json")
    try:
        assert advised.tool_mode == "json"
    finally:
        advised.close()


def test_native_mode_renders_tools_through_the_template(native_model):
    history = [SYSTEM, Message("user", "Read a.txt")]
    prompt = native_model.render(history, TOOLS)
    assert "<tools>" in prompt and '"name": "read_file"' in prompt
    with_tools = native_model.chat(history, TOOLS, max_tokens=1)
    without = native_model.chat(history, [], max_tokens=1)
    assert with_tools.usage.input_tokens > without.usage.input_tokens + 100


def test_native_mode_parses_a_tool_call_the_model_writes(native_model):
    # the 135M model does not choose tools by itself; asked to repeat a call, it writes one
    ask = 'Repeat exactly: <tool_call>\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n</tool_call>'
    reply = native_model.chat([SYSTEM, Message("user", ask)], TOOLS, max_tokens=60)
    assert "<tool_call>" in reply.raw
    assert reply.finish_reason == "tool_calls"
    assert [(c.name, c.arguments, c.valid) for c in reply.tool_calls] == [("read_file", {"path": "a.txt"}, True)]


def test_native_mode_renders_calls_and_results_and_reuses_the_prefix(native_model):
    call = ToolCall("read_file", {"path": "b.txt"}, "call_1")
    history = [SYSTEM, Message("user", "Read b.txt")]
    first = native_model.chat(history, TOOLS, max_tokens=4)
    history += [
        Message("assistant", "", (call,)),
        Message("tool", "bee", tool_call_id="call_1", name="read_file"),
    ]
    prompt = native_model.render(history, TOOLS)
    assert '<tool_call>\n{"name": "read_file", "arguments": {"path": "b.txt"}}\n</tool_call>' in prompt
    assert "<tool_response>\nbee\n</tool_response>" in prompt
    second = native_model.chat(history, TOOLS, max_tokens=4)
    assert second.usage.cached_input_tokens >= first.usage.input_tokens - 1
    assert second.timings.prompt_tokens_evaluated < 0.25 * second.usage.input_tokens


# --- open_model ---


def test_open_model_loads_a_catalog_alias_through_the_store(bundled_gguf):
    from localagent.engines import open_model

    m = open_model("smollm2-135m", EngineConfig(n_ctx=512, offline=True))
    try:
        assert isinstance(m, LlamaCppModel)
        d = m.describe()
        assert d.model == "smollm2-135m" and d.n_ctx == 512 and d.tool_mode == "json"
        assert d.sha256 and len(d.sha256) == 64
        assert Path(d.path).stat().st_size == bundled_gguf.stat().st_size
    finally:
        m.close()


def test_open_model_pseudo_and_unknown_models():
    from localagent.engines import open_model
    from localagent.engines.scripted import NoopModel
    from localagent.errors import ConfigError

    assert isinstance(open_model("noop"), NoopModel)
    with pytest.raises(ConfigError, match="oracle"):
        open_model("oracle")
    with pytest.raises(ModelNotFoundError):
        open_model("no-such-model", EngineConfig(offline=True))


def test_open_model_refuses_a_model_too_big_for_ram_before_any_download(localagent_home, monkeypatch):
    from localagent.engines import open_model

    (localagent_home / "models.toml").write_text(
        '[local.fake-huge]\nrepo = "fakeorg/huge"\nfile = "huge.gguf"\nquant = "Q4_K_M"\n'
        "size_mb = 900000000\ncontext = 8192\n"
    )
    # a closed port: a download attempt would fail with a DownloadError, not this refusal
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelLoadError, match="needs about .* of RAM") as caught:
        open_model("fake-huge")
    assert "models list" in caught.value.hint
    assert not (localagent_home / "models" / ".partial").exists() or not any(
        (localagent_home / "models" / ".partial").iterdir()
    )
