"""The file tools the agent calls, and the workspace sandbox they run in.

Tool and argument names are part of the benchmark task format (reference solutions call
them), so they never change. Every failure is a `ToolError` whose message goes back to the
model as the tool's result; `InvalidToolCall` marks the model's own mistakes (unknown tool,
arguments that do not match the schema) so the loop can count them apart.
"""

from __future__ import annotations

import codecs
import difflib
import errno
import fnmatch
import os
import re
import stat
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Optional

import re2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localagent.errors import ConfigError, ToolError
from localagent.records import ToolCall, ToolSpec, safe_text
from localagent.settings import expand_user

# Limits sized for small local models: a 4k-8k context must survive one tool result.
READ_MAX_LINES = 400
READ_MAX_CHARS = 12_000
LIST_MAX_ENTRIES = 300
SEARCH_MAX_MATCHES = 100
SEARCH_LINE_CHARS = 200
SEARCH_MAX_FILE_BYTES = 5_000_000
BINARY_SNIFF_BYTES = 8192
# read_file and get_file_info stream a file and stop after this many bytes, so a huge file
# (a 1 GiB log, a sparse file, one endless line) costs bounded time and memory
READ_SCAN_MAX_BYTES = 64 * 1024 * 1024
# edit_file holds the whole file in memory and rewrites it
EDIT_MAX_BYTES = 4_000_000
IGNORED_DIRS = frozenset({".git"})
# Linux's PATH_MAX and NAME_MAX. Checked before a walk makes any folder: write_file to a path
# 3000 folders deep failed cleanly, but only after it had made the a/a/a/... chain, which it
# left behind. Other programs cannot open a longer path, and no longer name can exist.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


class InvalidToolCall(ToolError):
    """The model's call itself is wrong: unknown tool, malformed or mismatched arguments."""


class OutsideWorkspace(ToolError):
    """The path, or a link on its way, leads outside the workspace."""


# Every folder on a path is opened with these: the kernel never follows a link (the walk
# reads links and follows them itself, checking each hop), never blocks on a FIFO, and no
# child process inherits the descriptor.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
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
            self.fds.append(os.open(name, _DIR_FLAGS, dir_fd=self.fd))
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


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args_model: type[BaseModel]
    fn: Callable[[Workspace, Any], str]

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, flat_schema(self.args_model))

    def parse_arguments(self, arguments: Any) -> BaseModel:
        """The call's arguments validated against the schema; InvalidToolCall says what is wrong."""
        if not isinstance(arguments, dict):
            raise InvalidToolCall(f"arguments for {self.name} must be a JSON object. Expected {self.signature()}")
        try:
            return self.args_model.model_validate(arguments)
        except ValidationError as exc:
            raise InvalidToolCall(_describe_validation(self, exc)) from exc

    def signature(self) -> str:
        """`read_file(path: string, start_line?: integer)`: for error messages."""
        schema = flat_schema(self.args_model)
        required = set(schema["required"])
        parts = [
            f"{name}{'' if name in required else '?'}: {prop.get('type', 'any')}"
            for name, prop in schema["properties"].items()
        ]
        return f"{self.name}({', '.join(parts)})"


