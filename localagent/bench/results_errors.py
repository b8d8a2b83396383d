"""Problems with stored results put in words: a failed write with what to do about it, the
first field a record got wrong, a value from a file shown safely. Shared by the run folder,
the database and export/import, so each says a problem the same way; the exception classes
themselves live in `localagent.errors`."""

from __future__ import annotations

import errno
from pathlib import Path

from pydantic import ValidationError

from localagent.errors import ResultsWriteError


def write_error(path: Path, exc: OSError) -> ResultsWriteError:
    """A failed write of `path`, in words, with what to do about it. Made from the first error
    of a write, before anything else (closing the file, a cleanup) can raise a second one."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f"free some space on the disk that holds {path.parent}"
    elif exc.errno == errno.EFBIG:
        hint = "a file size limit stopped the write (see `ulimit -f`): lift it"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = f"make {path.parent} writable"
    else:
        hint = None
    return ResultsWriteError(f"cannot write {path}: {exc.strerror or exc}", hint=hint)


def first_error(exc: ValidationError) -> str:
    """The first thing wrong with a record: one field is enough to find the bad line."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(record)"
    return f"field '{field}': {err['msg']}"


def shown(value: str, width: int = 60) -> str:
    """A value from a file, quoted and shortened, for a message (a hostile file can hold a
    megabyte of it, or control characters that repr makes visible)."""
    return repr(value if len(value) <= width else value[:width] + "...")
