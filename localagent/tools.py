"""The file tools the agent calls, and the workspace sandbox they run in.

Tool and argument names are part of the benchmark task format (reference solutions call
them), so they never change. Every failure is a `ToolError` whose message goes back to the
model as the tool's result; `InvalidToolCall` marks the model's own mistakes (unknown tool,
arguments that do not match the schema) so the loop can count them apart.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import stat
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localagent.errors import ConfigError, ToolError
from localagent.records import ToolCall, ToolSpec

# Limits sized for small local models: a 4k-8k context must survive one tool result.
READ_MAX_LINES = 400
READ_MAX_CHARS = 12_000
LIST_MAX_ENTRIES = 300
SEARCH_MAX_MATCHES = 100
SEARCH_LINE_CHARS = 200
SEARCH_MAX_FILE_BYTES = 5_000_000
BINARY_SNIFF_BYTES = 8192
IGNORED_DIRS = frozenset({".git"})


class InvalidToolCall(ToolError):
    """The model's call itself is wrong: unknown tool, malformed or mismatched arguments."""


class Workspace:
    """The folder the tools may touch. Every path is resolved (symlinks included) and must
    land inside the root; anything else is refused."""

    def __init__(self, root: Path | str):
        path = Path(root).expanduser()
        if not path.is_dir():
            raise ConfigError(f"workspace {path} is not a directory", hint="pass an existing folder with --workspace")
        self.root = path.resolve()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def resolve(self, path: str) -> Path:
        """The real path for `path` (relative to the root, or absolute inside it)."""
        if not path or not path.strip():
            raise ToolError("path is empty; use '.' for the workspace root")
        if "\0" in path:
            raise ToolError("path contains a NUL character")
        candidate = Path(path).expanduser() if path.startswith("~") else Path(path)
        # realpath follows every symlink, including a dangling last component and the
        # parents of a file that does not exist yet, so write targets are checked too
        real = Path(os.path.realpath(self.root / candidate))
        if real != self.root and self.root not in real.parents:
            if candidate.is_absolute():
                hint = f"use a path relative to the workspace root, e.g. '{candidate.name or '.'}'"
            else:
                hint = "paths must stay inside the workspace root"
            raise ToolError(f"{path} is outside the workspace; {hint}")
        return real

    def relative(self, real: Path) -> str:
        """How a resolved path is shown to the model: relative to the root, '/' separators."""
        rel = real.relative_to(self.root).as_posix()
        return rel if rel else "."

    def contains(self, path: Path) -> bool:
        real = Path(os.path.realpath(path))
        return real == self.root or self.root in real.parents


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


def _sniff_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return _is_binary(f.read(BINARY_SNIFF_BYTES))


def _missing(ws: Workspace, path: str, real: Path) -> ToolError:
    """'X does not exist', with close names from the nearest existing folder."""
    parent = real.parent
    while not parent.is_dir() and parent != ws.root:
        parent = parent.parent
    names = []
    if ws.contains(parent):
        names = sorted(p.name for p in parent.iterdir() if p.name not in IGNORED_DIRS)
    close = difflib.get_close_matches(real.name, names, n=3, cutoff=0.6)
    if close:
        prefix = "" if parent == ws.root else ws.relative(parent) + "/"
        suggestion = " or ".join(f"'{prefix}{c}'" for c in close)
        return ToolError(f"{path} does not exist; did you mean {suggestion}?")
    return ToolError(f"{path} does not exist (list_directory shows what is there)")


def _existing_file(ws: Workspace, path: str) -> Path:
    real = ws.resolve(path)
    if not real.exists():
        raise _missing(ws, path, real)
    if real.is_dir():
        raise ToolError(f"{path} is a directory, not a file; use list_directory")
    return real


def _in_ignored_dir(ws: Workspace, real: Path) -> bool:
    return any(part in IGNORED_DIRS for part in real.relative_to(ws.root).parts)


def _writable_target(ws: Workspace, path: str) -> Path:
    real = ws.resolve(path)
    if real == ws.root or real.is_dir():
        raise ToolError(f"{path} is a directory; give a file path")
    if _in_ignored_dir(ws, real):
        raise ToolError(f"{path} is inside .git, which the tools do not change")
    return real


