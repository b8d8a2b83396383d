"""`models scan`: models other tools keep, registered where they are. A Hugging Face cache that
huggingface_hub itself writes from the fake hub, an Ollama store laid out as Ollama writes it,
an LM Studio folder and llama.cpp's cache, each in a temp folder (the `other_tools` fixture)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from fakehub import FILE, REPO, bundled_sha256, fake_hub  # noqa: F401 (fixtures)
from test_cli_models import cli  # noqa: F401 (fixture)

from localagent import settings, store
from localagent.errors import IntegrityError, ModelNotFoundError, StoreError

MODEL_LAYER = "application/vnd.ollama.image.model"


def tiny_gguf(path: Path, width: int = 64) -> Path:
    """A valid few-KB GGUF (llama architecture, two f32 tensors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(2048)
    w.add_block_count(2)
    w.add_embedding_length(width)
    w.add_head_count(4)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tensor("token_embd.weight", np.ones((16, width), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones((width,), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ollama_model(root: Path, model: str, tag: str, weights: bytes | None, *, namespace: str = "library") -> Path:
    """One model in an Ollama store as `ollama pull` leaves it: every layer a blob named
    sha256-<hex> under blobs/, the manifest (Docker v2 schema, Ollama's media types) under
    manifests/registry.ollama.ai/<namespace>/<model>/<tag>. `weights` None: the model blob is
    not there (a pull that was interrupted, a blob deleted by hand)."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes, media_type: str, write: bool = True) -> dict:
        digest = sha256_of(data)
        if write:
            (blobs / f"sha256-{digest}").write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    model_bytes = weights if weights is not None else b"GGUF-never-written"
    layers = [
        blob(model_bytes, MODEL_LAYER, write=weights is not None),
        blob(b"{{ .Prompt }}", "application/vnd.ollama.image.template"),
        blob(b'{"stop":["<|im_end|>"]}', "application/vnd.ollama.image.params"),
    ]
    config = json.dumps(
        {
            "model_format": "gguf",
            "model_family": "llama",
            "model_families": ["llama"],
            "model_type": "135M",
            "file_type": "Q4_1",
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
        }
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": blob(config, "application/vnd.docker.container.image.v1+json"),
        "layers": layers,
    }
    path = root / "manifests" / "registry.ollama.ai" / namespace / model / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


def rows_by_alias(rows):
    return {r.alias: r for r in rows}


def store_model_files() -> list[Path]:
    root = settings.models_dir()
    return [p for p in root.rglob("*.gguf")] if root.exists() else []


# ---------------------------------------------------------------- Hugging Face cache


def test_hf_cache_written_by_huggingface_hub_is_registered_in_place(other_tools, fake_hub, bundled_sha256, monkeypatch):
    from huggingface_hub import hf_hub_download

    cached = Path(hf_hub_download(REPO, FILE, cache_dir=other_tools.hf_cache, endpoint=fake_hub.url))
    assert cached.is_symlink() and other_tools.hf_cache in cached.parents

    rows = store.scan_all()
    row = rows_by_alias(rows)[f"hf.co/{REPO}"]
    assert (row.status, row.quant, row.source, row.path) == ("registered", "Q4_1", "hf-cache", cached)
    assert store_model_files() == []  # nothing was copied into the store

    fake_hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = store.resolve(f"hf.co/{REPO}")
    assert resolved.path == cached and resolved.sha256 == bundled_sha256 and resolved.source == "hf-cache"
    # a pull of the same name and quant finds it: no download
    assert store.pull(f"hf.co/{REPO}:Q4_1", progress=False).path == cached

    again = rows_by_alias(store.scan_all())[f"hf.co/{REPO}"]
    assert again.status == "known"

    removed = store.remove(f"hf.co/{REPO}")
    assert [m.alias for m in removed] == [f"hf.co/{REPO}"]
    assert cached.is_file() and cached.resolve().is_file()  # huggingface_hub's file stays
    assert store.installed() == []


# ---------------------------------------------------------------- Ollama


def test_ollama_store_is_registered_and_its_blob_never_deleted(other_tools, bundled_gguf, bundled_sha256):
    ollama_model(other_tools.ollama, "smol", "latest", bundled_gguf.read_bytes())
    ollama_model(other_tools.ollama, "tiny", "f32", tiny_gguf(other_tools.home / "t.gguf").read_bytes(), namespace="me")

    rows = rows_by_alias(store.scan_all())
    assert rows["ollama:smol:latest"].status == "registered" and rows["ollama:smol:latest"].quant == "Q4_1"
    assert rows["ollama:me/tiny:f32"].status == "registered"
    blob = other_tools.ollama / "blobs" / f"sha256-{bundled_sha256}"
    assert rows["ollama:smol:latest"].path == blob

    # Ollama's own spelling works: no tag means latest
    resolved = store.resolve("ollama:smol", offline=True)
    assert resolved.path == blob and resolved.sha256 == bundled_sha256 and resolved.gguf.architecture == "llama"
    listed = {(r.alias, r.quant): r for r in store.overview()}
    assert listed[("ollama:smol:latest", "Q4_1")].status == "installed"
    assert "Ollama" in listed[("ollama:smol:latest", "Q4_1")].description

    store.remove("ollama:smol")
    assert blob.is_file()  # Ollama's blob stays
    assert "ollama:smol:latest" not in {m.alias for m in store.installed()}


def test_ollama_name_resolves_without_a_scan(other_tools, bundled_gguf):
    ollama_model(other_tools.ollama, "smol", "135m", bundled_gguf.read_bytes())
    assert store.installed() == []
    resolved = store.resolve("ollama:smol:135m", offline=True)
    assert resolved.source == "ollama" and [m.alias for m in store.installed()] == ["ollama:smol:135m"]


def test_ollama_blob_missing_or_not_a_gguf_is_one_line(other_tools):
    ollama_model(other_tools.ollama, "gone", "latest", None)
    ollama_model(other_tools.ollama, "safetensors", "latest", b'{"__metadata__": {}}' + bytes(64))

    rows = rows_by_alias(store.scan_all())
    gone, notgguf = rows["ollama:gone:latest"], rows["ollama:safetensors:latest"]
    assert gone.status == "skipped" and "is missing from" in gone.problem and "ollama pull gone:latest" in gone.hint
    assert notgguf.status == "skipped" and "not a GGUF file" in notgguf.problem
    assert "ollama pull safetensors:latest" in notgguf.hint
    assert store.installed() == []

    with pytest.raises(StoreError) as err:
        store.resolve("ollama:gone", offline=True)
    assert "sha256-" in err.value.message and "ollama pull" in err.value.hint
    with pytest.raises(IntegrityError) as err:
        store.resolve("ollama:safetensors", offline=True)
    assert "not a GGUF file" in err.value.message
    with pytest.raises(ModelNotFoundError) as err:
        store.resolve("ollama:never-pulled", offline=True)
    assert "models scan" in err.value.hint


def test_ollama_manifest_that_lies_or_is_garbage(other_tools, bundled_gguf):
    path = ollama_model(other_tools.ollama, "liar", "latest", tiny_gguf(other_tools.home / "a.gguf").read_bytes())
    # the blob's bytes replaced by another GGUF: it no longer matches the digest it is named by
    blob = next(
        (other_tools.ollama / "blobs").glob(f"sha256-{json.loads(path.read_text())['layers'][0]['digest'][7:]}")
    )
    blob.write_bytes(tiny_gguf(other_tools.home / "b.gguf", width=32).read_bytes())
    junk = other_tools.ollama / "manifests" / "registry.ollama.ai" / "library" / "junk" / "latest"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"\xff{not json")
    nolayer = other_tools.ollama / "manifests" / "registry.ollama.ai" / "library" / "nolayer" / "latest"
    nolayer.parent.mkdir(parents=True)
    nolayer.write_text(
        json.dumps({"schemaVersion": 2, "layers": [{"mediaType": "application/vnd.ollama.image.template"}]})
    )

    rows = rows_by_alias(store.scan_all())
    assert rows["ollama:liar:latest"].status == "skipped" and "not the" in rows["ollama:liar:latest"].problem
    assert rows["ollama:junk:latest"].status == "skipped" and "cannot be read" in rows["ollama:junk:latest"].problem
    assert "has no model layer" in rows["ollama:nolayer:latest"].problem
    assert store.installed() == []


def test_changed_and_moved_files_are_reported_not_used(other_tools, bundled_gguf):
    tiny = tiny_gguf(other_tools.home / "t.gguf").read_bytes()
    ollama_model(other_tools.ollama, "tiny", "latest", tiny)
    lm = tiny_gguf(other_tools.lmstudio / "pub" / "Tiny-GGUF" / "tiny-F32.gguf")
    assert {r.status for r in store.scan_all()} == {"registered"}

    # LM Studio's file rewritten with other bytes: reported, and refused by name
    with lm.open("r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x01\x02\x03\x04")
    rows = rows_by_alias(store.scan_all())
    assert rows["lmstudio:pub/Tiny-GGUF"].status == "changed"
    with pytest.raises(IntegrityError) as err:
        store.resolve("lmstudio:pub/Tiny-GGUF", offline=True)
    assert "changed on disk" in err.value.message and "models scan" in err.value.hint

    # the Ollama model deleted (by `ollama rm`): reported as missing, and refused by name
    shutil.rmtree(other_tools.ollama / "blobs")
    rows = rows_by_alias(store.scan_all())
    assert rows["ollama:tiny:latest"].status == "missing"
    with pytest.raises(ModelNotFoundError) as err:
        store.resolve("ollama:tiny", offline=True)
    assert "is gone" in err.value.message and "models rm ollama:tiny:latest" in err.value.hint

    # moved to another folder LM Studio reads: the old registration is reported
    (other_tools.lmstudio / "pub").rename(other_tools.lmstudio / "pub2")
    lm2 = other_tools.lmstudio / "pub2" / "Tiny-GGUF" / "tiny-F32.gguf"
    moved = tiny_gguf(other_tools.lmstudio / "pub" / "Tiny-GGUF" / "sub" / "tiny-F32.gguf")
    rows = rows_by_alias(store.scan_all())
    assert rows["lmstudio:pub/Tiny-GGUF"].status == "moved" and str(moved) in rows["lmstudio:pub/Tiny-GGUF"].problem
    assert rows["lmstudio:pub2/Tiny-GGUF"].status == "registered" and rows["lmstudio:pub2/Tiny-GGUF"].path == lm2


# ---------------------------------------------------------------- LM Studio, llama.cpp


def test_lmstudio_and_llama_cache_folders(other_tools, split_gguf):
    lm = other_tools.lmstudio / "lmstudio-community" / "Smol-GGUF"
    lm.mkdir(parents=True)
    for part in split_gguf:
        (lm / part.name).symlink_to(part)
    tiny_gguf(lm / "mmproj-Smol-F16.gguf")  # a vision projector is no model
    tiny_gguf(other_tools.llama_cache / "fakeorg_Tiny-GGUF_tiny-Q8_0.gguf")
    (other_tools.llama_cache / "manifest=fakeorg=Tiny-GGUF=latest.json").write_text("{}")
    tiny_gguf(other_tools.llama_cache / "loose.gguf")

    rows = rows_by_alias(store.scan_all())
    assert set(rows) == {"lmstudio:lmstudio-community/Smol-GGUF", "hf.co/fakeorg/Tiny-GGUF", "llamacpp:loose"}
    split = rows["lmstudio:lmstudio-community/Smol-GGUF"]
    assert (split.status, split.quant, split.path.name) == ("registered", "Q4_K_M", split_gguf[0].name)
    assert rows["hf.co/fakeorg/Tiny-GGUF"].quant == "Q8_0" and rows["llamacpp:loose"].source == "llama-cache"

    resolved = store.resolve("lmstudio:lmstudio-community/Smol-GGUF:Q4_K_M", offline=True)
    assert len(resolved.parts) == 2 and resolved.size_bytes == sum(p.stat().st_size for p in split_gguf)
    from llama_cpp import Llama

    llm = Llama(str(resolved.path), n_ctx=128, n_threads=2, verbose=False)
    assert llm.n_vocab() == 49152

    store.remove("lmstudio:lmstudio-community/Smol-GGUF")
    assert all(p.is_file() for p in split_gguf)


def test_a_name_that_is_not_utf8_is_reported_not_registered(other_tools, cli):
    tiny_gguf(other_tools.lmstudio / os.fsdecode(b"pub\xff") / "M-GGUF" / "m-Q8_0.gguf")
    [row] = store.scan_all()
    assert row.status == "skipped" and "not UTF-8" in row.problem and "\ufffd" in row.alias
    assert store.installed() == []
    done = cli("models", "scan")
    assert done.returncode == 0 and "skipped: lmstudio:pub\ufffd/M-GGUF: its name or path is not UTF-8" in done.stdout


def test_where_each_tool_keeps_models(other_tools, monkeypatch):
    from localagent.store.scan import places

    home = other_tools.home
    assert dict((s, p) for s, p in places() if s in ("hf-cache", "llama-cache")) == {
        "hf-cache": other_tools.hf_cache,
        "llama-cache": other_tools.llama_cache,
    }
    for var in ("HF_HUB_CACHE", "OLLAMA_MODELS", "LLAMA_CACHE"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("HF_HOME", str(home / "hf-home"))
    found = places()
    assert ("hf-cache", home / "hf-home" / "hub") in found
    assert ("ollama", home / ".ollama" / "models") in found
    assert ("lmstudio", home / ".lmstudio" / "models") in found
    assert ("llama-cache", home / ".cache" / "llama.cpp") in found
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg"))
    assert ("hf-cache", home / "xdg" / "huggingface" / "hub") in places()

    # the default Ollama folder, found without OLLAMA_MODELS
    ollama_model(home / ".ollama" / "models", "tiny", "latest", tiny_gguf(home / "t.gguf").read_bytes())
    assert [(r.alias, r.status) for r in store.scan_all()] == [("ollama:tiny:latest", "registered")]


def test_nothing_to_find(other_tools):
    assert store.scan_all() == []
    assert store.discover() == []
