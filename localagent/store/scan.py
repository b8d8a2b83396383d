"""`models scan`: GGUFs other tools already downloaded, registered where they are.

Where each tool keeps them (read 2026-11-30):
- Hugging Face cache: $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub
  or ~/.cache/huggingface/hub; `models--ORG--NAME/snapshots/<commit>/<file>`, each a
  symlink to `blobs/<etag>`, the etag of an LFS file being its sha256
  (https://huggingface.co/docs/hub/local-cache).
- Ollama: $OLLAMA_MODELS, else ~/.ollama/models (and /usr/share/ollama/.ollama/models, where
  the Linux service keeps them); `manifests/<registry>/<namespace>/<model>/<tag>` is a JSON
  manifest whose layer of media type `application/vnd.ollama.image.model` names the GGUF,
  kept as `blobs/sha256-<hex>` (ollama/ollama server/internal/manifest/manifest.go).
- LM Studio: ~/.lmstudio/models/<publisher>/<model>/<file>.gguf, and the older
  ~/.cache/lm-studio/models (https://lmstudio.ai/docs/advanced/sideload).
- llama.cpp: $LLAMA_CACHE, else ~/.cache/llama.cpp (~/Library/Caches/llama.cpp on macOS):
  the Hugging Face cache layout since llama.cpp PR 20775, before it flat files
  `<user>_<repo>_<file>.gguf` beside `manifest=<user>=<repo>=<tag>.json` (PR 19828).

Nothing is copied: a manifest points at the file, whose sha256 is computed once (and checked
against the one the other tool names it by, where it has one) and recorded. A file that moved
or changed is reported, never used silently; `models rm` unregisters it and never deletes it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Literal

from localagent import ggufinfo, settings
from localagent.errors import IntegrityError, LocalAgentError, ModelNotFoundError, StoreError
from localagent.hub import RepoFile
from localagent.store.disk import sha256_file
from localagent.store.hubnames import LLAMACPP, LMSTUDIO, OLLAMA, candidates, ollama_alias
from localagent.store.manifests import (
    Manifest,
    Part,
    Source,
    checked,
    manifest_path,
    manifests_of,
    readable,
    register,
    same_quant,
)

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_REGISTRY = "registry.ollama.ai"
MANIFEST_LIMIT = 1024 * 1024  # an Ollama manifest is under 1 KB
MAX_FILES = 100_000  # files looked at per folder tree: a home folder is not a model store
SOURCE_NAMES: dict[Source, str] = {
    "ollama": "Ollama",
    "lmstudio": "LM Studio",
    "hf-cache": "the Hugging Face cache",
    "llama-cache": "llama.cpp's cache",
}
_SHA256 = re.compile(r"[0-9a-f]{64}")

ScanStatus = Literal["registered", "known", "changed", "moved", "missing", "skipped"]


@dataclass(frozen=True)
class Found:
    """A GGUF another tool keeps, as found on disk (nothing hashed yet)."""

    alias: str
    quant: str | None  # from the file name; None: the header's, once read
    source: Source
    files: tuple[Path, ...]  # the file, or the parts of a split one in order
    expected: tuple[str | None, ...]  # each file's sha256 as the tool names it, if it does
    repo: str | None = None
    file: str | None = None  # the file's path in its hub repository
    origin: str | None = None  # the Ollama manifest
    problem: str | None = None  # why it cannot be used
    hint: str | None = None

    @property
    def path(self) -> Path:
        return self.files[0]


@dataclass(frozen=True)
class ScanRow:
    """One line of `models scan`."""

    alias: str
    quant: str | None
    source: Source
    path: Path
    status: ScanStatus
    problem: str | None = None
    hint: str | None = None


# ---------------------------------------------------------------- where the tools keep models


def _home() -> Path:
    return Path.home()


def _cache_home() -> Path:
    return Path(settings.env("XDG_CACHE_HOME") or _home() / ".cache")


def hf_cache_dir() -> Path:
    """The Hugging Face cache as huggingface_hub computes it (at call time, not at import)."""
    if explicit := settings.env("HF_HUB_CACHE"):
        return settings.expand_user(Path(explicit))
    hf_home = settings.env("HF_HOME")
    return (settings.expand_user(Path(hf_home)) if hf_home else _cache_home() / "huggingface") / "hub"


def ollama_dirs() -> list[Path]:
    if explicit := settings.env("OLLAMA_MODELS"):
        return [settings.expand_user(Path(explicit))]
    return [_home() / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]


def lmstudio_dirs() -> list[Path]:
    return [_home() / ".lmstudio" / "models", _home() / ".cache" / "lm-studio" / "models"]


def llama_cache_dir() -> Path:
    if explicit := settings.env("LLAMA_CACHE"):
        return settings.expand_user(Path(explicit))
    if sys.platform == "darwin":
        return _home() / "Library" / "Caches" / "llama.cpp"
    return _cache_home() / "llama.cpp"


def places() -> list[tuple[Source, Path]]:
    """Every folder looked in, whether or not it exists."""
    return [
        ("hf-cache", hf_cache_dir()),
        *(("ollama", d) for d in ollama_dirs()),
        *(("lmstudio", d) for d in lmstudio_dirs()),
        ("llama-cache", llama_cache_dir()),
    ]


# ---------------------------------------------------------------- discovery (no hashing)


def discover() -> list[Found]:
    """Every GGUF model the other tools keep, with what is wrong with those that cannot be
    used. Reads folders and small manifests only: cheap enough for `doctor`."""
    found: list[Found] = []
    for source, folder in places():
        if not _is_dir(folder):
            continue
        if source == "hf-cache":
            found += _hf_cache(folder, "hf-cache")
        elif source == "ollama":
            found += _ollama(folder)
        elif source == "lmstudio":
            found += _lmstudio(folder)
        else:
            found += _llama_cache(folder)
    return _unique([_printable(f) for f in found])


def _printable(found: Found) -> Found:
    """A name or path that is not UTF-8 (a file name in another encoding) can be neither
    recorded nor printed: such a model is reported, with its bytes shown replaced."""
    try:
        for text in (found.alias, *map(str, found.files)):
            text.encode("utf-8")
    except UnicodeEncodeError:
        shown = tuple(Path(os.fsencode(p).decode("utf-8", "replace")) for p in found.files)
        return replace(
            found,
            alias=found.alias.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
            files=shown,
            problem="its name or path is not UTF-8, which the model store cannot record",
            hint="rename it (or its folder) to a UTF-8 name, then scan again",
        )
    return found


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _walk(root: Path, pattern: str = "*.gguf") -> Iterator[Path]:
    """Files under `root` matching `pattern`, in order, at most MAX_FILES looked at; an
    unreadable folder is skipped."""
    try:
        yield from sorted(islice(root.rglob(pattern), MAX_FILES))
    except OSError:
        return


def _unique(found: list[Found]) -> list[Found]:
    """One entry per (alias, quant): the same file kept by a second tool (the Hugging Face
    cache and llama.cpp's) is left out; another file under a name already taken gets its own
    quant label (the file's stem), so that both can be registered."""
    seen: dict[tuple[str, str | None], str] = {}
    out = []
    for f in found:
        key = (f.alias, f.quant.upper() if f.quant else None)
        if key in seen and f.quant is not None:
            if seen[key] == (f.file or f.path.name):
                continue
            f = replace(f, quant=f.path.name.removesuffix(".gguf"))
            key = (f.alias, f.quant)
        seen[key] = f.file or f.path.name
        out.append(f)
    return out


def _hf_cache(root: Path, source: Source) -> list[Found]:
    """`models--ORG--NAME/snapshots/<commit>/...`: named hf.co/ORG/NAME[:QUANT] as a pull would."""
    found = []
    try:
        repos = sorted(d for d in root.iterdir() if d.name.startswith("models--"))
    except OSError:
        return []
    for repo_dir in repos:
        org_name = repo_dir.name.removeprefix("models--").split("--")
        if len(org_name) != 2:
            continue
        repo = "/".join(org_name)
        files: dict[str, tuple[RepoFile, Path]] = {}
        for snapshot in _snapshots(repo_dir):
            for path in _walk(snapshot):
                rel = path.relative_to(snapshot).as_posix()
                if rel in files:
                    continue  # the newest snapshot's copy wins
                blob = _blob_name(path)
                files[rel] = (RepoFile(rel, 0, blob if blob and _SHA256.fullmatch(blob) else None), path)
        for c in candidates([f for f, _ in files.values()]):
            paths = tuple(files[f.path][1] for f in c.files)
            found.append(
                Found(
                    alias=f"hf.co/{repo}",
                    quant=c.quant,
                    source=source,
                    files=paths,
                    expected=tuple(f.sha256 for f in c.files),
                    repo=repo,
                    file=c.first,
                    problem=_missing(paths),
                    hint="download it again with huggingface_hub (or `localagent models pull`)",
                )
            )
    return found


def _snapshots(repo_dir: Path) -> list[Path]:
    """The snapshot folders of one cached repository, the one refs/main names first."""
    folder = repo_dir / "snapshots"
    try:
        snaps = sorted((d for d in folder.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)
    except OSError:
        return []
    try:
        main = (repo_dir / "refs" / "main").read_text(encoding="utf-8", errors="replace").strip()[:64]
    except OSError:
        main = ""
    return sorted(snaps, key=lambda d: d.name != main)


def _blob_name(path: Path) -> str | None:
    """The blob a snapshot file links to: its name is the file's etag, the sha256 for LFS."""
    try:
        return Path(path.readlink()).name if path.is_symlink() else None
    except OSError:
        return None


def _missing(paths: tuple[Path, ...]) -> str | None:
    gone = [p for p in paths if not p.is_file()]
    return f"{gone[0]} is a broken link: its file is gone" if gone else None


def _ollama(root: Path) -> list[Found]:
    found = []
    manifests = root / "manifests"
    for path in _walk(manifests, "*"):
        if path.is_file():
            rel = path.relative_to(manifests).parts
            if len(rel) == 4:  # <registry>/<namespace>/<model>/<tag>
                found.append(_ollama_model(root, path, rel))
    return found


def _ollama_name(rel: tuple[str, ...]) -> str:
    registry, namespace, model, tag = rel
    if registry == OLLAMA_REGISTRY:
        return f"{OLLAMA}{model}:{tag}" if namespace == "library" else f"{OLLAMA}{namespace}/{model}:{tag}"
    return f"{OLLAMA}{registry}/{namespace}/{model}:{tag}"


def _ollama_model(root: Path, path: Path, rel: tuple[str, ...]) -> Found:
    """One Ollama manifest -> its GGUF blob, or what is wrong with it."""
    name = _ollama_name(rel)
    pull = f"`ollama pull {name.removeprefix(OLLAMA)}` repairs it; `ollama rm` drops it"
    base = Found(name, None, "ollama", (path,), (None,), origin=str(path), hint=pull)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MANIFEST_LIMIT + 1)
        data = json.loads(raw) if len(raw) <= MANIFEST_LIMIT else None
    except (OSError, ValueError, RecursionError) as exc:
        return replace(base, problem=f"its Ollama manifest {path} cannot be read ({type(exc).__name__})")
    layers = data.get("layers") if isinstance(data, dict) else None
    model = next(
        (layer for layer in layers or [] if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_LAYER),
        None,
    )
    digest = model.get("digest") if model else None
    if not isinstance(digest, str) or not digest.startswith("sha256:") or not _SHA256.fullmatch(digest[7:]):
        what = "no model layer" if model is None else "a model layer without a sha256 digest"
        return replace(base, problem=f"its Ollama manifest {path} has {what} ({OLLAMA_MODEL_LAYER})")
    blob = root / "blobs" / f"sha256-{digest[7:]}"
    found = replace(base, files=(blob,), expected=(digest[7:],))
    if not blob.is_file():
        return replace(found, problem=f"its model blob {blob.name} is missing from {blob.parent}")
    return found


def _lmstudio(root: Path) -> list[Found]:
    """`<publisher>/<model>/<file>.gguf`: named lmstudio:PUBLISHER/MODEL[:QUANT]."""
    by_repo: dict[str, list[tuple[RepoFile, Path]]] = {}
    for path in _walk(root):
        rel = path.relative_to(root).parts
        if len(rel) >= 3 and path.is_file():
            by_repo.setdefault(f"{rel[0]}/{rel[1]}", []).append((RepoFile("/".join(rel[2:]), 0, None), path))
    found = []
    for repo, entries in by_repo.items():
        paths = {f.path: p for f, p in entries}
        for c in candidates([f for f, _ in entries]):
            found.append(
                Found(
                    alias=f"{LMSTUDIO}{repo}",
                    quant=c.quant,
                    source="lmstudio",
                    files=tuple(paths[f.path] for f in c.files),
                    expected=(None,) * len(c.files),
                    repo=repo,
                    file=c.first,
                )
            )
    return found


def _llama_cache(root: Path) -> list[Found]:
    """The Hugging Face layout llama.cpp uses now, and its older flat files."""
    found = _hf_cache(root, "llama-cache")
    repos = {}
    for manifest in _walk(root, "manifest=*.json"):
        parts = manifest.name.removesuffix(".json").split("=")
        if len(parts) == 4:
            repos[f"{parts[1]}_{parts[2]}_"] = f"{parts[1]}/{parts[2]}"
    flat = [p for p in _walk(root) if p.parent == root and p.is_file()]
    by_prefix: dict[str, list[RepoFile]] = {}
    for path in flat:
        prefix = next((k for k in repos if path.name.startswith(k)), "")
        by_prefix.setdefault(prefix, []).append(RepoFile(path.name, 0, None))
    for prefix, files in by_prefix.items():
        for c in candidates(files):
            repo = repos.get(prefix)
            alias = f"hf.co/{repo}" if repo else f"{LLAMACPP}{c.first.removesuffix('.gguf')}"
            found.append(
                Found(
                    alias=alias,
                    quant=c.quant,
                    source="llama-cache",
                    files=tuple(root / f.path for f in c.files),
                    expected=(None,) * len(c.files),
                    repo=repo,
                    file=c.first[len(prefix) :] if repo else c.first,
                )
            )
    return found


# ---------------------------------------------------------------- registration


def scan_all() -> list[ScanRow]:
    """Discover, register what is new (hashing it once), report what changed or moved, and
    the registered models of other tools whose files are gone."""
    rows = [_registered(f) for f in discover()]
    seen = {str(r.path) for r in rows}
    moved = {(r.alias, r.quant) for r in rows if r.status == "moved"}
    for m in readable():
        if m.external and m.path not in seen and (m.alias, m.quant) not in moved and not Path(m.path).is_file():
            rows.append(ScanRow(m.alias, m.quant, m.source, Path(m.path), "missing", f"{m.path} is gone", m.way_out()))
    return rows


def _registered(found: Found) -> ScanRow:
    row = ScanRow(found.alias, found.quant, found.source, found.path, "skipped", found.problem, found.hint)
    mine = manifests_of(found.alias)[0]
    if found.problem:
        registered = next((m for m in mine if m.path == str(found.path)), None)
        if registered is not None:  # registered before, its file gone since
            return replace(
                row, status="missing", quant=registered.quant, hint=f"{found.hint}; or {registered.way_out()}"
            )
        return row
    same = next((m for m in mine if m.path == str(found.path)), None)
    if same is not None:
        row = replace(row, quant=same.quant)
        try:
            ok = checked(same)
        except IntegrityError as exc:
            return replace(row, status="changed", problem=exc.message, hint=exc.hint)
        if ok is None:
            return replace(row, status="missing", problem="a part of it is gone", hint=same.way_out())
        return replace(row, status="known")
    if found.quant is not None:
        taken = next((m for m in mine if same_quant(m.quant, found.quant)), None)
        if taken is not None:
            return _taken(row, taken)
    try:
        manifest = register_found(found)
    except LocalAgentError as exc:
        return replace(row, problem=exc.message, hint=exc.hint)
    return replace(row, status="registered", quant=manifest.quant)


def _taken(row: ScanRow, taken: Manifest) -> ScanRow:
    """The name is registered with another file: the same model kept twice, or one that moved."""
    if Path(taken.path).is_file():
        where = "pulled into the store" if not taken.external else f"registered from {taken.path}"
        return replace(row, status="known", problem=f"already {where}")
    return replace(
        row,
        status="moved",
        problem=f"registered at {taken.path}, which is gone; found again at {row.path}",
        hint=taken.way_out(),
    )


def register_found(found: Found) -> Manifest:
    """Check the header, hash every file once (against the sha256 the tool names it by, if
    any) and write the manifest that points at it. IntegrityError when it is not a GGUF or
    not what its tool says it is; nothing is registered then."""
    infos, shas = [], []
    for path, expected in zip(found.files, found.expected, strict=True):
        try:
            infos.append(ggufinfo.read(path))
        except IntegrityError as exc:
            raise IntegrityError(f"{found.alias}: {exc.message}", hint=found.hint or exc.hint) from exc
        sha = sha256_file(path)
        if expected and sha != expected:
            raise IntegrityError(
                f"{found.alias}: {path} has sha256 {sha}, not the {expected} {SOURCE_NAMES[found.source]} names it by",
                hint=found.hint or "download it again with the tool that keeps it",
            )
        shas.append(sha)
    info = infos[0]
    if len(infos) > 1:
        info = replace(info, parameters=sum(i.parameters for i in infos))
    quant = found.quant or info.quant or "unknown"
    manifest_path(found.alias, quant)  # a name the store cannot hold fails before any write
    parts = tuple(
        Part(path=str(p), sha256=s, size=p.stat().st_size, mtime_ns=p.stat().st_mtime_ns)
        for p, s in zip(found.files[1:], shas[1:], strict=True)
    )
    return register(
        found.path,
        shas[0],
        info,
        alias=found.alias,
        quant=quant,
        source=found.source,
        repo=found.repo,
        file=found.file,
        origin=found.origin,
        parts=parts,
    )


def register_named(alias: str, quant: str | None) -> Manifest:
    """Register the one model of another tool named `alias` (`ollama:qwen3:4b`), found now:
    what `resolve` does for a name `models scan` has not registered yet."""
    alias = ollama_alias(alias) or alias
    matches = [
        f for f in discover() if f.alias == alias and (quant is None or (f.quant or "").upper() == quant.upper())
    ]
    if not matches:
        raise ModelNotFoundError(
            f"no model named '{alias}{':' + quant if quant else ''}' in "
            + ", ".join(sorted({SOURCE_NAMES[s] for s, _ in places()})),
            hint="`localagent models scan` lists what the other tools keep, by the names to use here",
        )
    found = matches[0]
    if found.problem:
        raise StoreError(f"{found.alias}: {found.problem}", hint=found.hint)
    return register_found(found)
