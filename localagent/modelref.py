"""One path from a model name to a model: what kind of model a name is, the catalog entry
behind it, where its file is or will come from, and whether it fits this machine, decided
before a single byte of it is downloaded.

`localagent run` (through engines.open_model), the bench and the MCP server all ask here,
so "what is this name" has one answer. `refer` reads the name (no download: the network only
for a hub name's file list); `check_fit` refuses a model too big for the RAM available
(weights + KV cache at the context + headroom, the figures `models list` shows); `obtain`
gets the file through the store; `ready` checks then obtains, and `prepare` is all three.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypedDict

from localagent import hardware, settings
from localagent.catalog import PSEUDO_MODELS, Catalog, HostedModel, LocalModel, load_catalog
from localagent.errors import ConfigError, ModelLoadError, OfflineError
from localagent.hub import Progress
from localagent.store import hubnames
from localagent.store.download import choose_from_hub
from localagent.store.footprint import params_label
from localagent.store.resolve import ResolvedModel
from localagent.units import format_bytes

if TYPE_CHECKING:  # typing.Unpack is 3.11+; annotations are not evaluated at run time
    from typing import Unpack

Kind = Literal["local", "hosted", "pseudo"]


@dataclass(frozen=True)
class HubSource:
    """Where a local model not yet on disk will come from."""

    repo: str
    files: tuple[str, ...]  # the GGUF, or the parts of a split one in order; () when not listed (offline)
    size_bytes: int | None  # from the repository's listing, else the catalog's size_mb; None: unknown
    quant: str | None
    note: str | None = None  # the quant chosen when the one asked for is missing


@dataclass(frozen=True)
class ModelRef:
    """What a model name refers to. A local model is either `installed` (a verified file on
    this disk: the store's, a bundled one, another tool's registered in place, or a path) or
    has a `source` on the hub; hosted and pseudo models have neither."""

    name: str  # as given
    kind: Kind
    entry: LocalModel | HostedModel | None = None  # the catalog's entry, if any
    installed: ResolvedModel | None = None
    source: HubSource | None = None

    @property
    def hosted(self) -> HostedModel:
        assert isinstance(self.entry, HostedModel), f"{self.name} is {self.kind}, not hosted"
        return self.entry

    @property
    def local_entry(self) -> LocalModel | None:
        return self.entry if isinstance(self.entry, LocalModel) else None

    @property
    def context(self) -> int | None:
        """The model's trained context: the catalog's, else its header's, else unknown."""
        if self.installed is not None:
            return self.installed.context
        return self.entry.context if self.entry is not None else None

    @property
    def size_bytes(self) -> int | None:
        if self.installed is not None:
            return self.installed.size_bytes
        return self.source.size_bytes if self.source is not None else None


def kind_of(name: str, catalog: Catalog | None = None) -> Kind:
    """pseudo (the scripted oracle and noop), hosted (a hosted catalog entry or an [aliases]
    name pointing at one), else local: catalog aliases, ALIAS:QUANT, hub names, other tools'
    models and paths to .gguf files. From the name alone: no disk, no network."""
    if name in PSEUDO_MODELS:
        return "pseudo"
    catalog = catalog or load_catalog()
    return "hosted" if catalog.canonical(name) in catalog.hosted else "local"


def refer(name: str, *, offline: bool | None = None, catalog: Catalog | None = None) -> ModelRef:
    """What `name` refers to, downloading nothing. An installed local model is found with no
    network (and a bundled model or another tool's is registered in place, as store.resolve
    does); one not installed gets its hub source: a hub name's from the repository's file
    list (the quant chosen as a pull would choose it) unless offline, a catalog entry's from
    the catalog. Unknown names raise ModelNotFoundError with suggestions."""
    catalog = catalog or load_catalog()
    kind = kind_of(name, catalog)
    if kind == "pseudo":
        return ModelRef(name, "pseudo")
    if kind == "hosted":
        return ModelRef(name, "hosted", catalog.hosted[catalog.canonical(name)])
    from localagent import store

    base, quant = hubnames.split_name(name)
    entry = catalog.local.get(catalog.canonical(base))
    try:
        return ModelRef(name, "local", entry, installed=store.resolve(name, offline=True))
    except OfflineError:
        pass  # known, not on this disk: where it would come from
    offline = settings.offline() if offline is None else offline
    hub = hubnames.parse_hub_name(name)
    if hub is not None:
        return ModelRef(name, "local", None, source=_hub_source(hub, offline))
    assert entry is not None  # store.resolve raised ModelNotFoundError for any other name
    file = entry.file_for(quant)
    size = int(entry.size_mb * 1_000_000) if entry.size_mb and file == entry.file else None
    return ModelRef(name, "local", entry, source=HubSource(entry.repo, (file,), size, quant or entry.quant))


def _hub_source(hub: hubnames.HubName, offline: bool) -> HubSource:
    if offline:  # nothing is listed; obtain() then says the name is not on this machine
        return HubSource(hub.repo, (hub.file,) if hub.file else (), None, hub.quant)
    choice = choose_from_hub(hub, hub.quant, f"hf.co/{hub.repo}")
    paths = tuple(f.path for f in choice.candidate.files)
    return HubSource(hub.repo, paths, choice.candidate.size, choice.quant, choice.note)


