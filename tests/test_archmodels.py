"""The architecture fixtures: each tiny model loads in the real llama.cpp as its architecture,
tokenizes with its real vocabulary, renders its real template, decodes deterministically and has
the memory kind (recurrent, hybrid, sliding window) its family claims.

The first run downloads llama-cpp-python's source release (pip, ~10 s with pip's cache) and
writes the models (~25 s); later runs use the cache in .cache/test-models.
"""

from __future__ import annotations

import io
import itertools
import tarfile
from pathlib import Path

import llama_cpp
import pytest
from archmodels import FAMILIES, N_SWA, Family, _extract, build, read_kv, template_text, vocab_path
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

TEXT = "Hello, world! Ünïcödé naïve café 123 4567\n\tdef f(x):\n        return x ** 2  # 🤖"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a text file in the workspace.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    }
]


def _load(path: Path, **kwargs) -> llama_cpp.Llama:
    # One thread: these models are too small to gain from two, and ggml's threads spin-wait,
    # so on 2 busy cores (other test sessions) two threads took this file from 26 s to 72 s.
    return llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=1, verbose=False, **kwargs)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def loaded(request) -> tuple[Family, llama_cpp.Llama]:
    # Module scope and one param at a time: pytest runs all tests of a family before loading
    # the next, so each model loads once and only one is in memory.
    family = FAMILIES[request.param]
    llm = _load(build(family.name))
    yield family, llm
    llm.close()


def test_loads_as_its_architecture(loaded):
    family, llm = loaded
    assert llm.metadata["general.architecture"] == family.arch
    assert llm.metadata["tokenizer.chat_template"] == template_text(family)


def test_tokenizes_like_the_vocab_file(loaded):
    family, llm = loaded
    reference = _load(vocab_path(family), vocab_only=True)
    try:
        for add_bos in (True, False):
            expected = reference.tokenize(TEXT.encode(), add_bos=add_bos)
            assert llm.tokenize(TEXT.encode(), add_bos=add_bos) == expected
        assert llm.n_vocab() == reference.n_vocab()
    finally:
        reference.close()
    # The tokens added over [PAD] slots are single tokens, as in the real Qwen tokenizers.
    for token in family.added_tokens:
        assert llm.tokenize(token.text.encode(), add_bos=False, special=True) == [token.id]
    if family.eos:
        assert llm.detokenize([llm.token_eos()], special=True).decode() == family.eos
    if family.end_of_turn:
        (token,) = llm.tokenize(family.end_of_turn.encode(), add_bos=False, special=True)
        assert llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), token)


def test_template_renders_a_conversation(loaded):
    family, llm = loaded
    formatter = Jinja2ChatFormatter(
        template=template_text(family),
        bos_token=llm.detokenize([llm.token_bos()], special=True).decode(errors="replace"),
        eos_token=llm.detokenize([llm.token_eos()], special=True).decode(errors="replace"),
    )
    messages = [
        {"role": "user", "content": "What is in README.md?"},
        {"role": "assistant", "content": "A short description of the project."},
    ]
    prompt = formatter(messages=messages).prompt
    assert "What is in README.md?" in prompt and "A short description of the project." in prompt
    if family.tool_format != "none":
        with_tools = formatter(messages=messages[:1], tools=TOOLS).prompt
        assert "read_file" in with_tools


def test_greedy_decoding_is_deterministic(loaded):
    family, llm = loaded
    prompt = llm.tokenize(TEXT.encode())
    runs = []
    for _ in range(2):
        llm.reset()  # from position 0: allowed even for recurrent memory
        runs.append(list(itertools.islice(llm.generate(prompt, temp=0.0), 8)))
    assert runs[0] == runs[1]
    assert len(runs[0]) == 8


