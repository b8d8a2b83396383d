"""One path from a name to a model (localagent.modelref): the kind of every spelling, where a
model's file is or will come from, and the RAM-fit check before any download, against the
fake hub on 127.0.0.1 serving the bundled SmolLM2 (and a repository whose listing says its
GGUF is a petabyte)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakehub import FakeHub, HubFile, bundled_sha256  # noqa: F401 (fixtures)

from localagent import modelref, settings, store
from localagent.bench.runner import model_kind
from localagent.catalog import HostedModel, LocalModel, load_catalog
from localagent.engines.base import EngineConfig
from localagent.errors import ConfigError, ModelLoadError, ModelNotFoundError

SMOL = "fakeorg/Smol-GGUF"
HUGE = "fakeorg/Huge-GGUF"
PETABYTE = 2**50


@pytest.fixture
def hub(bundled_gguf: Path, bundled_sha256: str, monkeypatch) -> Iterator[FakeHub]:  # noqa: F811
    whole = HubFile(bundled_gguf, bundled_sha256, bundled_gguf.stat().st_size)
    # the listing (and a HEAD) would say a petabyte: nothing may be fetched to find out otherwise
    huge = HubFile(bundled_gguf, bundled_sha256, PETABYTE)
    fake = FakeHub({SMOL: {"Smol-Q4_K_M.gguf": whole}, HUGE: {"Huge-Q4_K_M.gguf": huge}}).start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    try:
        yield fake
    finally:
        fake.stop()


def stored_files() -> list[Path]:
    """Every file under the model store (pulled files, partial downloads), manifests aside."""
    root = settings.models_dir()
    return [p for p in root.rglob("*") if p.is_file() and "manifests" not in p.parts] if root.exists() else []


def assert_nothing_fetched(hub: FakeHub) -> None:
    assert hub.gets == 0 and hub.sent == 0, hub.requests
    assert stored_files() == []
    assert store.installed() == []


# ---------------------------------------------------------------- the kind of a name


@pytest.mark.parametrize(
    "name, kind",
    [
        ("noop", "pseudo"),
        ("oracle", "pseudo"),
        ("smollm2-135m", "local"),
        ("smollm2-135m:Q8_0", "local"),
        ("qwen-small", "local"),  # an [aliases] name
        ("gpt-5-mini", "hosted"),
        ("hf.co/u/r:Q4_K_M", "local"),
        ("hf://u/r/m.gguf", "local"),
        ("ollama:qwen3:4b", "local"),
        ("lmstudio:pub/m", "local"),
        ("models/m.gguf", "local"),
    ],
)
def test_kind_of_every_spelling_is_the_benchs_too(name, kind):
    catalog = load_catalog()
    assert modelref.kind_of(name, catalog) == kind
    assert model_kind(name, catalog) == kind  # the bench asks the same function


def test_an_aliases_name_pointing_at_a_hosted_model_is_hosted(localagent_home):
    (localagent_home / "models.toml").write_text('[aliases]\nmy-cloud = "gpt-5-mini"\n')
    ref = modelref.refer("my-cloud")
    assert ref.kind == "hosted" and isinstance(ref.entry, HostedModel) and ref.hosted.alias == "gpt-5-mini"
    assert ref.installed is None and ref.source is None


def test_pseudo_and_unknown_names():
    assert modelref.refer("noop") == modelref.ModelRef("noop", "pseudo")
    with pytest.raises(ModelNotFoundError) as err:
        modelref.refer("smollm2-13m", offline=True)
    assert "smollm2-135m" in (err.value.hint or "")


# ---------------------------------------------------------------- where the file is or will come from


def test_an_installed_model_is_found_with_no_network(bundled_gguf, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port: any request would fail
    ref = modelref.refer("smollm2-135m")
    assert ref.kind == "local" and isinstance(ref.entry, LocalModel) and ref.source is None
    assert ref.installed is not None and ref.installed.path.stat().st_size == bundled_gguf.stat().st_size
    assert modelref.obtain(ref) is ref  # nothing left to get
    modelref.check_fit(ref)  # the real machine holds 135M parameters


def test_a_catalog_model_not_installed_comes_from_its_repo(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    ref = modelref.refer("qwen-small")
    entry = load_catalog().local_model("qwen-small")
    assert ref.installed is None and ref.entry == entry
    assert ref.source == modelref.HubSource(entry.repo, (entry.file,), int(entry.size_mb * 1_000_000), entry.quant)


def test_a_hub_name_not_installed_is_read_from_the_listing_without_a_download(hub, bundled_gguf):
    ref = modelref.refer(f"hf.co/{SMOL}")
    assert ref.kind == "local" and ref.entry is None and ref.installed is None
    assert ref.source == modelref.HubSource(SMOL, ("Smol-Q4_K_M.gguf",), bundled_gguf.stat().st_size, "Q4_K_M")
    assert any(r.startswith(f"GET /api/models/{SMOL}/tree/") for r in hub.requests)
    assert_nothing_fetched(hub)


def test_a_hub_name_offline_touches_no_network(hub):
    ref = modelref.refer(f"hf.co/{SMOL}", offline=True)
    assert ref.source == modelref.HubSource(SMOL, (), None, None) and hub.requests == []


# ---------------------------------------------------------------- fit before any download


def test_a_hub_model_too_big_for_ram_is_refused_with_zero_bytes_downloaded(hub):
    from localagent.engines import open_model

    with pytest.raises(ModelLoadError) as err:
        open_model(f"hf.co/{HUGE}")
    assert re.match(rf"hf\.co/{HUGE} needs about [\d.]+ TiB of RAM \(weights, KV cache at 8192", err.value.message)
    assert "models list" in (err.value.hint or "")
    assert_nothing_fetched(hub)


def test_too_big_at_the_ram_given_is_refused_then_fits_at_the_real_ram(hub, bundled_sha256):  # noqa: F811
    name = f"hf.co/{SMOL}"
    ref = modelref.refer(name)
    needed = modelref.need(ref).required_bytes
    assert needed is not None and needed > ref.source.size_bytes  # weights, KV cache, headroom
    with pytest.raises(ModelLoadError, match="needs about"):
        modelref.prepare(name, available=needed - 1)
    with pytest.raises(ConfigError, match=f"{name} at --ctx 4,096 needs about"):
        modelref.prepare(name, n_ctx=4096, available=modelref.need(ref, 4096).required_bytes - 1)
    assert_nothing_fetched(hub)

    ready = modelref.prepare(name)
    assert ready.installed is not None and ready.installed.sha256 == bundled_sha256
    assert ready.installed.path == settings.models_dir() / "hub" / SMOL / "Smol-Q4_K_M.gguf"
    assert ready.installed.context == 8192  # from the header, now that the file is here
    hub.stop()  # installed: the same name needs no network any more
    assert modelref.refer(name).installed == ready.installed


def test_bench_refuses_a_hub_model_too_big_before_any_download(hub, localagent_home):
    done = subprocess.run(
        [sys.executable, "-m", "localagent", "bench", "--model", f"hf.co/{HUGE}", "--task", "file-size"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert re.match(rf"error: hf\.co/{HUGE} needs about [\d.]+ TiB of RAM", lines[-2]), done.stderr
    assert lines[-1].startswith("hint: pick a model that fits"), done.stderr
    assert_nothing_fetched(hub)
    assert not (localagent_home / "runs").exists()


def test_a_ctx_past_the_trained_context_is_refused_before_the_download(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a download would fail otherwise
    entry = load_catalog().local_model("qwen-small")
    with pytest.raises(ConfigError) as err:
        modelref.prepare("qwen-small", n_ctx=entry.context + 1)
    assert f"is past the {entry.context:,} tokens qwen-small was trained on" in err.value.message
    assert stored_files() == []


def test_open_model_loads_a_hub_name_it_pulled(hub):
    from localagent.engines import open_model

    model = open_model(f"hf.co/{SMOL}", EngineConfig(n_ctx=512))
    try:
        described = model.describe()
        assert described.model == f"hf.co/{SMOL}" and described.n_ctx == 512
        assert Path(described.path) == settings.models_dir() / "hub" / SMOL / "Smol-Q4_K_M.gguf"
    finally:
        model.close()
    assert [m.alias for m in store.installed()] == [f"hf.co/{SMOL}"]
