"""A pull from the Hugging Face hub: downloaded into .partial/ (an interrupted pull continues
there), checked against the catalog's or the hub's sha256 and the GGUF header, then moved
into hub/ and registered. One process at a time per file. A catalog entry's file, or a file
(every part of a split one) chosen from a repository named `hf.co/USER/REPO`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

from localagent import ggufinfo, settings
from localagent.catalog import LocalModel
from localagent.errors import DownloadError, IntegrityError, ModelNotFoundError, StoreError
from localagent.ggufinfo import GGUFInfo
from localagent.hub import Progress, RemoteFile
from localagent.store import hubnames
from localagent.store.disk import sha256_file, writing
from localagent.store.hubnames import Choice, HubName
from localagent.store.manifests import Manifest, Part, checked, installed_manifest, manifest_path, register


def pull_from_hub(entry: LocalModel, quant: str, *, progress: bool | Progress) -> Manifest:
    """The registered manifest of `entry` at `quant`, downloaded and verified now (or by
    another process while this one waited for the file's lock)."""
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
    target = settings.models_dir() / "hub" / entry.repo / file
    with _locked(expected):
        # another process may have finished this pull while we waited for the lock
        done = installed_manifest(entry.alias, quant, entry)
        if done and (done := checked(done)):
            return done
        source = "the catalog's" if catalog_sha else "the hub's LFS"
        sha, info = fetch(remote, expected, target, source=source, progress=progress)
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


@contextmanager
def _locked(sha: str) -> Iterator[None]:
    """One process at a time per file (named by its sha256), across processes."""
    from huggingface_hub.utils import WeakFileLock

    folder = settings.models_dir() / ".partial"
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(f"{folder / sha}.part.lock"):
        yield


def fetch(
    remote: RemoteFile, expected: str, target: Path, *, source: str, progress: bool | Progress
) -> tuple[str, GGUFInfo]:
    """Download `remote` into .partial/<sha256>.part (continuing one an earlier pull left),
    check its sha256 against `expected` (`source` names where that came from) and its GGUF
    header, and move it to `target`. On a mismatch or a damaged file nothing is kept."""
    from localagent import hub

    part = settings.models_dir() / ".partial" / f"{expected}.part"
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
    return sha, info


def choose_from_hub(name: HubName, quant: str | None, shown: str) -> Choice:
    """What a pull of `name` at `quant` would fetch, from its repository's file list
    (hubnames.choose). A repository the hub does not know is named as the user wrote it
    (`shown`): the hub answers the same for a typo and a private repository."""
    from localagent import hub

    try:
        files = hub.list_files(name.repo)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            exc.message, hint=f"check the name {shown} on the hub; a private repository needs HF_TOKEN"
        ) from exc
    return hubnames.choose(name.repo, files, quant, name.file)


def pull_hub_name(name: HubName, choice: Choice, *, progress: bool | Progress) -> Manifest:
    """The registered manifest of `choice` (one file, or every part of a split GGUF) from the
    repository `name` points at, each part verified against the hub's LFS sha256. Parts an
    interrupted pull already finished are hashed again and kept, not fetched again."""
    from localagent import hub

    alias, quant = name.alias, choice.quant
    manifest_path(alias, quant)  # a name the store cannot hold fails before the download
    remotes: list[tuple[RemoteFile, str]] = []
    revision = "main"
    for f in choice.candidate.files:
        remote = hub.locate(name.repo, f.path, revision)
        revision = remote.commit or revision  # every part from the commit of the first
        if not remote.sha256:
            raise IntegrityError(
                f"cannot verify {remote.label}: the hub gives no sha256 for it",
                hint="GGUF files on the hub are LFS files with a sha256: check HF_ENDPOINT",
            )
        remotes.append((remote, remote.sha256))
    folder = settings.models_dir() / "hub" / name.repo
    with _locked(remotes[0][1]):
        done = installed_manifest(alias, quant, None)
        if done and done.file == choice.candidate.first and (done := checked(done)):
            return done
        fetched = []
        for remote, expected in remotes:
            target = folder / remote.file
            if _already(target, expected):
                fetched.append((target, expected, ggufinfo.read(target)))
                continue
            sha, info = fetch(remote, expected, target, source="the hub's LFS", progress=progress)
            fetched.append((target, sha, info))
        first_path, first_sha, info = fetched[0]
        if len(fetched) > 1:
            info = replace(info, parameters=sum(i.parameters for _, _, i in fetched))
        parts = tuple(
            Part(path=str(p), sha256=s, size=p.stat().st_size, mtime_ns=p.stat().st_mtime_ns) for p, s, _ in fetched[1:]
        )
        return register(
            first_path,
            first_sha,
            info,
            alias=alias,
            quant=quant,
            source="hub",
            repo=name.repo,
            revision="main",
            commit=remotes[0][0].commit,
            file=choice.candidate.first,
            parts=parts,
            note=choice.note,
        )


def _already(target: Path, expected: str) -> bool:
    """True when `target` is there with the expected sha256 (a part an earlier pull finished)."""
    try:
        return target.is_file() and sha256_file(target) == expected
    except OSError:
        return False
