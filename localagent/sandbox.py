"""The workspace sandbox the file tools run in: paths walked beneath the root one
descriptor at a time (O_NOFOLLOW, each link read and checked by hand), special files
refused before anything opens them, and files written in place through the open folder.

Every refusal is a `ToolError` whose message goes back to the model.
"""

from __future__ import annotations

import difflib
import errno
import os
import stat
import uuid
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Optional

from localagent.errors import ConfigError, ToolError
from localagent.records import safe_text
from localagent.settings import expand_user

# folders the tools never list, search or change
IGNORED_DIRS = frozenset({".git"})
# Linux's PATH_MAX and NAME_MAX. Checked before a walk makes any folder: write_file to a path
# 3000 folders deep failed cleanly, but only after it had made the a/a/a/... chain, which it
# left behind. Other programs cannot open a longer path, and no longer name can exist.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


class OutsideWorkspace(ToolError):
    """The path, or a link on its way, leads outside the workspace."""


# Every folder on a path is opened with these: the kernel never follows a link (the walk
# reads links and follows them itself, checking each hop), never blocks on a FIFO, and no
# child process inherits the descriptor.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_LINK_HOPS = 40  # Linux's own limit before ELOOP


@dataclass(frozen=True)
class Target:
    """Where a path leads, links followed: the entry `name` in the open folder `dir_fd`,
    valid until the walk that found it ends. `info` is the entry's lstat, never a link's;
    None when nothing is there yet."""

    dir_fd: int
    name: str  # "." for the folder `dir_fd` itself (the root, or a path ending in "..")
    parts: tuple[str, ...]  # where it really is, relative to the root
    info: Optional[os.stat_result]
    linked: bool = False  # the path's last component was a link

    @property
    def shown(self) -> str:
        """How the model is shown it: relative to the root, '/' separators."""
        return "/".join(self.parts) or "."


class Workspace:
    """The folder the tools may touch. A path is walked from a descriptor of the root, one
    component at a time, each opened relative to the folder before it, and the kernel
    never follows a link on the way: the walk reads a link and follows it by hand, and the
    link must stay inside the root. Check and use are one step, so a folder swapped for a
    link to elsewhere while a tool runs cannot lead the tool out (checked by path and then
    opened by path, 91 of 20,000 racing writes landed outside, 705 with folders made on the
    way, and 56 of 20,000 reads returned a file from outside)."""

    def __init__(self, root: Path | str):
        path = expand_user(Path(root))
        if not path.is_dir():
            raise ConfigError(f"workspace {path} is not a directory", hint="pass an existing folder with --workspace")
        self.root = path.resolve()
        try:
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigError(
                f"workspace {path} cannot be opened: {exc.strerror}", hint="pass a folder you can read"
            ) from exc
        weakref.finalize(self, os.close, self._root_fd)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def contains(self, path: Path) -> bool:
        return self._below(Path(os.path.realpath(path))) is not None

    def locate(self, path: str, *, make_parents: bool = False) -> AbstractContextManager[Target]:
        """Where `path` (relative to the root, or absolute inside it) leads; with
        make_parents, missing folders on the way are made. The folders opened on the way
        stay open until the block ends."""
        if not path or not path.strip():
            raise ToolError("path is empty; use '.' for the workspace root")
        if "\0" in path:
            raise ToolError("path contains a NUL character")
        _check_text(path)
        # `~` is an ordinary name character, never expanded: the workspace holds no home
        # folder, and expanding `~nosuchuser/x` raised RuntimeError, which ended the run
        candidate = Path(path)
        parts = self.inside(candidate) if candidate.is_absolute() else candidate.parts
        if parts is None:
            raise _outside(path)
        _check_length(path, parts)
        return self._walk(path, parts, make_parents)

    def follow(self, parts: Sequence[str]) -> AbstractContextManager[Target]:
        """locate() for a path found inside the workspace (a listing's entry), as names."""
        return self._walk("/".join(parts), parts, make_parents=False)

    def inside(self, absolute: Path) -> tuple[str, ...] | None:
        """The names below the root of an absolute path inside it; None if it is elsewhere.
        Links in the path are not trusted here: the walk checks each again."""
        parts = self._below(absolute)
        if parts is None:  # a path elsewhere may reach the root through a link above it
            parts = self._below(Path(os.path.realpath(absolute)))
        return parts

    def _below(self, path: Path) -> tuple[str, ...] | None:
        if path == self.root or self.root in path.parents:
            return path.relative_to(self.root).parts
        return None

    @contextmanager
    def _walk(self, path: str, parts: Sequence[str], make_parents: bool) -> Iterator[Target]:
        walk = _Walk(self, path)
        try:
            yield walk.run(deque(parts), make_parents)
        finally:
            walk.back_to_root()


