"""What is installed: the list, the selection of one alias's manifests, and their removal
(which deletes only files the store itself holds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from localagent import settings
from localagent.catalog import load_catalog, suggest
from localagent.errors import ModelNotFoundError
from localagent.ggufinfo import GGUFInfo
from localagent.store.disk import prune_empty, writing
from localagent.store.manifests import (
    BrokenManifest,
    Manifest,
    Source,
    installed_aliases,
    manifest_path,
    manifests_of,
    readable,
)
from localagent.store.resolve import split_quant


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
    parts: tuple[Path, ...] = ()  # the other parts of a split GGUF


def _installed(m: Manifest) -> InstalledModel:
    path = Path(m.path)
    return InstalledModel(
        alias=m.alias,
        quant=m.quant,
        source=m.source,
        path=path,
        sha256=m.sha256,
        size_bytes=m.total_size,
        pulled_at=m.pulled_at,
        repo=m.repo,
        file=m.file,
        commit=m.commit,
        present=path.is_file(),
        gguf=m.gguf,
        parts=m.part_paths,
    )


def installed() -> list[InstalledModel]:
    return [_installed(m) for m in readable()]


def selected(alias: str, quant: str | None) -> tuple[list[Manifest], list[BrokenManifest]]:
    """The manifests of `alias` (ALIAS or ALIAS:QUANT, or only `quant`), readable and broken;
    ModelNotFoundError when there are none."""
    alias, tagged = split_quant(alias)
    quant = quant or tagged
    asked, alias = alias, load_catalog().canonical(alias)
    good, broken = manifests_of(alias, quant)
    if not good and not broken:
        what = f"{asked}:{quant}" if quant else asked
        others = installed_aliases()
        raise ModelNotFoundError(
            f"'{what}' is not installed",
            hint=suggest(alias, others)
            if others
            else "nothing is installed: `localagent models list` shows what you can pull",
        )
    return good, broken


def remove(alias: str, *, quant: str | None = None) -> list[InstalledModel | BrokenManifest]:
    """Unregister `alias` (all its quants, or one), broken manifests included, and delete its
    files from the store (every part of a split one). Files outside the store (a bundled
    model in site-packages, another tool's model registered by `models scan`) are never
    deleted."""
    good, broken = selected(alias, quant)
    # another tool's file is never passed on to be deleted, wherever it is
    entries: list[tuple[Path | None, Path | None]] = [
        (manifest_path(m.alias, m.quant), None if m.external else Path(m.path)) for m in good
    ]
    entries += [(None, part) for m in good if not m.external for part in m.part_paths]
    drop(entries + [(b.manifest, b.path) for b in broken])
    return [*(_installed(m) for m in good), *broken]


def drop(entries: list[tuple[Path | None, Path | None]]) -> None:
    """Delete these (manifest, model file) pairs: every manifest, and every file that the
    store holds and no remaining manifest names."""
    models = settings.models_dir().resolve()
    owned = [models / folder for folder in ("hub", "imported", "bundled")]
    with writing():
        for manifest, _ in entries:
            if manifest:
                manifest.unlink(missing_ok=True)
                prune_empty(manifest.parent, models)
        still_used = {p for m in readable() for p in (Path(m.path), *m.part_paths)}
        for _, file in entries:
            # only the store's own model folders: a broken manifest may name any path
            if file and file not in still_used and any(o in file.resolve().parents for o in owned):
                file.unlink(missing_ok=True)
                prune_empty(file.parent, models)
