"""This machine's facts (CPU, RAM, llama.cpp's build, disk) and the arithmetic of whether a
model fits in it. The arithmetic is pure; only `host()` looks at the machine."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# llama.cpp's default KV-cache type is f16
KV_BYTES_PER_ELEMENT = 2
# the context an engine opens by default: long enough for agent work, and the KV cache of a
# 128k-context model at full length would not fit most laptops
DEFAULT_CONTEXT_CAP = 8192
# compute buffers, the runtime and the OS file cache need room beyond weights + KV cache
HEADROOM_BYTES = 512 * 2**20
HEADROOM_FRACTION = 0.10
# Without a header, KV bytes per token are estimated from the parameter count. The catalog's
# models (f16 cache) span ~12-37 KB per token per billion parameters above a ~24 KB floor
# (SmolLM2-135M 23 KB, Qwen2.5-1.5B 28 KB, Llama-3.2-3B 112 KB, Qwen3-4B 144 KB): take the top.
EST_KV_BYTES_PER_TOKEN_PER_B = 37 * 1024
EST_KV_BYTES_PER_TOKEN_FLOOR = 24 * 1024
# Q4_K_M stores ~0.6 bytes per parameter: the fallback when only the file size is known
EST_BYTES_PER_PARAM = 0.6


def kv_cache_bytes(
    layers: int, n_ctx: int, kv_heads: int, head_dim: float, bytes_per_element: int = KV_BYTES_PER_ELEMENT
) -> int:
    """K and V: 2 x layers x n_ctx x kv_heads x head_dim x bytes per element."""
    return int(2 * layers * n_ctx * kv_heads * head_dim * bytes_per_element)


def parse_params(label: str | None) -> float | None:
    """'135M' -> 1.35e8, '1.5B' -> 1.5e9; None when the label is not a count."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMBT])\s*", label or "", re.I)
    if not m:
        return None
    return float(m.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2).upper()]


def estimated_kv_bytes_per_token(params: float | None, model_bytes: int) -> int:
    if params is None:
        params = model_bytes / EST_BYTES_PER_PARAM
    return int(max(EST_KV_BYTES_PER_TOKEN_FLOOR, EST_KV_BYTES_PER_TOKEN_PER_B * params / 1e9))


def capped_context(context: int | None) -> int:
    """The default n_ctx for a model whose trained context is `context`."""
    return min(context or DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP)


def required_bytes(model_bytes: int, kv_bytes: int) -> int:
    total = model_bytes + kv_bytes
    return total + max(HEADROOM_BYTES, int(total * HEADROOM_FRACTION))


def fits(model_bytes: int, kv_bytes: int, available: int) -> bool:
    """Weights + KV cache + headroom within `available` bytes of RAM."""
    return required_bytes(model_bytes, kv_bytes) <= available


@dataclass(frozen=True)
class Host:
    os: str
    python: str
    cpu: str
    physical_cores: int | None
    logical_cores: int | None
    ram_total: int
    ram_available: int
    llama_cpp_version: str | None
    gpu_offload: bool | None  # None: llama-cpp-python could not be loaded
    backend: str  # "CUDA", "Metal", ... or "CPU only"
    system_info: str
    store: str
    disk_free: int | None


def cpu_name() -> str:
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
    elif sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def backend_of(system_info: str, gpu_offload: bool) -> str:
    """The GPU backend named in llama.cpp's system info ("CUDA : ARCHS = ... | CPU : ..."),
    or "CPU only" when this build cannot offload."""
    if not gpu_offload:
        return "CPU only"
    names = [n for n in re.findall(r"(\w+)\s*:", system_info) if n.upper() not in {"CPU", "CPU_REPACK"}]
    known = {
        "CUDA": "CUDA",
        "METAL": "Metal",
        "MTL": "Metal",
        "VULKAN": "Vulkan",
        "HIP": "ROCm",
        "ROCM": "ROCm",
        "SYCL": "SYCL",
        "OPENCL": "OpenCL",
        "CANN": "CANN",
        "MUSA": "MUSA",
    }
    for name in names:
        if name.upper() in known:
            return known[name.upper()]
    return "GPU"


def free_disk(path: Path) -> int | None:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def _llama_facts() -> tuple[str | None, bool | None, str]:
    try:
        import llama_cpp
    except Exception as exc:  # a broken build raises OSError/RuntimeError as well as ImportError
        return None, None, f"llama-cpp-python cannot be loaded: {exc}"
    info = llama_cpp.llama_print_system_info()
    info = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return getattr(llama_cpp, "__version__", None), bool(llama_cpp.llama_supports_gpu_offload()), info.strip()


def host(store: Path) -> Host:
    import psutil

    mem = psutil.virtual_memory()
    version, offload, info = _llama_facts()
    return Host(
        os=f"{platform.system()} {platform.release()} ({platform.machine()})",
        python=platform.python_version(),
        cpu=cpu_name(),
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True) or os.cpu_count(),
        ram_total=mem.total,
        ram_available=mem.available,
        llama_cpp_version=version,
        gpu_offload=offload,
        backend=backend_of(info, bool(offload)) if offload is not None else "unknown",
        system_info=info,
        store=str(store),
        disk_free=free_disk(store),
    )


def available_ram() -> int:
    import psutil

    return psutil.virtual_memory().available