class _Walk:
    """One path walked down from the root's descriptor. The folders passed stay open, so
    '..' returns to the folder the walk came from (never to whatever the kernel finds
    above a folder moved meanwhile), and leaving the root is refused."""

    def __init__(self, ws: Workspace, path: str):
        self.ws, self.path = ws, path
        self.fds: list[int] = []  # the open folders below the root, in order
        self.names: list[str] = []  # their names
        self.hops = 0

    @property
    def fd(self) -> int:
        return self.fds[-1] if self.fds else self.ws._root_fd

    def back_to_root(self) -> None:
        while self.fds:
            os.close(self.fds.pop())
        self.names.clear()

    def run(self, todo: deque[str], make_parents: bool) -> Target:
        linked = False
        while todo:
            name = todo.popleft()
            if name == "..":
                if not self.fds:
                    raise _outside(self.path)
                os.close(self.fds.pop())
                self.names.pop()
                continue
            if not todo:  # the last component: looked at, never opened here
                try:
                    info: Optional[os.stat_result] = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
                except FileNotFoundError:
                    info = None
                if info is None or not stat.S_ISLNK(info.st_mode):
                    return Target(self.fd, name, (*self.names, name), info, linked)
                linked = True
            elif self._enter(name, todo, make_parents):
                continue
            self._follow_link(name, todo)
        return Target(self.fd, ".", tuple(self.names), os.fstat(self.fd), linked)

    def _enter(self, name: str, todo: deque[str], make_parents: bool) -> bool:
        """Go into the folder `name`; False when it is a link, to be followed."""
        try:
            self.fds.append(os.open(name, DIR_FLAGS, dir_fd=self.fd))
        except FileNotFoundError:
            self._missing_folder(name, todo, make_parents)
            return True
        except OSError as exc:
            # how a link answers O_NOFOLLOW|O_DIRECTORY: ENOTDIR on Linux, ELOOP on macOS, EMLINK on FreeBSD
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP, errno.EMLINK):
                raise
            try:
                mode = os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                mode = stat.S_IFDIR
            if stat.S_ISLNK(mode):
                return False
            if stat.S_ISDIR(mode):  # a folder again, or gone: changed meanwhile
                self._again(name, todo)
                return True
            if make_parents:
                shown = "/".join((*self.names, name))
                raise ToolError(f"cannot write {self.path}: {shown} is a file, not a folder") from exc
            raise _missing(self.path, self.fd, self.names, todo[-1]) from exc
        self.names.append(name)
        return True

    def _missing_folder(self, name: str, todo: deque[str], make_parents: bool) -> None:
        if ".." in todo:
            # below a missing folder nothing can be a link, so the rest is resolved as
            # text, as realpath does: "new/../x" is "x", and "new" is not made
            kept: list[str] = []
            ups = 0
            for part in (name, *todo):
                if part != "..":
                    kept.append(part)
                elif kept:
                    kept.pop()
                else:
                    ups += 1
            todo.clear()
            todo.extend([".."] * ups + kept)
            return
        if not make_parents:
            raise _missing(self.path, self.fd, self.names, todo[-1])
        if any(part in IGNORED_DIRS for part in (*self.names, name, *todo)):
            raise _in_git(self.path)
        with suppress(FileExistsError):  # made meanwhile: whatever it is, it is opened next
            os.mkdir(name, dir_fd=self.fd)
        self._again(name, todo)

    def _follow_link(self, name: str, todo: deque[str]) -> None:
        """Put the link `name`'s target in front of what is left to walk."""
        try:
            target = os.readlink(name, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT):
                raise
            self._again(name, todo)  # no longer a link: swapped meanwhile
            return
        self._count_hop()
        if os.path.isabs(target):
            parts = self.ws.inside(Path(target))
            if parts is None:
                raise _outside(self.path)
            self.back_to_root()
            todo.extendleft(reversed(parts))
        else:
            todo.extendleft(reversed(PurePosixPath(target).parts))

    def _again(self, name: str, todo: deque[str]) -> None:
        """Look at `name` once more: it changed between two looks."""
        self._count_hop()  # so a name that keeps changing ends the walk
        todo.appendleft(name)

    def _count_hop(self) -> None:
        self.hops += 1
        if self.hops > MAX_LINK_HOPS:
            raise ToolError(
                f"{self.path} leads through more than {MAX_LINK_HOPS} symbolic links (a loop?) or keeps changing; "
                "give a path without links"
            )


