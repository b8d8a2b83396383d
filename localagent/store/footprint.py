"""How much RAM a model needs at the context an engine opens it with: weights, KV cache
(read from the GGUF header, else estimated from the parameter count) and headroom. The one
computation behind `models list`, `models info`, `doctor` and the check before a load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from localagent import hardware
from localagent.catalog import LocalModel
from localagent.ggufinfo import GGUFInfo

if TYPE_CHECKING:
    from localagent.store.resolve import ResolvedModel


@dataclass(frozen=True)
class Footprint:
    n_ctx: int  # the context an engine opens by default
    kv_bytes: int | None  # KV cache at n_ctx (f16); None when the size is unknown
    kv_estimated: bool  # True when not read from the GGUF header
    required_bytes: int | None  # weights + KV + headroom


def default_context(resolved: ResolvedModel) -> int:
    """The n_ctx an engine opens this model with unless told otherwise."""
    return hardware.capped_context(resolved.context)


def params_label(entry: LocalModel | None, info: GGUFInfo | None) -> str:
    """The parameter count as a label ('1.5B'): the catalog's, else the header's, else ''."""
    return entry.params if entry else (info.size_label or "") if info else ""


def estimate(size_bytes: int | None, context: int | None, info: GGUFInfo | None, params: str) -> Footprint:
    """The footprint of a file of `size_bytes` trained on `context` tokens; `info` is its
    header when it is on disk, `params` its parameter label for when the header cannot say."""
    n_ctx = hardware.capped_context(context)
    per_token = info.kv_bytes_per_token if info else None
    estimated = per_token is None
    if per_token is None and size_bytes is not None:
        per_token = hardware.estimated_kv_bytes_per_token(hardware.parse_params(params), size_bytes)
    kv = per_token * n_ctx if per_token is not None else None
    required = hardware.required_bytes(size_bytes, kv) if size_bytes is not None and kv is not None else None
    return Footprint(n_ctx=n_ctx, kv_bytes=kv, kv_estimated=estimated, required_bytes=required)


def footprint(resolved: ResolvedModel) -> Footprint:
    """The footprint of a resolved model: the same figures its `models list` row shows."""
    params = params_label(resolved.entry, resolved.gguf)
    return estimate(resolved.size_bytes, resolved.context, resolved.gguf, params)
