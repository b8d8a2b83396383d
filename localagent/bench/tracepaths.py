"""A trial's trace, from the path stored in its record to the bytes on disk. The path comes
from a results file or an import, so it is checked to name a file inside its run folder
before anything is read: a report or an export never reads a file elsewhere."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from localagent.bench.results_errors import shown
from localagent.errors import ResultsError

# localagent writes traces/<model>/<task>-<trial>.jsonl; a trace path far longer is not ours
TRACE_PATH_MAX = 1024


def clean_trace_path(value: str) -> str:
    """A trace path as stored in TrialResult.trace_path, normalised ('.' and empty parts
    dropped), relative to its run folder; ResultsError when it is not one localagent could have
    written: absolute, with a '..' part (refused, not resolved: a symlink can make `a/..` lead
    anywhere), a backslash, NUL or another control character, or over TRACE_PATH_MAX long."""
    if len(value) > TRACE_PATH_MAX:
        raise ResultsError(f"trace path of {len(value)} characters (at most {TRACE_PATH_MAX})")
    if "\\" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ResultsError(f"trace path {shown(value)} holds a backslash or a control character")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise ResultsError(f"trace path {shown(value)} leads outside its run folder")
    if not path.parts:
        raise ResultsError("empty trace path")
    return path.as_posix()


def trace_file(run_dir: Path, trace_path: str) -> Path | None:
    """The file a trial's trace path names, symlinks resolved, checked to be a regular file
    inside the (resolved) run folder; None when there is no such file (a trace deleted, or not
    imported), ResultsError saying why not for one that must not be read."""
    rel = clean_trace_path(trace_path)
    root = Path(run_dir).resolve()
    named = root / rel
    try:
        path = named.resolve(strict=True)
    except FileNotFoundError:
        return None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise ResultsError(f"cannot read {named}: {getattr(exc, 'strerror', None) or exc}") from None
    if not path.is_relative_to(root):
        raise ResultsError(f"{named} leads outside its run folder {root} (to {path})")
    if not path.is_file():
        raise ResultsError(f"{named}: not a regular file")
    return path


def read_trace(path: Path, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the trace file `path` (from `trace_file`), and whether it holds
    more. Opened without following a symlink swapped in since, without blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ResultsError(f"{path}: not a regular file")
        data = f.read(limit + 1)
    return data[:limit], len(data) > limit
