"""The overview behind `models list` and `doctor`: every catalog model and every installed
one, whether it is installed, and whether it fits the RAM available; and the same row for one
model, which refuses a model too big before any download or load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from localagent import hardware, settings
from localagent.catalog import LocalModel, load_catalog
from localagent.store.bundled import bundled_source
from localagent.store.footprint import estimate, params_label
from localagent.store.manifests import BrokenManifest, Manifest, Source, manifests_of, same_quant, scan
from localagent.store.resolve import split_quant

RowStatus = Literal["installed", "bundled", "not installed", "missing", "broken"]


@dataclass(frozen=True)
class ModelStatus:
    """One row of `models list`: a catalog model or an installed one, and whether it fits."""

    alias: str
    quant: str
    status: RowStatus
    source: Source | None
    params: str
    size_bytes: int | None  # on disk when installed, else the catalog's estimate
    context: int | None  # the model's trained context
    n_ctx: int  # the context an engine opens by default
    kv_bytes: int | None  # KV cache at n_ctx (f16)
    kv_estimated: bool  # True when not read from the GGUF header
    required_bytes: int | None  # weights + KV + headroom
    fits: bool | None  # within the RAM available now; None when the size is unknown
    path: str | None
    description: str
    problem: str | None = None  # for a broken one: what is wrong, naming its manifest


def overview(available: int | None = None) -> list[ModelStatus]:
    """Every catalog model (one row per installed quant, or one row if none is installed)
    and every installed model outside the catalog, against `available` bytes of RAM
    (default: what is available now)."""
    available = hardware.available_ram() if available is None else available
    catalog = load_catalog()
    manifests, broken = scan()
    rows = []
    for alias, entry in catalog.local.items():
        mine = [m for m in manifests if m.alias == alias]
        rows += _alias_rows(entry, mine, [b for b in broken if b.alias == alias], available)
    rows += [_status_row(None, m, available) for m in manifests if m.alias not in catalog.local]
    rows += [_broken_row(b, None) for b in broken if b.alias not in catalog.local]
    return rows


def model_status(alias: str, available: int) -> ModelStatus | None:
    """The row `overview` has for `alias` (ALIAS or ALIAS:QUANT; the first of its quants
    without one), built alone: only this alias's manifests are read and no other catalog
    model is looked at. None when the overview has no such row."""
    name, quant = split_quant(alias)
    catalog = load_catalog()
    name = catalog.canonical(name)
    good, broken = manifests_of(name)
    rows = _alias_rows(catalog.local.get(name), good, broken, available)
    return next((r for r in rows if same_quant(r.quant, quant)), None)


def check_fits(alias: str) -> None:
    """Refuse a local model too big for the RAM available now (weights, KV cache at the default
    context, headroom: the same figures `models list` shows), before any download or load:
    modelref.check_fit, for a caller that holds only a name (no network)."""
    from localagent import modelref

    modelref.check_fit(modelref.refer(alias, offline=True))


def _alias_rows(
    entry: LocalModel | None, manifests: list[Manifest], broken: list[BrokenManifest], available: int
) -> list[ModelStatus]:
    """The rows of one alias: one per installed quant, readable or broken; a catalog model
    with none gets the one row of its catalog quant."""
    rows = [_status_row(entry, m, available) for m in manifests] + [_broken_row(b, entry) for b in broken]
    return rows or ([_status_row(entry, None, available)] if entry else [])


def _status_row(entry: LocalModel | None, m: Manifest | None, available: int) -> ModelStatus:
    info = m.gguf if m else None
    context = entry.context if entry else (info.context_length if info else None)
    if m:
        size = m.total_size
    elif entry and entry.size_mb:
        size = int(entry.size_mb * 1_000_000)
    else:
        size = None
    params = params_label(entry, info)
    need = estimate(size, context, info, params)
    status: RowStatus
    if m:
        alias, quant = m.alias, m.quant
        status = "installed" if Path(m.path).is_file() else "missing"
    else:
        assert entry is not None  # a row is of a catalog model, an installed one, or both
        alias, quant = entry.alias, entry.quant
        status = "bundled" if bundled_source(entry) else "not installed"
    return ModelStatus(
        alias=alias,
        quant=quant,
        status=status,
        source=m.source if m else ("bundled" if status == "bundled" else None),
        params=params,
        size_bytes=size,
        context=context,
        n_ctx=need.n_ctx,
        kv_bytes=need.kv_bytes,
        kv_estimated=need.kv_estimated,
        required_bytes=need.required_bytes,
        fits=need.required_bytes <= available if need.required_bytes is not None else None,
        path=m.path if m else None,
        description=entry.description if entry else _origin(m),
    )


def _origin(m: Manifest | None) -> str:
    """Where a model outside the catalog came from, in a few words."""
    if m is None:
        return ""
    parts = f" ({len(m.parts) + 1} parts)" if m.parts else ""
    if m.source == "import":
        return f"imported from {m.file}" if m.file else "imported"
    if m.source == "hub":
        return f"{m.repo}/{m.file}{parts}" if m.repo else ""
    if m.external:
        kept = {"ollama": "Ollama", "lmstudio": "LM Studio", "hf-cache": "HF cache", "llama-cache": "llama.cpp cache"}
        return f"kept by {kept.get(m.source, m.source)}{parts}: {m.path}"
    return ""


@dataclass(frozen=True)
class HostedStatus:
    """One hosted model of the catalog, for `models list`: what it costs and whether its API
    key is set (never the key itself)."""

    alias: str
    provider: str
    model: str  # the id the API knows it by
    base_url: str
    api_key_env: str | None  # None: the endpoint needs no key
    key_set: bool | None  # None when it needs no key
    context: int | None
    input_usd_per_mtok: float | None
    cached_input_usd_per_mtok: float | None
    output_usd_per_mtok: float | None
    price_as_of: str | None
    price_source: str | None


def hosted_overview() -> list[HostedStatus]:
    """Every hosted model of the catalog, with its prices and whether its key is set."""
    rows = []
    for alias, h in load_catalog().hosted.items():
        p = h.price
        rows.append(
            HostedStatus(
                alias=alias,
                provider=h.provider,
                model=h.model,
                base_url=h.base_url,
                api_key_env=h.api_key_env,
                key_set=settings.env(h.api_key_env) is not None if h.api_key_env else None,
                context=h.context,
                input_usd_per_mtok=p.input if p else None,
                cached_input_usd_per_mtok=p.cached_input if p else None,
                output_usd_per_mtok=p.output if p else None,
                price_as_of=p.as_of if p else None,
                price_source=p.source if p else None,
            )
        )
    return rows


def _broken_row(b: BrokenManifest, entry: LocalModel | None) -> ModelStatus:
    context = entry.context if entry else None
    return ModelStatus(
        alias=b.alias,
        quant=b.quant,
        status="broken",
        source=None,
        params=entry.params if entry else "",
        size_bytes=None,
        context=context,
        n_ctx=hardware.capped_context(context),
        kv_bytes=None,
        kv_estimated=True,
        required_bytes=None,
        fits=None,
        path=str(b.path) if b.path else None,
        description=entry.description if entry else "",
        problem=b.problem,
    )
