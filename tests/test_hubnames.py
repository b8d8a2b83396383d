"""Any GGUF on the hub by name: `hf.co/USER/REPO[:QUANT]` and `hf://USER/REPO[/FILE]` against the
fake hub on 127.0.0.1 (file list, quant choice, LFS sha256, split GGUFs loaded by llama.cpp),
and the pure parsing and choosing underneath."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fakehub import FakeHub, HubFile, bundled_sha256, sha256_of  # noqa: F401 (fixtures)

from localagent import settings, store
from localagent.errors import ConfigError, IntegrityError, ModelNotFoundError, OfflineError
from localagent.hub import RepoFile
from localagent.store import hubnames

# ---------------------------------------------------------------- names and choices (pure)


@pytest.mark.parametrize(
    "name, split",
    [
        ("hf.co/bartowski/Qwen3-4B-GGUF", ("hf.co/bartowski/Qwen3-4B-GGUF", None)),
        ("hf.co/bartowski/Qwen3-4B-GGUF:q8_0", ("hf.co/bartowski/Qwen3-4B-GGUF", "Q8_0")),
        ("huggingface.co/bartowski/Qwen3-4B-GGUF:Q5_K_M", ("hf.co/bartowski/Qwen3-4B-GGUF", "Q5_K_M")),
        ("hf.co/u/r:latest", ("hf.co/u/r", None)),
        ("hf://u/r", ("hf.co/u/r", None)),
        ("hf://u/r/sub/model.IQ4_XS.gguf", ("hf.co/u/r", "IQ4_XS")),
        ("ollama:qwen3", ("ollama:qwen3:latest", None)),
        ("ollama:qwen3:4b", ("ollama:qwen3:4b", None)),
        ("ollama:hf.co/u/r:Q4_K_M", ("ollama:hf.co/u/r:Q4_K_M", None)),
        ("lmstudio:pub/model:Q4_K_M", ("lmstudio:pub/model", "Q4_K_M")),
        ("lmstudio:pub/model", ("lmstudio:pub/model", None)),
        ("qwen-small:Q8_0", ("qwen-small", "Q8_0")),
        ("qwen-small", ("qwen-small", None)),
    ],
)
def test_split_name(name, split):
    assert store.split_quant(name) == split


@pytest.mark.parametrize(
    "file, quant",
    [
        ("Qwen3-4B-Q4_K_M.gguf", "Q4_K_M"),
        ("model.q8_0.gguf", "Q8_0"),
        ("Qwen3-30B-A3B-UD-Q4_K_XL-00001-of-00002.gguf", "Q4_K_XL"),
        ("gemma-3-270m-it-BF16.gguf", "BF16"),
        ("Q4_K_M/model-Q4_K_M.gguf", "Q4_K_M"),
        ("ggml-model.gguf", None),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
    ],
)
def test_quant_of_a_file_name(file, quant):
    assert hubnames.quant_of(file) == quant


@pytest.mark.parametrize("name", ["hf.co/only-one-part", "hf.co/a/b/c", "hf://u/r/../x.gguf", "hf://u/r/readme.md"])
def test_badly_written_hub_names(name):
    with pytest.raises(ConfigError) as err:
        hubnames.parse_hub_name(name)
    assert name in err.value.message and "USER/REPO" in (err.value.hint or "")


def files(*names: str) -> list[RepoFile]:
    return [RepoFile(n, 1, None) for n in names]


@pytest.mark.parametrize(
    "listing, quant, chosen, note",
    [
        (["m-Q4_K_M.gguf", "m-Q8_0.gguf"], None, "m-Q4_K_M.gguf", None),
        (["m-Q4_K_M.gguf", "m-Q8_0.gguf"], "q8_0", "m-Q8_0.gguf", None),
        (["m-Q4_K_S.gguf", "m-Q8_0.gguf", "m-Q2_K.gguf"], None, "m-Q4_K_S.gguf", "using Q4_K_S, the nearest"),
        (["m-Q5_K_M.gguf", "m-Q3_K_M.gguf"], None, "m-Q5_K_M.gguf", "using Q5_K_M, the nearest"),
        (["m-Q4_K_M.gguf", "mmproj-m-F16.gguf"], None, "m-Q4_K_M.gguf", None),
        (["ggml-model.gguf"], None, "ggml-model.gguf", "has one GGUF"),
        (["a-Q4_K_M-00002-of-00002.gguf", "a-Q4_K_M-00001-of-00002.gguf"], None, "a-Q4_K_M-00001-of-00002.gguf", None),
    ],
)
def test_choose(listing, quant, chosen, note):
    choice = hubnames.choose("u/r", files(*listing), quant)
    assert choice.candidate.first == chosen
    assert (choice.note is None) if note is None else (note in choice.note)


def test_choose_refuses_what_it_cannot_tell():
    with pytest.raises(ModelNotFoundError, match="no GGUF files"):
        hubnames.choose("u/r", files("README.md", "model.safetensors"), None)
    with pytest.raises(ModelNotFoundError, match="2 GGUF models in u/r are Q4_K_M") as err:
        hubnames.choose("u/r", files("a-Q4_K_M.gguf", "b-Q4_K_M.gguf", "a-Q8_0.gguf"), None)
    assert err.value.hint == "name one: hf://u/r/a-Q4_K_M.gguf"
    with pytest.raises(ModelNotFoundError, match="no Q6_K GGUF") as err:
        hubnames.choose("u/r", files("a-Q4_K_M.gguf", "a-Q8_0.gguf"), "Q6_K")
    assert err.value.hint == "its quants: Q4_K_M, Q8_0"
    # a split with a part missing is no model
    with pytest.raises(ModelNotFoundError, match="no GGUF files"):
        hubnames.choose("u/r", files("a-Q4_K_M-00001-of-00002.gguf"), None)


# ---------------------------------------------------------------- against the fake hub

REPO = "fakeorg/Smol-GGUF"
NEAR = "fakeorg/Near-GGUF"
SPLIT = "fakeorg/Split-GGUF"
AMBIGUOUS = "fakeorg/Ambiguous-GGUF"
NONE = "fakeorg/Smol-safetensors"


@pytest.fixture
def hub(bundled_gguf, bundled_sha256, split_gguf, tmp_path, monkeypatch) -> Iterator[FakeHub]:
    whole = HubFile(bundled_gguf, bundled_sha256, bundled_gguf.stat().st_size)
    readme = tmp_path / "README.md"
    readme.write_text("# a model card\n")
    parts = {p.name: HubFile(p, sha256_of(p), p.stat().st_size) for p in split_gguf}
    fake = FakeHub(
        {
            REPO: {"Smol-Q4_K_M.gguf": whole, "Smol-Q8_0.gguf": whole, "mmproj-Smol-F16.gguf": whole},
            NEAR: {"Smol-Q4_K_S.gguf": whole, "Smol-Q8_0.gguf": whole},
            SPLIT: parts,
            AMBIGUOUS: {"a-Q4_K_M.gguf": whole, "b-Q4_K_M.gguf": whole},
            NONE: {"README.md": HubFile(readme, sha256_of(readme), readme.stat().st_size)},
        }
    ).start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    try:
        yield fake
    finally:
        fake.stop()


def test_hub_name_pulls_the_default_quant_and_keeps_its_name(hub, bundled_sha256, monkeypatch):
    pulled = store.pull(f"hf.co/{REPO}", progress=False)
    assert (pulled.alias, pulled.quant, pulled.note) == (f"hf.co/{REPO}", "Q4_K_M", None)
    assert pulled.sha256 == bundled_sha256
    assert pulled.path == settings.models_dir() / "hub" / REPO / "Smol-Q4_K_M.gguf"
    assert pulled.gguf is not None and pulled.gguf.architecture == "llama"
    assert any(r.startswith(f"GET /api/models/{REPO}/tree/main") for r in hub.requests)

    rows = {(r.alias, r.quant): r for r in store.overview()}
    assert rows[(f"hf.co/{REPO}", "Q4_K_M")].status == "installed"

    hub.stop()  # from now on the name resolves with no network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert store.resolve(f"hf.co/{REPO}").path == pulled.path
    assert store.resolve(f"hf.co/{REPO}:q4_k_m").path == pulled.path
    assert store.resolve(f"hf://{REPO}/Smol-Q4_K_M.gguf").path == pulled.path
    with pytest.raises(OfflineError) as err:
        store.resolve(f"hf.co/{REPO}:Q8_0")
    assert "offline" in err.value.message and f"localagent models pull hf.co/{REPO}:Q8_0" in err.value.hint

    removed = store.remove(f"hf.co/{REPO}")
    assert [m.quant for m in removed] == ["Q4_K_M"] and not pulled.path.exists()


def test_nearest_quant_is_said(hub):
    pulled = store.pull(f"hf.co/{NEAR}", progress=False)
    assert pulled.quant == "Q4_K_S" and pulled.path.name == "Smol-Q4_K_S.gguf"
    assert pulled.note and "no Q4_K_M; using Q4_K_S, the nearest" in pulled.note


def test_hf_scheme_names_a_file(hub):
    pulled = store.pull(f"hf://{REPO}/Smol-Q8_0.gguf", progress=False)
    assert (pulled.quant, pulled.path.name) == ("Q8_0", "Smol-Q8_0.gguf")


def test_split_gguf_is_pulled_verified_and_loaded_as_one_model(hub, split_gguf):
    name = f"hf.co/{SPLIT}:Q4_K_M"
    pulled = store.pull(name, progress=False)
    folder = settings.models_dir() / "hub" / SPLIT
    assert pulled.path == folder / split_gguf[0].name
    assert pulled.parts == tuple(folder / p.name for p in split_gguf[1:])
    assert pulled.size_bytes == sum(p.stat().st_size for p in split_gguf)
    manifest = json.loads(
        (settings.models_dir() / "manifests" / f"hf.co%2F{SPLIT.replace('/', '%2F')}" / "Q4_K_M.json").read_text()
    )
    assert [p["sha256"] for p in manifest["parts"]] == [sha256_of(p) for p in split_gguf[1:]]
    # the header's parameter count covers every part, not only the first
    assert pulled.gguf is not None and pulled.gguf.parameters > 100_000_000

    from llama_cpp import Llama

    llm = Llama(str(pulled.path), n_ctx=256, n_threads=2, verbose=False)
    out = llm.create_completion("The capital of France is", max_tokens=3, temperature=0)
    assert out["usage"]["completion_tokens"] > 0 and llm.n_vocab() == 49152

    # a part changed on disk is found, not used silently
    with pulled.parts[1].open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\xff\xfe")
    [verified] = store.verify(name)
    assert verified.status == "changed" and str(pulled.parts[1]) in verified.problem
    with pytest.raises(IntegrityError) as err:
        store.resolve(name, offline=True)
    assert "changed on disk" in err.value.message and "models rm" in err.value.hint

    store.remove(name)
    assert not folder.exists() or not any(folder.iterdir())


def test_interrupted_split_pull_keeps_the_parts_it_finished(hub, split_gguf):
    hub.drop_at, hub.drops = 1024 * 1024, 10  # every GET dies after 1 MiB: part 1 cannot finish
    from localagent.errors import DownloadError

    with pytest.raises(DownloadError, match="stopped at"):
        store.pull(f"hf.co/{SPLIT}", progress=False)
    assert store.installed() == []
    hub.drops = 0
    pulled = store.pull(f"hf.co/{SPLIT}", progress=False)
    assert len(pulled.parts) == 2
    # the first part continued from the bytes kept: one Range request
    assert any(r and r.startswith("bytes=") for r in hub.ranges)


@pytest.mark.parametrize(
    "name, error, fragments",
    [
        (f"hf.co/{NONE}", ModelNotFoundError, ("has no GGUF files", "-GGUF")),
        (f"hf.co/{AMBIGUOUS}", ModelNotFoundError, ("2 GGUF models", f"hf://{AMBIGUOUS}/a-Q4_K_M.gguf")),
        (f"hf.co/{REPO}:Q6_K", ModelNotFoundError, ("no Q6_K GGUF", "Q4_K_M, Q8_0")),
        ("hf.co/fakeorg/no-such-repo", ModelNotFoundError, ("no repository", "HF_TOKEN")),
        (f"hf://{REPO}/nope.gguf", ModelNotFoundError, ("no GGUF file 'nope.gguf'", "Smol-Q4_K_M.gguf")),
    ],
)
def test_bad_hub_names_are_one_line_each(hub, name, error, fragments):
    with pytest.raises(error) as err:
        store.pull(name, progress=False)
    text = f"{err.value.message}\n{err.value.hint}"
    assert err.value.hint and "\n" not in err.value.message
    for fragment in fragments:
        assert fragment in text
    assert hub.gets == 0  # nothing was downloaded


def test_hub_name_while_offline_touches_no_network(hub, monkeypatch):
    monkeypatch.setenv("LOCALAGENT_OFFLINE", "1")
    with pytest.raises(OfflineError) as err:
        store.resolve(f"hf.co/{REPO}")
    assert "not on this machine" in err.value.message and "models scan" in err.value.hint
    assert hub.requests == []


def test_lying_hub_sha256_removes_the_download(hub):
    hub.corrupt = True
    with pytest.raises(IntegrityError, match="does not match the hub's LFS sha256"):
        store.pull(f"hf.co/{REPO}", progress=False)
    assert store.installed() == []
