"""Manifests: the JSON file per installed model that records where its file is and what it
was when verified, read (or found broken), written atomically, and checked against the disk."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticSerializationError

from localagent import settings
from localagent.catalog import LocalModel
from localagent.errors import ConfigError, IntegrityError, StoreError
from localagent.files import atomic_write
from localagent.ggufinfo import GGUFInfo
from localagent.store.disk import sha256_file, writing
from localagent.units import utc_now

NAME_MAX = 255  # the longest file name (in bytes) Linux, macOS and Windows filesystems allow
# hub, bundled, import, path: files the store verified itself; the others are registered in
# place where another tool keeps them (`models scan`), and never deleted by the store
Source = Literal["hub", "bundled", "import", "path", "ollama", "lmstudio", "hf-cache", "llama-cache"]
EXTERNAL: tuple[Source, ...] = ("ollama", "lmstudio", "hf-cache", "llama-cache")


class Part(BaseModel):
    """A further part of a split GGUF (`-00002-of-00003.gguf`...), beside the first."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    path: str
    sha256: str
    size: int
    mtime_ns: int


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
    parts: tuple[Part, ...] = ()  # the other parts of a split GGUF; `path` is the first
    origin: str | None = None  # where another tool records it (an Ollama manifest), for scan
    note: str | None = None  # said once when it was pulled (the quant chosen in its place)

    @property
    def total_size(self) -> int:
        return self.size + sum(p.size for p in self.parts)

    @property
    def part_paths(self) -> tuple[Path, ...]:
        """The other parts of a split GGUF, beside `path`."""
        return tuple(Path(p.path) for p in self.parts)

    @property
    def external(self) -> bool:
        """True for a file another tool keeps: registered in place, never deleted here."""
        return self.source in EXTERNAL

    def way_out(self) -> str:
        """What to do when its file is gone or changed."""
        if self.external:
            return f"`localagent models rm {self.alias}`, then `localagent models scan` to register what is there now"
        return f"`localagent models rm {self.alias}` and pull or import it again"


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


def folder_name(name: str) -> str | None:
    """`name` quoted into one file name; None when no file can have it: empty, '.' or '..',
    too long once quoted, or not encodable (a non-UTF-8 name from argv arrives with lone
    surrogates). Such a name has nothing installed: a lookup of it finds nothing without
    touching the disk."""
    try:
        quoted = quote(name, safe="")
    except UnicodeEncodeError:
        return None
    return quoted if 0 < len(quoted) <= NAME_MAX and quoted not in (".", "..") else None


def stored_name(name: str) -> str:
    """`name` as a file name in the store, for writing; ConfigError when it cannot be one (only
    catalog aliases and quants reach here unchecked: imported names match NAME_RE)."""
    folder = folder_name(name)
    if folder is None:
        raise ConfigError(
            f"'{name}' cannot name a file in the model store: it is empty, '.', '..', too long or not UTF-8",
            hint="give the catalog entry (or its quant) a shorter plain name",
        )
    return folder


def manifest_dir(alias: str) -> Path | None:
    folder = folder_name(alias)
    return settings.models_dir() / "manifests" / folder if folder else None


def manifest_path(alias: str, quant: str) -> Path:
    return settings.models_dir() / "manifests" / stored_name(alias) / stored_name(f"{quant}.json")


def read_manifest(path: Path) -> Manifest | BrokenManifest | None:
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
        alias=unquote(path.parent.name),
        quant=unquote(path.stem),
        manifest=path,
        problem=f"manifest {path}: {what}",
        path=_named_file(raw),
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


def write_manifest(manifest: Manifest, path: Path | None = None) -> None:
    path = path or manifest_path(manifest.alias, manifest.quant)
    try:
        text = manifest.model_dump_json(indent=2) + "\n"
    except PydanticSerializationError as exc:  # a path that is not UTF-8 (lone surrogates)
        raise StoreError(
            f"cannot record {manifest.path!r} in the model store: its name is not UTF-8",
            hint="rename the file (or its folder) to a UTF-8 name",
        ) from exc
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)


def remember(manifest: Manifest, path: Path | None = None) -> None:
    """Write a manifest that only saves work later (a re-hash): a store that cannot be
    written (a read-only home, a full disk) must not stop a model verified just now."""
    try:
        write_manifest(manifest, path)
    except StoreError:
        pass