def flat_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A JSON schema small models and grammar builders handle: one flat object, simple
    types, no titles, no $defs, no null unions, no extra properties."""
    raw = model.model_json_schema()
    properties: dict[str, Any] = {}
    for name, prop in raw.get("properties", {}).items():
        variants = [v for v in prop.get("anyOf", [prop]) if v.get("type") != "null"]
        out: dict[str, Any] = {"type": variants[0]["type"]}
        if "description" in prop:
            out["description"] = prop["description"]
        if prop.get("default") is not None:
            out["default"] = prop["default"]
        properties[name] = out
    return {
        "type": "object",
        "properties": properties,
        "required": list(raw.get("required", [])),
        "additionalProperties": False,
    }


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- helpers shared by the tools ---


def _is_binary(head: bytes) -> bool:
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut at the end of the sniffed block is still text
        return exc.start < len(head) - 3
    return False


def _special_kind(mode: int) -> str | None:
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


def _refuse_special(path: str, info: os.stat_result) -> os.stat_result:
    """info, unless it is a FIFO, socket or device: those are refused before anything opens them."""
    kind = _special_kind(info.st_mode)
    if kind:
        raise _special_error(path, kind)
    return info


def _changed(path: str) -> ToolError:
    return ToolError(f"{path} changed while being opened (now a link or a socket); try again")


def _open_regular(path: str, target: Target) -> BinaryIO:
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
        kind = _special_kind(mode)
        if kind or stat.S_ISDIR(mode):
            raise _special_error(path, kind or "a directory")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def _open_dir(path: str, dir_fd: int, name: str) -> Iterator[int]:
    """A descriptor of the folder `name` of its own (a listing through a shared one would
    move the others' position in it)."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.EMLINK):
            raise _changed(path) from exc
        raise
    try:
        yield fd
    finally:
        os.close(fd)


def _sniff(f: BinaryIO) -> bool:
    """Whether the open file looks binary; leaves it at its start."""
    binary = _is_binary(f.read(BINARY_SNIFF_BYTES))
    f.seek(0)
    return binary


def _missing(path: str, dir_fd: int, folder: Sequence[str], name: str) -> ToolError:
    """'X does not exist', with close names from `folder`, the nearest that exists."""
    names: list[str] = []
    with suppress(OSError), _open_dir(path, dir_fd, ".") as fd:
        names = sorted(n for n in os.listdir(fd) if n not in IGNORED_DIRS)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        prefix = "".join(f"{part}/" for part in folder)
        suggestion = " or ".join(f"'{prefix}{c}'" for c in close)
        return ToolError(f"{path} does not exist; did you mean {suggestion}?")
    return ToolError(f"{path} does not exist (list_directory shows what is there)")


def _require(path: str, target: Target) -> os.stat_result:
    """The target's lstat; an error naming close names when nothing is there."""
    if target.info is None:
        raise _missing(path, target.dir_fd, target.parts[:-1], target.name)
    return target.info


def _require_file(path: str, target: Target) -> os.stat_result:
    info = _require(path, target)
    if stat.S_ISDIR(info.st_mode):
        raise ToolError(f"{path} is a directory, not a file; use list_directory")
    return _refuse_special(path, info)


def _in_git(path: str) -> ToolError:
    return ToolError(f"{path} is inside .git, which the tools do not change")


def _refuse_write(path: str, target: Target) -> None:
    """Refuse what write_file and edit_file never do: write onto a folder, into .git, or over
    a file we may not write (os.replace would swap it without asking; open() refuses)."""
    if target.info is not None and stat.S_ISDIR(target.info.st_mode):
        raise ToolError(f"{path} is a directory; give a file path")
    if any(part in IGNORED_DIRS for part in target.parts):
        raise _in_git(path)
    if target.info is not None and not os.access(target.name, os.W_OK, dir_fd=target.dir_fd):
        raise ToolError(f"{path} is read-only; the tools do not change files without write permission")


def _refuse_folder_path(path: str, tool: str) -> None:
    """write_file and edit_file name a file. A path ending in '/' or '/.' names a folder, but
    the walk (like realpath) drops the ending: 'README.md/.' replaced README.md and 'new/'
    made a file named new, where a shell says "Not a directory" / "Is a directory"."""
    ending = next((e for e in ("/.", "/") if path.endswith(e)), None)
    if ending is not None:
        raise ToolError(
            f"{path} ends with '{ending}', so it names a folder, and {tool} writes a file; "
            "give the file's path, with its name after the last '/' (e.g. 'notes/todo.txt')"
        )


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ToolError("content is not valid text (it holds a lone surrogate); send plain characters") from exc


def _atomic_write(target: Target, data: bytes) -> int:
    """Write through a temp file beside the target, in the same open folder, and os.replace
    it into place, so a crash never leaves half a file and no folder swapped meanwhile can
    redirect either step. Keeps the mode of a file it replaces."""
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


def _walk_files(ws: Workspace, top_fd: int, top: tuple[str, ...]) -> Iterator[Target]:
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


def _count_lines(f: BinaryIO, budget: int) -> tuple[int, bool]:
    """Lines from the file's position on, reading at most `budget` bytes; and whether the
    count is complete (False: the file goes on past the budget)."""
    count, last, read = 0, b"\n", 0
    while read < budget and (chunk := f.read(min(1 << 20, budget - read))):
        read += len(chunk)
        count += chunk.count(b"\n")
        last = chunk[-1:]
    complete = read < budget or not f.read(1)
    return count + (last != b"\n"), complete


def _mib(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# --- the tools ---


class ReadFileArgs(_Args):
    path: str = Field(description="file path relative to the workspace root")
    start_line: Optional[int] = Field(None, ge=1, description="first line to read (1-based)")
    end_line: Optional[int] = Field(None, ge=1, description="last line to read (inclusive)")


def read_file(ws: Workspace, args: ReadFileArgs) -> str:
    with ws.locate(args.path) as target:
        _require_file(args.path, target)
        start = args.start_line or 1
        end = args.end_line
        if end is not None and end < start:
            raise ToolError(f"end_line ({end}) is before start_line ({start})")
        with _open_regular(args.path, target) as f:
            if _sniff(f):
                raise ToolError(
                    f"{args.path} is a binary file ({os.fstat(f.fileno()).st_size} bytes); read_file reads text only"
                )
            page = _Page(start, end)
            page.scan(f)
    return page.render(args.path)


class _Page:
    """The lines read_file shows, found by streaming the file in pieces of at most 64 KiB
    and READ_SCAN_MAX_BYTES in all: memory stays bounded by the page, not the file or its
    longest line."""

    PIECE = 1 << 16

    def __init__(self, start: int, end: int | None):
        self.start, self.end = start, end
        self.shown: list[str] = []
        self.chars = 0
        self.last = start - 1
        self.total = 0  # lines seen, a last line without a newline included
        self.complete = True  # False: the scan stopped at READ_SCAN_MAX_BYTES with more left
        self.truncated = False
        self.long_line: tuple[int, int | None] | None = None  # (line, characters or None: unknown)

    def scan(self, f: BinaryIO) -> None:
        scanned, number = 0, 1
        head: list[str] = []  # the current line, decoded, up to about READ_MAX_CHARS characters
        head_chars = line_chars = 0
        in_line = False  # a line has started and not ended
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            if scanned < READ_SCAN_MAX_BYTES:
                piece = f.readline(min(self.PIECE, READ_SCAN_MAX_BYTES - scanned))
            else:
                piece, self.complete = b"", not f.read(1)
            if not piece:  # the end, or the budget
                self.total = number if in_line else number - 1
                if in_line and self._wanted(number):
                    self._take(number, "".join(head), line_chars, known=self.complete)
                return
            scanned += len(piece)
            ends = piece.endswith(b"\n")
            if not self._wanted(number):
                if self.truncated:  # nothing more to show: only count the lines left
                    rest, self.complete = _count_lines(f, READ_SCAN_MAX_BYTES - scanned)
                    self.total = max(number, (number if ends else number - 1) + rest)
                    return
                if self.end is not None and number > self.end:
                    self.total = number
                    return
            else:
                text = decoder.decode(piece, final=ends)
                line_chars += len(text)
                if head_chars <= READ_MAX_CHARS:
                    head.append(text)
                    head_chars += len(text)
            in_line = not ends
            if ends:
                if self._wanted(number):
                    ending = len(text) - len(text.rstrip("\r\n"))  # the note counts characters before it
                    self._take(number, "".join(head), line_chars, known=True, ending=ending)
                number += 1
                head, head_chars, line_chars = [], 0, 0

    def _wanted(self, number: int) -> bool:
        return number >= self.start and (self.end is None or number <= self.end) and not self.truncated

    def _take(self, number: int, text: str, chars: int, known: bool, ending: int = 0) -> None:
        if len(self.shown) >= READ_MAX_LINES or self.chars + chars > READ_MAX_CHARS:
            if not self.shown:  # a single line longer than the whole budget
                self.shown.append(text[:READ_MAX_CHARS])
                self.last, self.long_line = number, (number, chars - ending if known else None)
            self.truncated = True
            return
        self.shown.append(text)
        self.chars += chars
        self.last = number

    def render(self, path: str) -> str:
        total, start, end = self.total, self.start, self.end
        if total == 0:
            return f"({path} is empty)"
        if start > total:
            if not self.complete:
                raise ToolError(
                    f"start_line {start} is past the first {_mib(READ_SCAN_MAX_BYTES)} of {path} "
                    f"({plural(total, 'line')}), which is as far as read_file reads"
                )
            raise ToolError(f"start_line {start} is past the end of {path} ({plural(total, 'line')})")
        text = "".join(self.shown)
        notes = []
        if self.long_line is not None:
            number, chars = self.long_line
            if chars is None:
                notes.append(
                    f"line {number} is longer than the {_mib(READ_SCAN_MAX_BYTES)} read_file reads; "
                    f"only its first {READ_MAX_CHARS} characters are shown and the rest cannot be read with read_file"
                )
            else:
                notes.append(f"line {number} has {chars} characters; only the first {READ_MAX_CHARS} are shown")
        if self.truncated and self.last < (end or total):
            of = (
                f"{total}" if self.complete else f"more than {total} (counted in the first {_mib(READ_SCAN_MAX_BYTES)})"
            )
            notes.append(
                f"truncated: showing lines {start}-{self.last} of {of}; read the rest with start_line={self.last + 1}"
            )
        if notes:
            text += ("" if text.endswith("\n") else "\n") + "".join(f"[{n}]\n" for n in notes)
        return text


class ListDirectoryArgs(_Args):
    path: str = Field(".", description="folder relative to the workspace root")
    recursive: bool = Field(False, description="also list every subfolder")


def _entry(ws: Workspace, dir_fd: int, folder: tuple[str, ...], name: str) -> str:
    """One listing line for the entry `name` of the open folder; stat, never open: a FIFO is only named."""
    parts = (*folder, name)
    shown = "/".join(parts)
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:  # gone meanwhile
        return shown
    if stat.S_ISLNK(info.st_mode):
        try:
            with ws.follow(parts) as target:
                followed = target.info
        except OutsideWorkspace:
            return f"{shown} (link to outside the workspace)"
        except (ToolError, OSError):  # a loop, or a folder on the way is missing
            followed = None
        if followed is None:
            return f"{shown} (broken link)"
        info = followed
    mode = info.st_mode
    kind = _special_kind(mode)
    if kind:
        return f"{shown} ({kind[2:] if kind.startswith('a ') else kind}, not a regular file)"
    return shown + "/" if stat.S_ISDIR(mode) else shown


def list_directory(ws: Workspace, args: ListDirectoryArgs) -> str:
    with ws.locate(args.path) as target:
        info = _require(args.path, target)
        if not stat.S_ISDIR(info.st_mode):
            _refuse_special(args.path, info)
            raise ToolError(f"{args.path} is a file, not a directory; use read_file or get_file_info")
        entries: list[str] = []
        count = 0
        with _open_dir(args.path, target.dir_fd, target.name) as top:
            if args.recursive:
                for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=top):
                    dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
                    folder = (*target.parts, *PurePosixPath(dirpath).parts)
                    for name in sorted([*dirnames, *filenames]):
                        count += 1
                        if len(entries) < LIST_MAX_ENTRIES:
                            entries.append(_entry(ws, dir_fd, folder, name))
                entries.sort()
            else:
                children = sorted(n for n in os.listdir(top) if n not in IGNORED_DIRS)
                count = len(children)
                entries = [_entry(ws, top, target.parts, n) for n in children[:LIST_MAX_ENTRIES]]
    if not entries:
        return f"({target.shown} is empty)"
    text = "\n".join(entries)
    if count > len(entries):
        text += f"\n[{count - len(entries)} more entries not shown; list a subfolder, or use search_files]"
    return text


class SearchFilesArgs(_Args):
    pattern: str = Field(description="regular expression to look for, line by line")
    path: str = Field(".", description="folder (or file) to search, relative to the workspace root")
    glob: Optional[str] = Field(None, description="only files whose name matches, e.g. '*.py'")


def _glob_matches(glob: str, rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    candidates = [glob, glob[3:]] if glob.startswith("**/") else [glob]
    return any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in candidates)


def compile_regex(pattern: str) -> re2._Regexp:
    """The model's pattern compiled with RE2, whose matching time is linear in the text: a
    catastrophic pattern such as `(a+)+$` cannot hang a search (Python's `re` took 9.3 s
    on one 30-character line and doubles per character). RE2 lacks backreferences and
    lookaround; a pattern that needs them is refused with a message saying so."""
    options = re2.Options()
    options.log_errors = False  # RE2 would print parse errors on stderr; the message goes back in the ToolError
    try:
        return re2.compile(pattern, options)
    except UnicodeError as exc:
        raise ToolError(f"invalid regular expression {pattern!r}: it is not valid text") from exc
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        try:
            re.compile(pattern)  # compiling never runs the pattern, so Python's parser is safe here
        except (re.error, RecursionError, OverflowError, ValueError):
            raise ToolError(f"invalid regular expression {pattern!r}: {reason}") from exc
        raise ToolError(
            f"regular expression {pattern!r} uses a feature the regex engine does not support ({reason}); "
            "the engine (RE2) runs in linear time and has no backreferences, lookahead or lookbehind, "
            "and \\z instead of \\Z; rewrite the pattern without them"
        ) from exc


@dataclass
class _Skipped:
    """Files a search passed over, said at the end of its answer."""

    large: list[str]
    special: list[str]

    def note(self) -> str:
        parts = []
        if self.large:
            parts.append(f"{plural(len(self.large), 'file')} over {SEARCH_MAX_FILE_BYTES} bytes ({_names(self.large)})")
        if self.special:
            parts.append(
                f"{plural(len(self.special), 'special file')} (FIFO, socket or device: {_names(self.special)})"
            )
        return f"\n[not searched: {'; '.join(parts)}]" if parts else ""


def _names(names: list[str], shown: int = 5) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _search_file(target: Target, regex: Any, skipped: _Skipped) -> Iterator[str]:
    """'rel:line:text' for each matching line of one file; the file is opened without
    blocking and passed over (and noted) when special or too large, silently when binary."""
    rel = target.shown
    info = _require(rel, target)
    if _special_kind(info.st_mode):
        skipped.special.append(rel)
        return
    if info.st_size > SEARCH_MAX_FILE_BYTES:
        skipped.large.append(rel)
        return
    with _open_regular(rel, target) as raw:
        if _sniff(raw):
            return
        # never more than the limit, even if the file grew after the stat
        data = raw.read(SEARCH_MAX_FILE_BYTES + 1)
    if len(data) > SEARCH_MAX_FILE_BYTES:
        skipped.large.append(rel)
        return
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        # splitlines drops the line ending, so `$` matches at the end of the line as in
        # Python's re (RE2's `$` matches only at the very end of the text)
        if regex.search(line):
            text = line if len(line) <= SEARCH_LINE_CHARS else line[:SEARCH_LINE_CHARS] + " [...]"
            yield f"{rel}:{number}:{text}"


def search_files(ws: Workspace, args: SearchFilesArgs) -> str:
    regex = compile_regex(args.pattern)
    matches: list[str] = []
    total = 0
    skipped = _Skipped([], [])
    with ws.locate(args.path) as top, ExitStack() as stack:
        info = _require(args.path, top)
        if stat.S_ISDIR(info.st_mode):
            folder = stack.enter_context(_open_dir(args.path, top.dir_fd, top.name))
            files: Iterator[Target] = _walk_files(ws, folder, top.parts)
        else:
            _refuse_special(args.path, info)
            files = iter([top])
        for target in files:
            if args.glob and not _glob_matches(args.glob, target.shown):
                continue
            for match in _search_file(target, regex, skipped):
                total += 1
                if len(matches) < SEARCH_MAX_MATCHES:
                    matches.append(match)
    where = top.shown + (f" (files matching {args.glob})" if args.glob else "")
    if not matches:
        return f"no matches for {args.pattern!r} in {where}" + skipped.note()
    text = "\n".join(matches)
    if total > len(matches):
        text += f"\n[{total - len(matches)} more matches not shown; narrow the pattern, path or glob]"
    return text + skipped.note()


class GetFileInfoArgs(_Args):
    path: str = Field(description="file or folder relative to the workspace root")


def get_file_info(ws: Workspace, args: GetFileInfoArgs) -> str:
    with ws.locate(args.path) as target:
        info = _require(args.path, target)
        is_dir = stat.S_ISDIR(info.st_mode)
        if not is_dir:
            _refuse_special(args.path, info)
        modified = datetime.fromtimestamp(info.st_mtime, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines = [f"path: {target.shown}"]
        if target.linked:
            lines.append("symlink: yes")
        if is_dir:
            with _open_dir(args.path, target.dir_fd, target.name) as fd:
                entries = sum(1 for name in os.listdir(fd) if name not in IGNORED_DIRS)
            lines += ["type: directory", f"entries: {entries}"]
        else:
            with _open_regular(args.path, target) as f:
                binary = _sniff(f)
                lines += ["type: file", f"size: {info.st_size} bytes", f"binary: {'yes' if binary else 'no'}"]
                if not binary:
                    count, complete = _count_lines(f, READ_SCAN_MAX_BYTES)
                    lines.append(
                        f"lines: {count}"
                        if complete
                        else f"lines: more than {count} in the first {_mib(READ_SCAN_MAX_BYTES)}"
                    )
    lines.append(f"modified: {modified}")
    return "\n".join(lines)


class WriteFileArgs(_Args):
    path: str = Field(description="file path relative to the workspace root")
    content: str = Field(description="the whole new content of the file")


def write_file(ws: Workspace, args: WriteFileArgs) -> str:
    _refuse_folder_path(args.path, "write_file")
    data = _encode(args.content)
    with ws.locate(args.path, make_parents=True) as target:
        _refuse_write(args.path, target)
        size = _atomic_write(target, data)
    verb = "replaced" if target.info is not None else "created"
    return f"{verb} {target.shown} ({size} bytes)"


class EditFileArgs(_Args):
    path: str = Field(description="file path relative to the workspace root")
    old_text: str = Field(description="exact text to replace; must occur exactly once")
    new_text: str = Field(description="text to put in its place")


def edit_file(ws: Workspace, args: EditFileArgs) -> str:
    _refuse_folder_path(args.path, "edit_file")
    with ws.locate(args.path) as target:
        _refuse_write(args.path, target)
        _refuse_special(args.path, _require(args.path, target))
        if not args.old_text:
            raise ToolError("old_text is empty; give the exact text to replace")
        data = _read_for_edit(args.path, target)
        new, at_line = _edited(args, data)
        _atomic_write(target, new)
    return f"edited {target.shown}: replaced 1 occurrence at line {at_line}"


def _read_for_edit(path: str, target: Target) -> bytes:
    with _open_regular(path, target) as f:
        if _sniff(f):
            raise ToolError(f"{path} is a binary file; edit_file edits text only")
        data = f.read(EDIT_MAX_BYTES + 1)  # never more than the limit, whatever fstat said
    if len(data) > EDIT_MAX_BYTES:
        raise ToolError(
            f"{path} is larger than {EDIT_MAX_BYTES} bytes, the most edit_file edits; "
            "write a smaller file with write_file, or change it with a command if you have one"
        )
    return data


def _edited(args: EditFileArgs, data: bytes) -> tuple[bytes, int]:
    """The file with old_text replaced, and the line where it was."""
    # surrogateescape keeps invalid UTF-8 bytes as they are, so bytes outside the edit are written back unchanged
    text = data.decode("utf-8", errors="surrogateescape")
    count = text.count(args.old_text)
    if count == 0:
        raise ToolError(
            f"old_text was not found in {args.path}; it must match the file exactly, "
            "including spaces and line breaks (read_file shows the current text)"
        )
    if count > 1:
        starts = [m.start() for m in re.finditer(re.escape(args.old_text), text)]
        at = ", ".join(str(text.count("\n", 0, s) + 1) for s in starts[:10])
        raise ToolError(
            f"old_text matches {count} times in {args.path} (at lines {at}); "
            "include more surrounding text so it matches exactly once"
        )
    at_line = text.count("\n", 0, text.index(args.old_text)) + 1
    try:
        new = text.replace(args.old_text, args.new_text, 1).encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError as exc:
        raise ToolError("new_text is not valid text (it holds a lone surrogate); send plain characters") from exc
    return new, at_line


TOOLS: tuple[Tool, ...] = (
    Tool(
        "read_file",
        "Read a text file. Long files are cut; read more with start_line/end_line.",
        ReadFileArgs,
        read_file,
    ),
    Tool(
        "list_directory",
        "List the files and folders in a folder (folders end with '/').",
        ListDirectoryArgs,
        list_directory,
    ),
    Tool(
        "search_files", "Search files for a regular expression; answers file:line:text.", SearchFilesArgs, search_files
    ),
    Tool(
        "get_file_info",
        "Size, line count, type and modification time of a file or folder.",
        GetFileInfoArgs,
        get_file_info,
    ),
    Tool(
        "write_file",
        "Create or overwrite a file with the given content (folders are created).",
        WriteFileArgs,
        write_file,
    ),
    Tool(
        "edit_file",
        "Replace old_text, which must occur exactly once in the file, with new_text.",
        EditFileArgs,
        edit_file,
    ),
)


def _describe_validation(tool: Tool, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "missing":
            problems.append(f"missing required argument '{field}'")
        elif err["type"] == "extra_forbidden":
            problems.append(f"unknown argument '{field}'")
        else:
            problems.append(f"'{field}': {err['msg']}")
    return f"invalid arguments for {tool.name}: {'; '.join(problems)}. Expected {tool.signature()}"


def run_tool(workspace: Workspace, call: ToolCall, tools: Sequence[Tool] = TOOLS) -> str:
    """Run one call. Raises InvalidToolCall for the model's malformed calls and ToolError
    for every other failure; the message is meant for the model."""
    if call.error:
        raise InvalidToolCall(call.error)
    tool = next((t for t in tools if t.name == call.name), None)
    if tool is None:
        names = ", ".join(t.name for t in tools)
        raise InvalidToolCall(f"unknown tool '{call.name}'; the tools are: {names}")
    args = tool.parse_arguments(call.arguments)
    try:
        return tool.fn(workspace, args)
    except OSError as exc:
        raise ToolError(f"{tool.name} failed: {exc.strerror or exc}") from exc


def call_text(call: ToolCall, width: int = 60) -> str:
    """read_file(path='README.md'), long values shortened."""
    if not call.valid and not call.arguments:
        return call.name or "(unparsed call)"
    parts = []
    for key, value in call.arguments.items():
        shown = repr(value)
        if len(shown) > width:
            shown = shown[: width - 5] + "...'"
        parts.append(f"{key}={shown}")
    return f"{call.name}({', '.join(parts)})"
