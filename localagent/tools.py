"""The file tools the agent calls; the workspace sandbox they run in is sandbox.py.

Tool and argument names are part of the benchmark task format (reference solutions call
them), so they never change. Every failure is a `ToolError` whose message goes back to the
model as the tool's result; `InvalidToolCall` marks the model's own mistakes (unknown tool,
arguments that do not match the schema) so the loop can count them apart.
"""

from __future__ import annotations

import codecs
import fnmatch
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Generic, Optional, TypeVar

import re2
from pydantic import BaseModel, Field, ValidationError

from localagent.errors import ToolError
from localagent.pathchoices import PathKind
from localagent.records import ToolCall, ToolSpec
from localagent.sandbox import (
    IGNORED_DIRS,
    OutsideWorkspace,
    Target,
    Workspace,
    open_dir,
    open_regular,
    refuse_special,
    refuse_write,
    require,
    require_file,
    special_kind,
    walk_files,
    write_at,
)
from localagent.strict import Strict

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


class InvalidToolCall(ToolError):
    """The model's call itself is wrong: unknown tool, malformed or mismatched arguments."""


ArgsT = TypeVar("ArgsT", bound=BaseModel)


@dataclass(frozen=True)
class Tool(Generic[ArgsT]):
    """One tool: `fn` gets the workspace and the call's arguments validated into `args_model`,
    and returns the text the model reads; it raises ToolError for every failure."""

    name: str
    description: str
    args_model: type[ArgsT]
    fn: Callable[[Workspace, ArgsT], str]

    # (argument, kind) for arguments that name a workspace path: the grammar offers only the
    # paths of that kind at each step (pathchoices.py); a tool without any is never narrowed
    paths: tuple[tuple[str, PathKind], ...] = ()

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, flat_schema(self.args_model))

    def parse_arguments(self, arguments: Any) -> ArgsT:
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


def _sniff(f: BinaryIO) -> bool:
    """Whether the open file looks binary; leaves it at its start."""
    binary = _is_binary(f.read(BINARY_SNIFF_BYTES))
    f.seek(0)
    return binary


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


class ReadFileArgs(Strict):
    path: str = Field(description="file path relative to the workspace root")
    start_line: Optional[int] = Field(None, ge=1, description="first line to read (1-based)")
    end_line: Optional[int] = Field(None, ge=1, description="last line to read (inclusive)")


def read_file(ws: Workspace, args: ReadFileArgs) -> str:
    with ws.locate(args.path) as target:
        require_file(args.path, target)
        start = args.start_line or 1
        end = args.end_line
        if end is not None and end < start:
            raise ToolError(f"end_line ({end}) is before start_line ({start})")
        with open_regular(args.path, target) as f:
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


class ListDirectoryArgs(Strict):
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
    kind = special_kind(mode)
    if kind:
        return f"{shown} ({kind[2:] if kind.startswith('a ') else kind}, not a regular file)"
    return shown + "/" if stat.S_ISDIR(mode) else shown


def list_directory(ws: Workspace, args: ListDirectoryArgs) -> str:
    with ws.locate(args.path) as target:
        info = require(args.path, target)
        if not stat.S_ISDIR(info.st_mode):
            refuse_special(args.path, info)
            raise ToolError(f"{args.path} is a file, not a directory; use read_file or get_file_info")
        entries: list[str] = []
        count = 0
        with open_dir(args.path, target.dir_fd, target.name) as top:
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


class SearchFilesArgs(Strict):
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
    info = require(rel, target)
    if special_kind(info.st_mode):
        skipped.special.append(rel)
        return
    if info.st_size > SEARCH_MAX_FILE_BYTES:
        skipped.large.append(rel)
        return
    with open_regular(rel, target) as raw:
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
        info = require(args.path, top)
        if stat.S_ISDIR(info.st_mode):
            folder = stack.enter_context(open_dir(args.path, top.dir_fd, top.name))
            files: Iterator[Target] = walk_files(ws, folder, top.parts)
        else:
            refuse_special(args.path, info)
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


class GetFileInfoArgs(Strict):
    path: str = Field(description="file or folder relative to the workspace root")


def get_file_info(ws: Workspace, args: GetFileInfoArgs) -> str:
    with ws.locate(args.path) as target:
        info = require(args.path, target)
        is_dir = stat.S_ISDIR(info.st_mode)
        if not is_dir:
            refuse_special(args.path, info)
        modified = datetime.fromtimestamp(info.st_mtime, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines = [f"path: {target.shown}"]
        if target.linked:
            lines.append("symlink: yes")
        if is_dir:
            with open_dir(args.path, target.dir_fd, target.name) as fd:
                entries = sum(1 for name in os.listdir(fd) if name not in IGNORED_DIRS)
            lines += ["type: directory", f"entries: {entries}"]
        else:
            with open_regular(args.path, target) as f:
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


class WriteFileArgs(Strict):
    path: str = Field(description="file path relative to the workspace root")
    content: str = Field(description="the whole new content of the file")


def write_file(ws: Workspace, args: WriteFileArgs) -> str:
    _refuse_folder_path(args.path, "write_file")
    data = _encode(args.content)
    with ws.locate(args.path, make_parents=True) as target:
        refuse_write(args.path, target)
        size = write_at(target, data)
    verb = "replaced" if target.info is not None else "created"
    return f"{verb} {target.shown} ({size} bytes)"


class EditFileArgs(Strict):
    path: str = Field(description="file path relative to the workspace root")
    old_text: str = Field(description="exact text to replace; must occur exactly once")
    new_text: str = Field(description="text to put in its place")


def edit_file(ws: Workspace, args: EditFileArgs) -> str:
    _refuse_folder_path(args.path, "edit_file")
    with ws.locate(args.path) as target:
        refuse_write(args.path, target)
        refuse_special(args.path, require(args.path, target))
        if not args.old_text:
            raise ToolError("old_text is empty; give the exact text to replace")
        data = _read_for_edit(args.path, target)
        new, at_line = _edited(args, data)
        write_at(target, new)
    return f"edited {target.shown}: replaced 1 occurrence at line {at_line}"


def _read_for_edit(path: str, target: Target) -> bytes:
    with open_regular(path, target) as f:
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


# not annotated as tuple[Tool[Any], ...]: inferred, each tool's fn is checked against its args_model
TOOLS = (
    Tool(
        "read_file",
        "Read a text file. Long files are cut; read more with start_line/end_line.",
        ReadFileArgs,
        read_file,
        paths=(("path", "file"),),
    ),
    Tool(
        "list_directory",
        "List the files and folders in a folder (folders end with '/').",
        ListDirectoryArgs,
        list_directory,
        paths=(("path", "folder"),),
    ),
    Tool(
        "search_files",
        "Search files for a regular expression; answers file:line:text.",
        SearchFilesArgs,
        search_files,
        paths=(("path", "entry"),),
    ),
    Tool(
        "get_file_info",
        "Size, line count, type and modification time of a file or folder.",
        GetFileInfoArgs,
        get_file_info,
        paths=(("path", "entry"),),
    ),
    Tool(
        "write_file",
        "Create or overwrite a file with the given content (folders are created).",
        WriteFileArgs,
        write_file,
        paths=(("path", "new"),),
    ),
    Tool(
        "edit_file",
        "Replace old_text, which must occur exactly once in the file, with new_text.",
        EditFileArgs,
        edit_file,
        paths=(("path", "file"),),
    ),
)


def _describe_validation(tool: Tool[Any], exc: ValidationError) -> str:
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


def run_tool(workspace: Workspace, call: ToolCall, tools: Sequence[Tool[Any]] = TOOLS) -> str:
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
