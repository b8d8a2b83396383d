"""The model store against a fake hub on 127.0.0.1: pulls, verification, resume, offline
resolution, bundled models, imports and removal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from fakehub import COMMIT, FILE, REPO, bundled_sha256, fake_hub  # noqa: F401 (fixtures)

from localagent import settings, store
from localagent.errors import (
    ConfigError,
    DownloadError,
    IntegrityError,
    ModelNotFoundError,
    OfflineError,
    StoreError,
)

DROP_AT = 40 * 1024 * 1024


def write_tiny_gguf(path: Path, *, tools: bool = True) -> Path:
    """A valid 5 KB GGUF (llama architecture, two f32 tensors)."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(2048)
    w.add_block_count(2)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    body = "{% for m in messages %}{{ m.content }}{% endfor %}"
    w.add_chat_template(("{% if tools %}{{ tools | tojson }}{% endif %}" if tools else "") + body)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tensor("token_embd.weight", np.ones((16, 64), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones((64,), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def store_files() -> list[str]:
    root = settings.models_dir()
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


# ---------------------------------------------------------------- pulls


def test_pull_verifies_and_later_resolves_with_the_hub_stopped(fake_hub, bundled_sha256):
    pulled = store.pull("fake-smol", progress=False)

    assert pulled.sha256 == bundled_sha256
    assert pulled.path == settings.models_dir() / "hub" / REPO / FILE
    assert pulled.path.stat().st_size == pulled.size_bytes == 98362432
    assert pulled.gguf.architecture == "llama" and pulled.gguf.context_length == 8192
    assert store.default_context(pulled) == 8192
    manifest = json.loads((settings.models_dir() / "manifests" / "fake-smol" / "Q4_1.json").read_text())
    assert manifest["source"] == "hub" and manifest["commit"] == COMMIT and manifest["repo"] == REPO
    assert manifest["sha256"] == bundled_sha256
    assert not list((settings.models_dir() / ".partial").glob("*.part"))
    assert fake_hub.ranges == [None]

    fake_hub.stop()
    seen = len(fake_hub.requests)
    again = store.pull("fake-smol", progress=False)
    resolved = store.resolve("fake-smol")
    assert again.path == resolved.path == pulled.path and resolved.sha256 == bundled_sha256
    assert len(fake_hub.requests) == seen
    assert [(m.alias, m.quant, m.present) for m in store.installed()] == [("fake-smol", "Q4_1", True)]


def test_wrong_bytes_are_removed_and_reported(fake_hub, bundled_sha256):
    fake_hub.corrupt = True
    with pytest.raises(IntegrityError) as err:
        store.pull("fake-smol", progress=False)
    assert "does not match" in err.value.message and bundled_sha256 in err.value.message
    assert "removed" in err.value.message
    assert store_files() == []  # no .part, no file, no manifest
    assert store.installed() == []


def test_catalog_sha256_that_the_hub_contradicts_stops_before_downloading(fake_hub):
    with pytest.raises(IntegrityError) as err:
        store.pull("fake-pinned", progress=False)
    assert "catalog expects" in err.value.message
    assert fake_hub.gets == 0
    assert store.installed() == []


def test_another_quant_is_used_offline_but_pull_wants_the_catalogs(fake_hub, monkeypatch):
    q8 = store.pull("fake-smol", quant="q8_0", progress=False)
    assert q8.quant == "Q8_0" and q8.path.name == "SmolLM2-135M-Instruct.Q8_0.gguf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert store.resolve("fake-smol").path == q8.path  # what is installed, no download
    assert store.resolve("fake-smol:Q8_0").path == q8.path
    with pytest.raises(OfflineError):
        store.pull("fake-smol")  # the catalog's Q4_1 is not installed
    with pytest.raises(OfflineError):
        store.resolve("fake-smol", quant="Q4_1")
    assert [m.quant for m in store.installed()] == ["Q8_0"]


def test_dropped_connection_is_resumed_in_the_same_pull(fake_hub, bundled_sha256):
    fake_hub.drop_at, fake_hub.drops = DROP_AT, 1
    reports = []
    pulled = store.pull("fake-smol", progress=lambda done, total: reports.append((done, total)))
    assert pulled.sha256 == bundled_sha256
    assert fake_hub.ranges == [None, f"bytes={DROP_AT}-"]
    size = pulled.size_bytes
    assert reports[-1] == (size, size) and (DROP_AT, size) in reports
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)


def test_interrupted_pull_resumes_in_a_new_process(fake_hub, bundled_sha256, localagent_home):
    # the connection drops at 40 MB and the retry gets nothing: the pull fails, the part stays
    fake_hub.drop_at, fake_hub.drops = DROP_AT, 2
    with pytest.raises(DownloadError) as err:
        store.pull("fake-smol", progress=False)
    assert "run the same pull again" in err.value.hint
    part = settings.models_dir() / ".partial" / f"{bundled_sha256}.part"
    assert part.stat().st_size == DROP_AT
    assert store.installed() == []

    env = {**os.environ, "LOCALAGENT_HOME": str(localagent_home), "HF_ENDPOINT": fake_hub.url}
    done = subprocess.run(
        [sys.executable, "-m", "localagent", "models", "pull", "fake-smol"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert fake_hub.ranges == [None, f"bytes={DROP_AT}-", f"bytes={DROP_AT}-"]
    assert store.resolve("fake-smol", offline=True).sha256 == bundled_sha256
    assert not part.exists()


@pytest.mark.parametrize(
    "alias, words",
    [
        ("fake-smol:Q5_K_M", "has no file 'SmolLM2-135M-Instruct.Q5_K_M.gguf'"),
        ("fake-norepo", "no repository 'fakeorg/no-such-repo'"),
    ],
)
def test_missing_on_the_hub(fake_hub, alias, words):
    with pytest.raises(ModelNotFoundError) as err:
        store.pull(alias, progress=False)
    assert words in err.value.message and err.value.hint
    assert store_files() == []


def test_hub_unreachable_is_one_download_error(fake_hub):
    fake_hub.stop()
    with pytest.raises(DownloadError) as err:
        store.resolve("fake-smol")
    assert "cannot reach the hub" in err.value.message and fake_hub.url in err.value.message
    assert "models import" in err.value.hint


@pytest.mark.parametrize("how", ["env", "argument"])
def test_offline_names_the_alias_and_the_ways_out(fake_hub, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError) as err:
        store.resolve("fake-smol", offline=True if how == "argument" else None)
    assert "'fake-smol'" in err.value.message and "offline" in err.value.message
    hint = err.value.hint
    assert "models pull fake-smol" in hint and "smollm2-135m" in hint and "models import" in hint
    assert fake_hub.requests == []


def test_unknown_alias_suggests_close_names():
    with pytest.raises(ModelNotFoundError) as err:
        store.resolve("qwen-smal")
    assert "unknown model 'qwen-smal'" in err.value.message
    assert "'qwen-small'" in err.value.hint


def test_unknown_quant_lists_the_known_ones():
    with pytest.raises(ModelNotFoundError) as err:
        store.pull("qwen-small", quant="Q2_K", progress=False)
    assert "Q4_K_M" in err.value.hint and "Q8_0" in err.value.hint


def test_hosted_alias_is_not_pullable():
    with pytest.raises(ModelNotFoundError) as err:
        store.pull("gpt-5-mini")
    assert "hosted" in err.value.message


def test_unwritable_store_is_a_store_error(fake_hub, localagent_home):
    (localagent_home / "models").write_text("a file where the store should be")
    with pytest.raises(StoreError) as err:
        store.pull("fake-smol", progress=False)
    assert str(localagent_home / "models") in err.value.message
    assert "LOCALAGENT_HOME" in err.value.hint


# ---------------------------------------------------------------- bundled model


def test_bundled_model_resolves_offline_in_place(bundled_gguf, bundled_sha256, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = store.resolve("smollm2-135m")
    assert resolved.path == bundled_gguf and resolved.source == "bundled"
    assert resolved.sha256 == bundled_sha256 and resolved.entry.alias == "smollm2-135m"
    assert resolved.context == 8192
    assert store_files() == ["manifests/smollm2-135m/Q4_1.json"]  # registered, not copied

    removed = store.remove("smollm2-135m")
    assert [m.alias for m in removed] == ["smollm2-135m"]
    assert bundled_gguf.is_file()  # site-packages is never touched
    assert store.installed() == []


# ---------------------------------------------------------------- import, paths, rm


def test_import_registers_a_copy(tmp_path):
    src = write_tiny_gguf(tmp_path / "tiny.gguf")
    imported = store.import_file(src, "tiny")
    assert imported.path.parent == settings.models_dir() / "imported" / "tiny"
    assert imported.path.read_bytes() == src.read_bytes()
    assert imported.sha256 == store.sha256_file(src)
    assert imported.entry is None and imported.context == 2048 and imported.quant == "F32"
    assert imported.gguf.template_knows_tools is True
    src.unlink()
    assert store.resolve("tiny", offline=True).path == imported.path


@pytest.mark.parametrize("damage", ["truncated", "not-gguf"])
def test_import_of_a_bad_file_leaves_the_good_one(tmp_path, damage):
    good = store.import_file(write_tiny_gguf(tmp_path / "good.gguf"), "mine")
    data = (tmp_path / "good.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[: len(data) - 100] if damage == "truncated" else b"not a model at all")
    before = store_files()
    with pytest.raises(IntegrityError) as err:
        store.import_file(bad, "mine")
    assert str(bad) in err.value.message
    assert store_files() == before
    assert store.resolve("mine").sha256 == good.sha256


@pytest.mark.parametrize(
    "name, words",
    [
        ("qwen-small", "is a catalog model"),
        ("bad name", "not a usable model name"),
        ("../up", "not a usable"),
        ("mine.GGUF", "not a usable"),  # would be read as a path wherever a model is named
    ],
)
def test_import_refuses_bad_names(tmp_path, name, words):
    with pytest.raises(ConfigError) as err:
        store.import_file(write_tiny_gguf(tmp_path / "t.gguf"), name)
    assert words in err.value.message
    assert store_files() == []


def test_a_file_changed_after_verification_is_caught(tmp_path):
    imported = store.import_file(write_tiny_gguf(tmp_path / "t.gguf"), "tiny")
    with imported.path.open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(IntegrityError) as err:
        store.resolve("tiny")
    assert "changed on disk" in err.value.message and "models rm tiny" in err.value.hint


def test_resolve_a_path_remembers_its_hash(tmp_path):
    path = write_tiny_gguf(tmp_path / "direct.gguf")
    first = store.resolve(str(path))
    assert first.path == path and first.sha256 == store.sha256_file(path) and first.source == "path"
    assert store.resolve(str(path)).sha256 == first.sha256
    assert store.installed() == []  # a path is used, not installed
    write_tiny_gguf(path, tools=False)  # a new file at the same path is verified afresh
    assert store.resolve(str(path)).gguf.template_knows_tools is False


def test_remove_deletes_the_file_and_suggests_for_unknown(tmp_path):
    imported = store.import_file(write_tiny_gguf(tmp_path / "t.gguf"), "tiny")
    store.remove("tiny")
    assert not imported.path.exists() and store_files() == []
    with pytest.raises(ModelNotFoundError):
        store.resolve("tiny")
    store.import_file(tmp_path / "t.gguf", "tiny2")
    with pytest.raises(ModelNotFoundError) as err:
        store.remove("tiny3")
    assert "'tiny2'" in err.value.hint


def test_overview_rows_carry_the_fit_arithmetic(tmp_path):
    store.import_file(write_tiny_gguf(tmp_path / "t.gguf"), "tiny")
    rows = {r.alias: r for r in store.overview(available=2 * 1024**3)}
    assert rows["smollm2-135m"].status == "bundled"
    assert rows["qwen3.5-4b"].status == "not installed" and rows["qwen3.5-4b"].kv_estimated
    tiny = rows["tiny"]
    # 2 (K,V) x 2 layers x 2048 tokens x 2 kv heads x 16 head dim x 2 bytes
    assert tiny.status == "installed" and not tiny.kv_estimated and tiny.kv_bytes == 2 * 2 * 2048 * 2 * 16 * 2
    assert tiny.fits is True
    assert rows["qwen3-4b"].fits is False  # 2.5 GB of weights in 2 GiB


def test_ctrl_c_during_a_pull_keeps_the_part_for_the_next_one(fake_hub, bundled_sha256, localagent_home):
    fake_hub.block_delay = 0.05  # ~20 MiB/s, so the pull is still running when interrupted
    env = {**os.environ, "LOCALAGENT_HOME": str(localagent_home), "HF_ENDPOINT": fake_hub.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "localagent", "models", "pull", "fake-smol"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a background shell starts children with SIGINT ignored, and Python keeps that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    part = settings.models_dir() / ".partial" / f"{bundled_sha256}.part"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size > 5 * 2**20) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    kept = part.stat().st_size
    assert 0 < kept < 98362432

    fake_hub.block_delay = 0
    assert store.pull("fake-smol", progress=False).sha256 == bundled_sha256
    assert fake_hub.ranges[-1] == f"bytes={kept}-"


@pytest.mark.parametrize("right_sha", [True, False])
def test_chunked_bundle_is_assembled_into_the_store_and_verified(tmp_path, localagent_home, monkeypatch, right_sha):
    whole = write_tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    site = tmp_path / "site"
    for i, piece in enumerate((whole[:2000], whole[2000:])):
        (site / f"tinychunk_part{i}" / "data").mkdir(parents=True)
        (site / f"tinychunk_part{i}" / "__init__.py").write_text("raise ImportError('located, never imported')")
        (site / f"tinychunk_part{i}" / "data" / f"tiny.gguf.part{i}").write_bytes(piece)
    monkeypatch.syspath_prepend(str(site))
    sha = store.sha256_file(tmp_path / "whole.gguf") if right_sha else "f" * 64
    (localagent_home / "models.toml").write_text(
        f"""
[local.tiny-chunked]
repo = "nobody/tiny"
file = "tiny.gguf"
quant = "F32"
sha256 = "{sha}"
context = 2048
bundled = {{ distribution = "tinychunk", path = "tinychunk_part0", extra = "tiny", chunks = [
  "tinychunk_part0/data/tiny.gguf.part0", "tinychunk_part1/data/tiny.gguf.part1"] }}
"""
    )
    if not right_sha:
        with pytest.raises(IntegrityError) as err:
            store.resolve("tiny-chunked", offline=True)
        assert "assembled from 2 chunks" in err.value.message and "nothing was kept" in err.value.message
        assert not any(p.suffix == ".gguf" for p in settings.models_dir().rglob("*"))
        return
    resolved = store.resolve("tiny-chunked", offline=True)
    assert resolved.path == settings.models_dir() / "bundled" / "tiny-chunked" / "tiny.gguf"
    assert resolved.path.read_bytes() == whole and resolved.source == "bundled" and resolved.sha256 == sha
    assert store.resolve("tiny-chunked", offline=True).path == resolved.path  # assembled once, then found
    assert store_files() == ["bundled/tiny-chunked/tiny.gguf", "manifests/tiny-chunked/F32.json"]