def scan(alias: str | None = None) -> tuple[list[Manifest], list[BrokenManifest]]:
    """The manifests (of `alias`, else all): those that read, and the broken ones."""
    root = settings.models_dir() / "manifests"
    try:
        if alias is not None:
            dirs = [d] if (d := manifest_dir(alias)) else []
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
            found = read_manifest(path)
            if isinstance(found, Manifest):
                good.append(found)
            elif found is not None:
                broken.append(found)
    return good, broken


def readable(alias: str | None = None) -> list[Manifest]:
    """The manifests (of `alias`, else all) that read; broken ones are left out."""
    return scan(alias)[0]


def installed_aliases() -> list[str]:
    """The aliases with a manifest that reads, sorted."""
    return sorted({m.alias for m in readable()})


def same_quant(quant: str, asked: str | None) -> bool:
    """`quant` is the one asked for, in any case (Q4_K_M, q4_k_m); any is when none is asked."""
    return asked is None or quant.upper() == asked.upper()


def manifests_of(alias: str, quant: str | None = None) -> tuple[list[Manifest], list[BrokenManifest]]:
    """The manifests of `alias` (of `quant` when given), those that read and the broken ones;
    a manifest in the alias's folder that names another alias is not one of them."""
    good, broken = scan(alias)
    return (
        [m for m in good if m.alias == alias and same_quant(m.quant, quant)],
        [b for b in broken if same_quant(b.quant, quant)],
    )


def raise_if_broken(alias: str, quant: str | None) -> None:
    """The StoreError of the first broken manifest of `alias` (of `quant` when given), if any:
    what to say when no manifest that reads was found."""
    for broken in manifests_of(alias, quant)[1]:
        raise broken.error()


def installed_manifest(alias: str, quant: str | None, entry: LocalModel | None) -> Manifest | None:
    """The manifest to use for alias (and quant): the asked quant; else the catalog's default
    quant; else the most recently installed one."""
    candidates = manifests_of(alias)[0]
    if quant:
        return next((m for m in candidates if same_quant(m.quant, quant)), None)
    if entry:
        default = next((m for m in candidates if same_quant(m.quant, entry.quant)), None)
        if default:
            return default
    return max(candidates, key=lambda m: m.pulled_at, default=None)


def checked(manifest: Manifest, record: Path | None = None) -> Manifest | None:
    """The manifest if its file (every part of a split one) is still the verified one; None if
    a file is gone. A file whose size or mtime changed is hashed again: same sha256 ->
    manifest refreshed, else IntegrityError. `record`: where the manifest is kept, when not
    under manifests/."""
    files = [(manifest.path, manifest.sha256, manifest.size, manifest.mtime_ns)]
    files += [(p.path, p.sha256, p.size, p.mtime_ns) for p in manifest.parts]
    mtimes = []
    for name, sha256, size, mtime_ns in files:
        path = Path(name)
        try:
            st = path.stat()
        except OSError:
            return None
        if st.st_size == size and st.st_mtime_ns == mtime_ns:
            mtimes.append(mtime_ns)
            continue
        if manifest.source == "bundled":
            return None  # pip replaced it: register it afresh against its package's RECORD
        sha = sha256_file(path)
        if sha != sha256 or st.st_size != size:
            raise IntegrityError(
                f"{path} ({manifest.alias}) changed on disk since it was verified: sha256 {sha}, expected {sha256}",
                hint=manifest.way_out(),
            )
        mtimes.append(st.st_mtime_ns)
    if mtimes[0] == manifest.mtime_ns and all(m == p.mtime_ns for m, p in zip(mtimes[1:], manifest.parts, strict=True)):
        return manifest
    parts = tuple(p.model_copy(update={"mtime_ns": m}) for m, p in zip(mtimes[1:], manifest.parts, strict=True))
    refreshed = manifest.model_copy(update={"mtime_ns": mtimes[0], "parts": parts})
    remember(refreshed, record)
    return refreshed


def new_manifest(path: Path, sha: str, info: GGUFInfo, **fields) -> Manifest:
    st = path.stat()
    return Manifest(
        path=str(path), sha256=sha, size=st.st_size, mtime_ns=st.st_mtime_ns, pulled_at=utc_now(), gguf=info, **fields
    )


def register(path: Path, sha: str, info: GGUFInfo, **fields) -> Manifest:
    manifest = new_manifest(path, sha, info, **fields)
    write_manifest(manifest)
    return manifest