def _check_text(path: str) -> None:
    """A path must encode as UTF-8. One holding a lone surrogate (a JSON "\\ud800" escape) made
    the path check raise UnicodeEncodeError, which ended the run; one with surrogateescape
    characters ("\\udce9") would make a name that is not UTF-8. Both are the model's mistake."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ToolError(
            f"path '{safe_text(path)}' is not valid text (it holds a lone surrogate, "
            f"{safe_text(path[exc.start : exc.end])}); give the name in plain characters"
        ) from exc


def _check_length(path: str, parts: Sequence[str]) -> None:
    """Refuse a path longer than MAX_PATH_BYTES, or with a name longer than MAX_NAME_BYTES."""
    size = len(path.encode("utf-8"))
    if size >= MAX_PATH_BYTES:
        raise ToolError(
            f"path '{path[:40]}...' is {size} bytes long; a path may have at most {MAX_PATH_BYTES - 1} bytes"
        )
    for name in parts:
        size = len(name.encode("utf-8"))
        if size > MAX_NAME_BYTES:
            raise ToolError(
                f"the name '{name[:40]}...' is {size} bytes long; a file or folder name may have at most {MAX_NAME_BYTES} bytes"
            )


def _outside(path: str) -> OutsideWorkspace:
    candidate = Path(path)
    if candidate.is_absolute():
        hint = f"use a path relative to the workspace root, e.g. '{candidate.name or '.'}'"
    else:
        hint = "paths must stay inside the workspace root"
    return OutsideWorkspace(f"{path} is outside the workspace; {hint}")


# --- special files, opening and writing beneath the root ---


def special_kind(mode: int) -> str | None:
    """'a FIFO', 'a socket', ... for anything that is neither a regular file nor a folder."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a special file"


def _special_error(path: str, kind: str) -> ToolError:
    return ToolError(f"{path} is {kind}, not a regular file; the tools read and edit regular files only")


def refuse_special(path: str, info: os.stat_result) -> os.stat_result:
    """info, unless it is a FIFO, socket or device: those are refused before anything opens them."""
    kind = special_kind(info.st_mode)
    if kind:
        raise _special_error(path, kind)
    return info


def _changed(path: str) -> ToolError:
    return ToolError(f"{path} changed while being opened (now a link or a socket); try again")


