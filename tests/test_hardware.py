"""Host facts, the fit arithmetic, and the GGUF header facts it is computed from."""

from __future__ import annotations

import pytest

from localagent import ggufinfo, hardware
from localagent.errors import IntegrityError


@pytest.fixture(scope="module")
def smol_info(bundled_gguf):
    return ggufinfo.read(bundled_gguf)


def test_bundled_header_facts(smol_info):
    assert smol_info.architecture == "llama" and smol_info.quant == "Q4_1"
    assert smol_info.context_length == 8192 and smol_info.block_count == 30
    assert (smol_info.head_count, smol_info.head_count_kv, smol_info.embedding_length) == (9, 3, 576)
    assert 130e6 < smol_info.parameters < 140e6 and smol_info.size_label == "135M"
    assert smol_info.has_chat_template and not smol_info.template_knows_tools
    # 2 (K,V) x 30 layers x 3 kv heads x 64 head dim x 2 bytes
    assert smol_info.kv_bytes_per_token == 2 * 30 * 3 * 64 * 2 == 23040


def test_truncated_bundled_copy_is_an_integrity_error(bundled_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    with bundled_gguf.open("rb") as fh:
        cut.write_bytes(fh.read(50_000_000))  # header intact, tensor data cut
    with pytest.raises(IntegrityError) as err:
        ggufinfo.read(cut)
    assert "truncated" in err.value.message and str(cut) in err.value.message


@pytest.mark.parametrize(
    "layers, n_ctx, kv_heads, head_dim, expected",
    [
        (30, 8192, 3, 64, 188_743_680),  # SmolLM2-135M
        (28, 8192, 2, 128, 234_881_024),  # Qwen2.5-1.5B
        (28, 8192, 8, 128, 939_524_096),  # Llama-3.2-3B
        (1, 1, 1, 1, 4),
    ],
)
def test_kv_cache_bytes(layers, n_ctx, kv_heads, head_dim, expected):
    assert hardware.kv_cache_bytes(layers, n_ctx, kv_heads, head_dim) == expected


@pytest.mark.parametrize(
    "label, params",
    [("135M", 135e6), ("1.5B", 1.5e9), ("0.5b", 0.5e9), ("4B", 4e9), ("", None), ("big", None), (None, None)],
)
def test_parse_params(label, params):
    assert hardware.parse_params(label) == params


@pytest.mark.parametrize(
    "params, size, expected",
    [
        (135e6, 98_000_000, 24 * 1024),  # the floor
        (4e9, 2_500_000_000, 4 * 37 * 1024),
        (None, 600_000_000, 37 * 1024),  # 1B parameters guessed from 0.6 bytes each
    ],
)
def test_estimated_kv_per_token(params, size, expected):
    assert hardware.estimated_kv_bytes_per_token(params, size) == expected


@pytest.mark.parametrize("context, n_ctx", [(2048, 2048), (8192, 8192), (131072, 8192), (None, 8192)])
def test_capped_context(context, n_ctx):
    assert hardware.capped_context(context) == n_ctx


MiB = 2**20


@pytest.mark.parametrize(
    "model, kv, available, fits",
    [
        (100 * MiB, 100 * MiB, 712 * MiB, True),  # 200 MiB + 512 MiB headroom exactly
        (100 * MiB, 100 * MiB, 711 * MiB, False),
        (8000 * MiB, 2000 * MiB, 11000 * MiB, True),  # 10% headroom above 5 GiB
        (8000 * MiB, 2000 * MiB, 10999 * MiB, False),
    ],
)
def test_fits(model, kv, available, fits):
    assert hardware.fits(model, kv, available) is fits


@pytest.mark.parametrize(
    "info, offload, backend",
    [
        ("CPU : SSE3 = 1 | AVX2 = 1 |", False, "CPU only"),
        ("CUDA : ARCHS = 890 | USE_GRAPHS = 1 | CPU : AVX2 = 1 |", True, "CUDA"),
        ("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 |", True, "Metal"),
        ("Vulkan : | CPU : AVX2 = 1 |", True, "Vulkan"),
        ("CPU : AVX2 = 1 |", True, "GPU"),
    ],
)
def test_backend_of(info, offload, backend):
    assert hardware.backend_of(info, offload) == backend


def test_host_facts(tmp_path):
    host = hardware.host(tmp_path / "not-yet" / "models")
    assert host.cpu and host.logical_cores >= 1 and host.physical_cores >= 1
    assert 0 < host.ram_available <= host.ram_total
    assert host.llama_cpp_version and host.gpu_offload is not None
    assert "CPU" in host.system_info
    assert host.backend == ("CPU only" if not host.gpu_offload else host.backend)
    assert host.disk_free and host.disk_free > 0  # measured on the nearest existing parent
