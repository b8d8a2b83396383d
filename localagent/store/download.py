"""A pull from the Hugging Face hub: downloaded into .partial/ (an interrupted pull continues
there), checked against the catalog's or the hub's sha256 and the GGUF header, then moved
into hub/ and registered. One process at a time per file."""

from __future__ import annotations

import os
from contextlib import suppress

from localagent import ggufinfo, settings
from localagent.catalog import LocalModel
from localagent.errors import DownloadError, IntegrityError, StoreError
from localagent.hub import Progress
from localagent.store.disk import writing
from localagent.store.manifests import (
    Manifest,
    checked,
    installed_manifest,
    manifest_path,
    register,
)


def pull_from_hub(entry: LocalModel, quant: str, *, progress: bool | Progress) -> Manifest:
    """The registered manifest of `entry` at `quant`, downloaded and verified now (or by
    another process while this one waited for the file's lock)."""
    from huggingface_hub.utils import WeakFileLock

    from localagent import hub

    file = entry.file_for(quant)
    manifest_path(entry.alias, quant)  # a name the store cannot hold fails before the download
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
            hint='add sha256 = "..." to the entry in your models.toml',
        )
    models = settings.models_dir()
    part = models / ".partial" / f"{expected}.part"
    target = models / "hub" / entry.repo / file
    with writing(part.parent):
        part.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(f"{part}.lock"):
        # another process may have finished this pull while we waited for the lock
        done = installed_manifest(entry.alias, quant, entry)
        if done and (done := checked(done)):
            return done
        try:
            with writing(part):
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
        with writing(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
            return register(
                target,
                sha,
                info,
                alias=entry.alias,
                quant=quant,
                source="hub",
                repo=entry.repo,
                revision=entry.revision,
                commit=remote.commit,
                file=file,
            )