@dataclass(frozen=True)
class Need:
    """The RAM a local model needs at a context."""

    n_ctx: int
    required_bytes: int | None  # weights + KV cache + headroom; None when the size is unknown
    kv_from_header: bool  # False: the KV cache estimated from the parameter count


def need(ref: ModelRef, n_ctx: int | None = None) -> Need:
    """What `ref` needs at `n_ctx` (None: the context an engine opens it with by default):
    the KV cache's shape from the GGUF header when the file is here, else estimated from the
    parameter count and size, as `models list` estimates it."""
    n_ctx = hardware.capped_context(ref.context) if n_ctx is None else n_ctx
    size = ref.size_bytes
    info = ref.installed.gguf if ref.installed is not None else None
    per_token = info.kv_bytes_per_token if info else None
    from_header = per_token is not None
    if per_token is None and size is not None:
        params = params_label(ref.local_entry, info)
        per_token = hardware.estimated_kv_bytes_per_token(hardware.parse_params(params), size)
    if size is None or per_token is None:
        return Need(n_ctx, None, from_header)
    return Need(n_ctx, hardware.required_bytes(size, per_token * n_ctx), from_header)


def check_fit(
    ref: ModelRef, n_ctx: int | None = None, available: int | None = None, *, flag: str | None = "--ctx"
) -> None:
    """Refuse a local model this machine cannot hold, before any download or load.

    Its weights, KV cache at `n_ctx` (None: the default context) and headroom against
    `available` bytes (None: the RAM available now), as `models list`'s FITS column figures
    them (ModelLoadError). An n_ctx asked for by a command-line `flag` (the bench's --ctx) is
    refused past the model's trained context too, and named in the message (ConfigError);
    with the file here the cache's shape is then the header's, and a header that does not
    say it is left to llama.cpp. llama.cpp failed these with std::bad_alloc, which its
    loader blamed on the file."""
    if ref.kind != "local":
        return
    available = hardware.available_ram() if available is None else available
    if flag is not None and n_ctx is not None:
        _check_flag(ref, n_ctx, available, flag)
        return
    needed = need(ref, n_ctx)
    if needed.required_bytes is not None and needed.required_bytes > available:
        raise ModelLoadError(
            f"{ref.name} needs about {format_bytes(needed.required_bytes)} of RAM (weights, KV cache at "
            f"{needed.n_ctx} tokens, headroom); {format_bytes(available)} is available",
            hint="pick a model that fits (`localagent models list`: FITS), a smaller quant (ALIAS:QUANT), "
            "or free memory",
        )


def _check_flag(ref: ModelRef, n_ctx: int, available: int, flag: str) -> None:
    default = hardware.capped_context(ref.context)
    if ref.context and n_ctx > ref.context:
        raise ConfigError(
            f"{flag} {n_ctx:,} is past the {ref.context:,} tokens {ref.name} was trained on",
            hint=f"pass {flag} {ref.context} or less, or leave it out for the default ({default})",
        )
    needed = need(ref, n_ctx)
    if ref.installed is not None and not needed.kv_from_header:
        return  # the header does not say the cache's shape: llama.cpp will tell
    if needed.required_bytes is not None and needed.required_bytes > available:
        raise ConfigError(
            f"{ref.name} at {flag} {n_ctx:,} needs about {format_bytes(needed.required_bytes)} of RAM "
            f"(weights, KV cache, headroom); {format_bytes(available)} is available",
            hint=f"lower {flag} (the default is {default}), or free memory",
        )


def obtain(ref: ModelRef, *, offline: bool | None = None, progress: bool | Progress = False) -> ModelRef:
    """`ref` with its file on this disk: as it is when installed, else pulled and verified
    through the store (OfflineError naming the ways out when offline)."""
    if ref.kind != "local" or ref.installed is not None:
        return ref
    from localagent import store

    return dataclasses.replace(ref, installed=store.resolve(ref.name, offline=offline, progress=progress))


def ready(
    ref: ModelRef,
    *,
    n_ctx: int | None = None,
    offline: bool | None = None,
    progress: bool | Progress = False,
    available: int | None = None,
    flag: str | None = "--ctx",
) -> ModelRef:
    """check_fit, then obtain: a local model too big for this machine is refused with
    nothing downloaded; one pulled is checked again, against its header now."""
    check_fit(ref, n_ctx, available, flag=flag)
    obtained = obtain(ref, offline=offline, progress=progress)
    if obtained is not ref:  # pulled just now: its header says the KV cache's real size
        check_fit(obtained, n_ctx, available, flag=flag)
    return obtained


class ReadyOptions(TypedDict, total=False):
    """ready's keyword arguments, so prepare takes exactly them with ready's defaults."""

    n_ctx: int | None
    offline: bool | None
    progress: bool | Progress
    available: int | None
    flag: str | None


def prepare(name: str, **options: Unpack[ReadyOptions]) -> ModelRef:
    """refer, then ready: the one path from a name to a model on this disk that fits."""
    return ready(refer(name, offline=options.get("offline")), **options)
