"""The workspace paths a tool call may name at this step, for the reply's grammar.

In json mode every reply is decoded under a grammar compiled from the tools' schemas. Here
the path arguments get the workspace's actual paths as their choices: read_file and
edit_file only files that exist, list_directory only folders, get_file_info and
search_files either, write_file an existing file or a new path inside the workspace (no
`..`, not absolute). A small model then cannot ask for `README` when the file is
`README.md`, or wander out with `../..`: the call it starts names something that is there.

The tools' descriptions in the prompt never change, only the grammar does (the choices go
to the engine beside the tools, `ChatModel.chat(choices=...)`), so the prompt's prefix stays
cached from step to step. The listing is bounded: past MAX_PATHS entries no choices are
made for that step, and the step's trace says so. The tools still check every path.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from localagent.errors import ToolError
from localagent.records import ArgumentChoice
from localagent.sandbox import DIR_FLAGS, IGNORED_DIRS, Workspace

# file: an existing file; folder: an existing folder ("." is the root); entry: either;
# new: an existing file or any new path inside the workspace
PathKind = Literal["file", "folder", "entry", "new"]

# entries listed at most: beyond, the step's paths are not held (a grammar of 2,000 paths
# compiles in ~20 ms with llguidance; the listing itself stays well under that)
MAX_PATHS = 2000

# a new path: names joined by `/`, each not starting with `..` and never `.` alone, no
# leading `/`, at most 9 deep; printable ASCII without quotes, backslashes or shell
# specials, and any non-ASCII letter. Anchored: llguidance matches the whole string.
_NAME_START = r"[A-Za-z0-9_+@,=\x{80}-\x{10FFFF}-]"
_NAME_REST = r"[A-Za-z0-9_.+@,= \x{80}-\x{10FFFF}-]{0,120}"
_NAME = rf"\.?{_NAME_START}{_NAME_REST}"
NEW_PATH_PATTERN = rf"^({_NAME}/){{0,8}}{_NAME}$"


@dataclass(frozen=True)
class Listing:
    """The workspace's files and folders, relative to its root, sorted. Incomplete when it
    held more than the limit: then nothing is held to it."""

    files: tuple[str, ...]
    folders: tuple[str, ...]
    complete: bool

    def summary(self) -> str:
        """What the trace says of this step's paths."""
        if not self.complete:
            return f"paths not held: the workspace has more than {MAX_PATHS} entries"
        return f"paths held to {_count(len(self.files), 'file')}, {_count(len(self.folders), 'folder')}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _nameable(name: str) -> bool:
    """A name a JSON string argument can spell plainly: UTF-8 (no surrogate-escaped bytes) and
    no control characters. Others are left out; the tools still reach them unconstrained."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 0x20 or c == "\x7f" for c in name)


def list_paths(ws: Workspace, limit: int = MAX_PATHS) -> Listing:
    """Every file and folder below the root, breadth first, never following a link out of the
    workspace and never descending a linked folder (no loops); .git is skipped, as the tools
    skip it. Reads at most `limit` + 1 entries, however large a folder is."""
    files: list[str] = []
    folders: list[str] = ["."]
    todo: deque[tuple[str, ...]] = deque([()])
    seen = 0
    while todo:
        parts = todo.popleft()
        try:
            entries = _entries(ws, parts, limit - seen + 1)
        except (OSError, ToolError):  # gone or changed meanwhile: listed as far as it could be
            continue
        for name, kind in entries:
            seen += 1
            if seen > limit:
                return Listing((), (), complete=False)
            path = (*parts, name)
            shown = "/".join(path)
            if kind == "link":
                kind = _followed(ws, path)
            if kind == "folder":
                folders.append(shown)
                todo.append(path)
            elif kind in ("file", "linked folder"):
                (files if kind == "file" else folders).append(shown)
    return Listing(tuple(sorted(files)), tuple(sorted(folders)), complete=True)


def _entries(ws: Workspace, parts: tuple[str, ...], most: int) -> list[tuple[str, str]]:
    """(name, kind) of at most `most` entries of the folder `parts`: kind is file, folder,
    link or other (FIFOs, sockets, devices: never offered)."""
    out: list[tuple[str, str]] = []
    with ws.follow(parts) as target:
        fd = os.open(target.name, DIR_FLAGS, dir_fd=target.dir_fd)
        try:
            with os.scandir(fd) as it:
                for entry in it:  # scandir reads the folder in chunks: a huge one is cut at `most`
                    if entry.name in IGNORED_DIRS or not _nameable(entry.name):
                        continue
                    out.append((entry.name, _kind(entry)))
                    if len(out) >= most:
                        break
        finally:
            os.close(fd)
    return out


def _kind(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "link"
    if entry.is_dir(follow_symlinks=False):
        return "folder"
    if entry.is_file(follow_symlinks=False):
        return "file"
    return "other"


def _followed(ws: Workspace, path: tuple[str, ...]) -> str:
    """A link's kind as the tools would see it: a file, a folder (listed, not descended), or
    nothing (broken, a loop, or leading out of the workspace)."""
    try:
        with ws.follow(path) as target:
            info = target.info
    except (OSError, ToolError):
        return "other"
    if info is None:
        return "other"
    if stat.S_ISDIR(info.st_mode):
        return "linked folder"
    return "file" if stat.S_ISREG(info.st_mode) else "other"


def choices(kinds: Sequence[tuple[str, str, PathKind]], listing: Listing) -> tuple[ArgumentChoice, ...]:
    """The argument choices for (tool, argument, kind) triples, from one listing; none when
    the listing is incomplete."""
    if not listing.complete:
        return ()
    values: dict[PathKind, tuple[str, ...]] = {
        "file": listing.files,
        "folder": listing.folders,
        "entry": tuple(sorted((*listing.files, *listing.folders))),
        "new": listing.files,
    }
    return tuple(
        ArgumentChoice(tool, argument, values[kind], NEW_PATH_PATTERN if kind == "new" else None)
        for tool, argument, kind in kinds
    )