def test_memory_kind_matches_llama_cpp(loaded):
    family, llm = loaded
    assert llama_cpp.llama_model_is_recurrent(llm.model) == family.recurrent
    assert llama_cpp.llama_model_is_hybrid(llm.model) == family.hybrid
    assert llama_cpp.llama_model_n_swa(llm.model) == (N_SWA if family.swa else 0)
    assert family.truncatable == (not family.recurrent and not family.hybrid)


def test_a_rebuild_is_byte_identical(tmp_path, monkeypatch):
    # Deterministic seeds: a cache rebuilt on another machine holds the same model.
    first = build("mamba").read_bytes()
    release = vocab_path("mamba").parents[3]
    monkeypatch.setenv("LOCALAGENT_TEST_CACHE", str(tmp_path))
    monkeypatch.setattr("archmodels.source_release", lambda: release)
    assert build("mamba").read_bytes() == first


def test_read_kv_agrees_with_gguf_reader():
    import gguf

    path = vocab_path("gemma3")  # llama-spm: small enough for GGUFReader (3 s)
    ours = read_kv(path)
    theirs = gguf.GGUFReader(path).fields
    assert set(ours) == {k for k in theirs if not k.startswith("GGUF.")}
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.bos_token_id", "llama.context_length"):
        value = ours[key][2]
        assert (value.decode() if isinstance(value, bytes) else value) == theirs[key].contents()
    assert [t.decode() for t in ours["tokenizer.ggml.tokens"][2]] == theirs["tokenizer.ggml.tokens"].contents()
    assert ours["tokenizer.ggml.token_type"][2] == theirs["tokenizer.ggml.token_type"].contents()
    assert ours["tokenizer.ggml.scores"][2] == pytest.approx(theirs["tokenizer.ggml.scores"].contents())


def test_extract_keeps_only_wanted_regular_files(tmp_path):
    top = "llama_cpp_python-9.9.9"
    sdist = tmp_path / "release.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:

        def add(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add(f"{top}/vendor/llama.cpp/models/ggml-vocab-a.gguf", b"vocab")
        add(f"{top}/vendor/llama.cpp/models/templates/T.jinja", b"template")
        add(f"{top}/vendor/llama.cpp/tests/test-chat.cpp", b"cpp")
        add(f"{top}/vendor/llama.cpp/models/other.gguf")  # not wanted
        add(f"{top}/vendor/llama.cpp/models/templates/../../../../escape.jinja")
        add(f"{top}/../ggml-vocab-b.gguf")
        add("/abs/vendor/llama.cpp/models/ggml-vocab-c.gguf")
        add(f"{top}/vendor/llama.cpp/models/ggml-vocab-link.gguf", kind=tarfile.SYMTYPE, link="/etc/passwd")
    dest = tmp_path / "out"
    _extract(sdist, top, dest)
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and p != sdist)
    assert found == [
        "out/vendor/llama.cpp/models/ggml-vocab-a.gguf",
        "out/vendor/llama.cpp/models/templates/T.jinja",
        "out/vendor/llama.cpp/tests/test-chat.cpp",
    ]


# layers that keep a KV cache, as each architecture's graph in llama.cpp builds them
ATTENTION_LAYERS = {
    "llama": 2, "qwen2": 2, "qwen3": 2, "qwen35": 1, "lfm2": 1, "mamba": 0, "mamba2": 0,
    "gemma3": 3, "gemma4": 3, "granitehybrid": 1, "smollm3": 4,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ATTENTION_LAYERS))
def test_header_counts_only_the_layers_that_keep_a_kv_cache(name):
    """RAM NEEDED of a hybrid or recurrent model counts its attention layers only."""
    from localagent import ggufinfo

    info = ggufinfo.read(build(name))
    assert info.attention_layers == ATTENTION_LAYERS[name]
    per_layer = info.kv_bytes_per_token
    if ATTENTION_LAYERS[name] == 0:
        assert per_layer == 0
    else:
        assert per_layer and per_layer % ATTENTION_LAYERS[name] == 0
