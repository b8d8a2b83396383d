"""A GGUF loaded into llama-cpp-python, and its failures told in llama.cpp's own words.

llama-cpp-python reports a failed load as a bare ValueError; the reason (an unknown
architecture, a truncated file) is only in llama.cpp's C log. So the log goes through one
callback that keeps the last errors, and `load` turns them into a ModelLoadError with a hint:
upgrade for an architecture this llama.cpp does not know, verify or pull again otherwise. The
chat templates are checked before the load, which would compile them without bounds.
"""

from __future__ import annotations

import collections
import ctypes
import re
from pathlib import Path
from typing import Any

import psutil

from localagent import ggufinfo
from localagent.engines import templates
from localagent.engines.base import EngineConfig
from localagent.errors import IntegrityError, ModelLoadError, ModelNotFoundError

# llama.cpp's C log goes through one process-wide callback. Ours prints nothing (stdout may be
# an MCP server's JSON-RPC channel) and keeps the last errors for ModelLoadError messages (and
# the engine's EngineError messages, which read and clear them too).
log_errors: collections.deque[str] = collections.deque(maxlen=8)
_log_callback: Any = None
_GGML_LOG_LEVEL_ERROR = 4  # ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5


def _silence_llama_log() -> None:
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def keep_errors(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level == _GGML_LOG_LEVEL_ERROR:
            log_errors.append(text.decode("utf-8", "replace").strip())

    _log_callback = keep_errors  # referenced for as long as the process lives
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def physical_cores() -> int:
    """The threads a model is given where EngineConfig.n_threads does not say."""
    return max(1, psutil.cpu_count(logical=False) or psutil.cpu_count() or 1)


_UNKNOWN_ARCH_RE = re.compile(r"unknown model architecture: '([^']{1,100})'")

# The llama-cpp-python release each family of the catalog was first run with by localagent's
# tests (tests/archmodels.py builds one of each). Which release first added an architecture is
# not recorded upstream in one place; this says where it is known to work.
VERIFIED_WITH = "0.3.36"
VERIFIED_ARCHITECTURES = frozenset(
    ("llama", "qwen2", "qwen3", "qwen35", "lfm2", "mamba", "mamba2", "gemma3", "gemma4", "granitehybrid", "smollm3")
)


def _architecture_hint(arch: str) -> str:
    upgrade = "upgrade llama-cpp-python (`pip install -U llama-cpp-python`; set CMAKE_ARGS as for the first install)"
    if arch in VERIFIED_ARCHITECTURES:
        return f"{upgrade}: '{arch}' runs in llama-cpp-python {VERIFIED_WITH} and later"
    return f"{upgrade}, or use a model of a family it knows (`localagent models list`)"


def _check_templates(path: Path) -> None:
    """Refuse a GGUF whose chat templates would blow up while llama-cpp-python compiles them
    (it folds constant expressions: `{{ 'x' * 3000000000 }}` took 3.3 GB at load)."""
    import jinja2

    try:
        found = ggufinfo.chat_templates(path)
    except IntegrityError:
        return  # not a whole GGUF: the load below says so in llama.cpp's words
    for key, source in found.items():
        try:
            templates.check_constants(source)
        except templates.TemplateLimitError as exc:
            raise ModelLoadError(
                f"the chat template in {path.name} ({key}) builds too large a value: {exc}",
                hint="use a GGUF with a fixed template (gguf-new-metadata --chat-template-file FIXED.jinja IN.gguf OUT.gguf)",
            ) from None
        except jinja2.TemplateError:
            pass  # the load below reports a template that does not parse, with its own words


def load(path: Path, n_ctx: int, n_threads: int, config: EngineConfig) -> tuple[Any, int]:
    """The llama_cpp.Llama for the GGUF at `path`, and how many layers it offloads to the GPU
    (-1: all)."""
    if not path.is_file():
        raise ModelNotFoundError(
            f"model file not found: {path}", hint="`localagent models list` shows installed models"
        )
    import jinja2
    import llama_cpp

    _check_templates(path)
    _silence_llama_log()
    n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() and not config.cpu_only else 0
    log_errors.clear()
    try:
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_gpu_layers=n_gpu_layers,
            seed=config.seed,
            logits_all=False,
            # a sliding-window model keeps only its window (+ one batch) of cells on those
            # layers instead of the whole context, as llama-server does; cutting back past
            # the window restores a checkpoint (see cache.cut_back)
            swa_full=False,
            verbose=False,
        )
    except jinja2.TemplateError as exc:  # llama-cpp-python compiles the GGUF's chat templates while loading
        raise ModelLoadError(
            f"the chat template in {path.name} does not parse: {type(exc).__name__}: {exc}",
            hint="use a GGUF with a fixed template (gguf-new-metadata --chat-template-file FIXED.jinja IN.gguf OUT.gguf)",
        ) from exc
    except (ValueError, RuntimeError, OSError) as exc:
        detail = "; ".join(log_errors) or str(exc)
        unknown = _UNKNOWN_ARCH_RE.search(detail)
        if unknown:
            raise ModelLoadError(
                f"cannot load {path.name}: the llama.cpp inside llama-cpp-python {llama_cpp.__version__} "
                f"does not know the architecture '{unknown.group(1)}'",
                hint=_architecture_hint(unknown.group(1)),
            ) from exc
        raise ModelLoadError(
            f"cannot load {path}: {detail}",
            hint="the file may be truncated or not a GGUF model: `localagent models verify` checks it, "
            "`localagent models pull` fetches it again",
        ) from exc
    return llama, n_gpu_layers