def open_regular(path: str, target: Target) -> BinaryIO:
    """Open a file for reading in a way that cannot block: O_NONBLOCK so a FIFO swapped in
    after the checks does not wait for a writer, O_NOFOLLOW so a link swapped in is not
    followed, and the open descriptor's own fstat decides what it is."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target.name, flags, dir_fd=target.dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise _changed(path) from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
        kind = special_kind(mode)
        if kind or stat.S_ISDIR(mode):
            raise _special_error(path, kind or "a directory")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def open_dir(path: str, dir_fd: int, name: str) -> Iterator[int]:
    """A descriptor of the folder `name` of its own (a listing through a shared one would
    move the others' position in it)."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.EMLINK):
            raise _changed(path) from exc
        raise
    try:
        yield fd
    finally:
        os.close(fd)


def _missing(path: str, dir_fd: int, folder: Sequence[str], name: str) -> ToolError:
    """'X does not exist', with close names from `folder`, the nearest that exists."""
    names: list[str] = []
    with suppress(OSError), open_dir(path, dir_fd, ".") as fd:
        names = sorted(n for n in os.listdir(fd) if n not in IGNORED_DIRS)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        prefix = "".join(f"{part}/" for part in folder)
        suggestion = " or ".join(f"'{prefix}{c}'" for c in close)
        return ToolError(f"{path} does not exist; did you mean {suggestion}?")
    return ToolError(f"{path} does not exist (list_directory shows what is there)")


def require(path: str, target: Target) -> os.stat_result:
    """The target's lstat; an error naming close names when nothing is there."""
    if target.info is None:
        raise _missing(path, target.dir_fd, target.parts[:-1], target.name)
    return target.info


def require_file(path: str, target: Target) -> os.stat_result:
    info = require(path, target)
    if stat.S_ISDIR(info.st_mode):
        raise ToolError(f"{path} is a directory, not a file; use list_directory")
    return refuse_special(path, info)


def _in_git(path: str) -> ToolError:
    return ToolError(f"{path} is inside .git, which the tools do not change")


def refuse_write(path: str, target: Target) -> None:
    """Refuse what write_file and edit_file never do: write onto a folder, into .git, or over
    a file we may not write (os.replace would swap it without asking; open() refuses)."""
    if target.info is not None and stat.S_ISDIR(target.info.st_mode):
        raise ToolError(f"{path} is a directory; give a file path")
    if any(part in IGNORED_DIRS for part in target.parts):
        raise _in_git(path)
    if target.info is not None and not os.access(target.name, os.W_OK, dir_fd=target.dir_fd):
        raise ToolError(f"{path} is read-only; the tools do not change files without write permission")


def write_at(target: Target, data: bytes) -> int:
    """Write through a temp file beside the target, in the same open folder, and os.replace
    it into place, so a crash never leaves half a file and no folder swapped meanwhile can
    redirect either step. Keeps the mode of a file it replaces. (files.atomic_write does the
    same by path, for files localagent owns; the model's writes go through the descriptor.)"""
    tmp = f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666, dir_fd=target.dir_fd)  # umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if target.info is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(target.info.st_mode))
            os.fsync(f.fileno())
        os.replace(tmp, target.name, src_dir_fd=target.dir_fd, dst_dir_fd=target.dir_fd)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=target.dir_fd)
        raise
    return len(data)


def walk_files(ws: Workspace, top_fd: int, top: tuple[str, ...]) -> Iterator[Target]:
    """Everything but folders under the open folder `top_fd` (FIFOs and the like too: the
    caller decides), sorted, skipping .git, dangling links and links that leave the
    workspace; linked folders are not descended (no loops, no escapes). Each target is valid
    until the next is asked for."""
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=top_fd):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
        parts = (*top, *PurePosixPath(dirpath).parts)
        for name in sorted(filenames):
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISLNK(info.st_mode):
                yield Target(dir_fd, name, (*parts, name), info)
                continue
            try:
                with ws.follow((*parts, name)) as target:
                    if target.info is not None and not stat.S_ISDIR(target.info.st_mode):
                        yield target
            except ToolError:  # leaves the workspace, or a loop
                continue
