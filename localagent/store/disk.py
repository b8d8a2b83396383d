"""The store's own file handling: hashing, turning a failed write into a StoreError that says
what to do, and removing folders a removal left empty."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localagent import settings
from localagent.errors import StoreError

CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def writing(target: Path | None = None) -> Iterator[None]:
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
            hint = (
                "make it writable, or set LOCALAGENT_HOME to a writable folder (models go in $LOCALAGENT_HOME/models)"
            )
        raise StoreError(f"cannot write to the model store ({where}): {exc.strerror or exc}", hint=hint) from exc


def prune_empty(folder: Path, root: Path) -> None:
    """Remove `folder` and its parents while they are empty, stopping at `root`."""
    while folder != root and root in folder.resolve().parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