def _atomic_write(path: Path, text: str) -> int:
    """Write through a temp file in the same folder and os.replace it into place, so a
    crash never leaves half a file. Keeps the mode of a file it replaces."""
    data = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(data)


def _walk_files(ws: Workspace, top: Path) -> Iterator[Path]:
    """Files under `top`, sorted, skipping .git and symlinks that leave the workspace;
    symlinked folders are not descended (no loops, no escapes)."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() and not ws.contains(path):
                continue
            if path.is_file():
                yield path


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# --- the tools ---


class ReadFileArgs(_Args):
    path: str = Field(description="file path relative to the workspace root")
    start_line: Optional[int] = Field(None, ge=1, description="first line to read (1-based)")
    end_line: Optional[int] = Field(None, ge=1, description="last line to read (inclusive)")


def read_file(ws: Workspace, args: ReadFileArgs) -> str:
    real = _existing_file(ws, args.path)
    if _sniff_binary(real):
        raise ToolError(f"{args.path} is a binary file ({real.stat().st_size} bytes); read_file reads text only")
    start = args.start_line or 1
    end = args.end_line
    if end is not None and end < start:
        raise ToolError(f"end_line ({end}) is before start_line ({start})")
    shown: list[str] = []
    chars = 0
    last = start - 1
    total = 0
    truncated = False
    long_line: int | None = None
    with open(real, encoding="utf-8", errors="replace", newline="") as f:
        for total, line in enumerate(f, 1):
            if total < start or (end is not None and total > end) or truncated:
                continue
            if len(shown) >= READ_MAX_LINES or chars + len(line) > READ_MAX_CHARS:
                if not shown:  # a single line longer than the whole budget
                    shown.append(line[:READ_MAX_CHARS])
                    last, long_line = total, len(line)
                truncated = True
                continue
            shown.append(line)
            chars += len(line)
            last = total
    if total == 0:
        return f"({args.path} is empty)"
    if start > total:
        raise ToolError(f"start_line {start} is past the end of {args.path} ({plural(total, 'line')})")
    text = "".join(shown)
    notes = []
    if long_line is not None:
        notes.append(f"line {last} has {long_line} characters; only the first {READ_MAX_CHARS} are shown")
    if truncated and last < (end or total):
        notes.append(
            f"truncated: showing lines {start}-{last} of {total}; "
            f"read the rest with start_line={last + 1}"
        )
    if notes:
        text += ("" if text.endswith("\n") else "\n") + "".join(f"[{n}]\n" for n in notes)
    return text


class ListDirectoryArgs(_Args):
    path: str = Field(".", description="folder relative to the workspace root")
    recursive: bool = Field(False, description="also list every subfolder")


def _entry(ws: Workspace, path: Path) -> str:
    shown = path.relative_to(ws.root).as_posix()
    if path.is_symlink() and not ws.contains(path):
        return f"{shown} (link to outside the workspace)"
    return shown + "/" if path.is_dir() else shown


def list_directory(ws: Workspace, args: ListDirectoryArgs) -> str:
    real = ws.resolve(args.path)
    if not real.exists():
        raise _missing(ws, args.path, real)
    if not real.is_dir():
        raise ToolError(f"{args.path} is a file, not a directory; use read_file or get_file_info")
    entries: list[str] = []
    count = 0
    if args.recursive:
        for dirpath, dirnames, filenames in os.walk(real):
            dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
            for name in sorted([*dirnames, *filenames]):
                count += 1
                if len(entries) < LIST_MAX_ENTRIES:
                    entries.append(_entry(ws, Path(dirpath) / name))
        entries.sort()
    else:
        children = sorted(p for p in real.iterdir() if p.name not in IGNORED_DIRS)
        count = len(children)
        entries = [_entry(ws, p) for p in children[:LIST_MAX_ENTRIES]]
    if not entries:
        return f"({ws.relative(real)} is empty)"
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


def search_files(ws: Workspace, args: SearchFilesArgs) -> str:
    try:
        regex = re.compile(args.pattern)
    except re.error as exc:
        raise ToolError(f"invalid regular expression {args.pattern!r}: {exc}") from exc
    real = ws.resolve(args.path)
    if not real.exists():
        raise _missing(ws, args.path, real)
    files = [real] if real.is_file() else _walk_files(ws, real)
    matches: list[str] = []
    total = 0
    for path in files:
        rel = ws.relative(Path(os.path.realpath(path))) if path.is_symlink() else ws.relative(path)
        if args.glob and not _glob_matches(args.glob, rel):
            continue
        if path.stat().st_size > SEARCH_MAX_FILE_BYTES or _sniff_binary(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if regex.search(line):
                    total += 1
                    if len(matches) < SEARCH_MAX_MATCHES:
                        text = line.rstrip("\r\n")
                        if len(text) > SEARCH_LINE_CHARS:
                            text = text[:SEARCH_LINE_CHARS] + " [...]"
                        matches.append(f"{rel}:{number}:{text}")
    where = ws.relative(real) + (f" (files matching {args.glob})" if args.glob else "")
    if not matches:
        return f"no matches for {args.pattern!r} in {where}"
    text = "\n".join(matches)
    if total > len(matches):
        text += f"\n[{total - len(matches)} more matches not shown; narrow the pattern, path or glob]"
    return text


class GetFileInfoArgs(_Args):
    path: str = Field(description="file or folder relative to the workspace root")


def get_file_info(ws: Workspace, args: GetFileInfoArgs) -> str:
    real = ws.resolve(args.path)
    if not real.exists():
        raise _missing(ws, args.path, real)
    info = real.stat()
    modified = datetime.fromtimestamp(info.st_mtime, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [f"path: {ws.relative(real)}"]
    if (ws.root / args.path).is_symlink():
        lines.append("symlink: yes")
    if real.is_dir():
        entries = sum(1 for p in real.iterdir() if p.name not in IGNORED_DIRS)
        lines += ["type: directory", f"entries: {entries}"]
    else:
        binary = _sniff_binary(real)
        lines += ["type: file", f"size: {info.st_size} bytes", f"binary: {'yes' if binary else 'no'}"]
        if not binary:
            lines.append(f"lines: {_count_lines(real)}")
    lines.append(f"modified: {modified}")
    return "\n".join(lines)


class WriteFileArgs(_Args):
    path: str = Field(description="file path relative to the workspace root")
    content: str = Field(description="the whole new content of the file")


def write_file(ws: Workspace, args: WriteFileArgs) -> str:
    real = _writable_target(ws, args.path)
    existed = real.exists()
    size = _atomic_write(real, args.content)
    verb = "replaced" if existed else "created"
    return f"{verb} {ws.relative(real)} ({size} bytes)"


class EditFileArgs(_Args):
    path: str = Field(description="file path relative to the workspace root")
    old_text: str = Field(description="exact text to replace; must occur exactly once")
    new_text: str = Field(description="text to put in its place")


def edit_file(ws: Workspace, args: EditFileArgs) -> str:
    real = _writable_target(ws, args.path)
    if not real.exists():
        raise _missing(ws, args.path, real)
    if _sniff_binary(real):
        raise ToolError(f"{args.path} is a binary file; edit_file edits text only")
    if not args.old_text:
        raise ToolError("old_text is empty; give the exact text to replace")
    with open(real, encoding="utf-8", errors="replace", newline="") as f:
        text = f.read()
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
    _atomic_write(real, text.replace(args.old_text, args.new_text, 1))
    return f"edited {ws.relative(real)}: replaced 1 occurrence at line {at_line}"


TOOLS: tuple[Tool, ...] = (
    Tool("read_file", "Read a text file. Long files are cut; read more with start_line/end_line.", ReadFileArgs, read_file),
    Tool("list_directory", "List the files and folders in a folder (folders end with '/').", ListDirectoryArgs, list_directory),
    Tool("search_files", "Search files for a regular expression; answers file:line:text.", SearchFilesArgs, search_files),
    Tool("get_file_info", "Size, line count, type and modification time of a file or folder.", GetFileInfoArgs, get_file_info),
    Tool("write_file", "Create or overwrite a file with the given content (folders are created).", WriteFileArgs, write_file),
    Tool("edit_file", "Replace old_text, which must occur exactly once in the file, with new_text.", EditFileArgs, edit_file),
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
