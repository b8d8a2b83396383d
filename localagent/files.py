"""Writing a file whole or not at all: a crash, a full disk or a second writer never leaves
half of one where the old one was, and the first error is the one raised."""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from pathlib import Path


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to a temporary file beside `path` (a unique name: two writers never share
    one), flush it to the disk, then rename it over `path`. On any failure the temporary
    file is removed and `path` is as it was. Text is written as UTF-8."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):  # the first error is the one to report
            os.unlink(tmp)
        raise
