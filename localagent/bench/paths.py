"""Workspace paths and globs: what task files name and checks match. A path is checked at
load, so a task that names one the file system cannot hold fails there, with its line,
instead of in every trial; a glob is compiled to RE2, whose time is linear in the path."""

from __future__ import annotations

import functools
import re
from typing import Any

from localagent.errors import ToolError
from localagent.tools import compile_regex

# Linux refuses a file or folder name over 255 bytes (NAME_MAX) and a path over 4096 (PATH_MAX):
# a fixture beyond either loaded, then failed every trial, the oracle's too, as a runtime error.
# The workspace's own folder takes part of PATH_MAX, so a task's paths get 3072 bytes of it.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 3072
# A glob is compiled to RE2 (linear time), but matching still costs its length times the path's:
# at 1024 characters the worst glob takes about 1 ms against a 4000-character path.
MAX_GLOB_CHARS = 1024


def relative_path(value: str) -> str:
    """A workspace-relative POSIX path naming one file or folder below the workspace: no
    absolute paths, no '..', no backslashes, no control characters, and no '.' or empty part
    ('.', 'a/', 'a//b'): a fixture named '.' is the workspace itself, and writing it failed
    every trial of the task instead of its file at load. Names and the whole path stay within
    what the file system takes."""
    if not value or value.strip() != value:
        raise ValueError("must be a non-empty path without surrounding spaces")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{value!r} holds a control character (NUL, newline, ...)")
    if "\\" in value:
        raise ValueError(f"'{value}': use '/' as the separator")
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"'{value}' must be relative to the workspace")
    parts = value.split("/")
    if ".." in parts:
        raise ValueError(f"'{value}' must stay inside the workspace (no '..')")
    if "." in parts or "" in parts:
        raise ValueError(f"'{value}' has an empty or '.' part: name a file below the workspace, like 'data/a.csv'")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_PATH_BYTES:
        raise ValueError(f"'{value[:40]}…' is {size} bytes long; a path holds at most {MAX_PATH_BYTES} bytes")
    for part in parts:
        size = len(part.encode("utf-8", "surrogatepass"))
        if size > MAX_NAME_BYTES:
            raise ValueError(
                f"the name '{part[:40]}…' is {size} bytes long; a file or folder name holds at most {MAX_NAME_BYTES} bytes"
            )
    return value


_REGEX_SPECIAL = frozenset(".^$*+?()[]{}|\\")
_CLASS_SPECIAL = frozenset("\\]^-[")


def _escaped(char: str, special: frozenset[str]) -> str:
    return "\\" + char if char in special else char


def _class_end(pattern: str, start: int) -> int | None:
    """The index of the ']' closing the class opened at `start`, as fnmatch reads it (a ']'
    right after '[' or '[!' is a member); None when it is not closed, and '[' is literal."""
    j = start + 1
    if j < len(pattern) and pattern[j] == "!":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    end = pattern.find("]", j)
    return end if end != -1 else None


def _glob_class(body: str, pattern: str) -> str:
    """The body of a glob's [...] (after any '!') as an RE2 class body, every character
    literal but the '-' of a range; a reversed range ('z-a') is refused, naming it."""
    out, i = "", 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            if low > high:
                raise ValueError(f"the glob '{pattern}' has the reversed range '{low}-{high}' (write '{high}-{low}')")
            out += _escaped(low, _CLASS_SPECIAL) + "-" + _escaped(high, _CLASS_SPECIAL)
            i += 3
        else:
            out += _escaped(body[i], _CLASS_SPECIAL)
            i += 1
    return out


@functools.lru_cache(maxsize=256)
def glob_regex(pattern: str) -> Any:
    """The glob as a compiled RE2 pattern, matched against the whole path. RE2, not Python's
    re: a glob such as '**a**a**a**a**b' backtracked for seconds on a 60-character path the
    model wrote (and a bench hung in no_extra_files); RE2's time is linear in the path.
    Raises ValueError for a glob that cannot be compiled (too long, a reversed range)."""
    if len(pattern) > MAX_GLOB_CHARS:
        raise ValueError(
            f"the glob '{pattern[:40]}…' is {len(pattern)} characters long; a glob holds at most {MAX_GLOB_CHARS}"
        )
    out, i = "(?s)", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and (end := _class_end(pattern, i)) is not None:
            negated = pattern[i + 1] == "!"
            body = _glob_class(pattern[i + 1 + negated : end], pattern)
            # a negated class stays inside one folder, as '*' and '?' do
            out, i = out + ("[^/" if negated else "[") + body + "]", end + 1
        else:
            out, i = out + _escaped(pattern[i], _REGEX_SPECIAL), i + 1
    try:
        return compile_regex(out)
    except ToolError as exc:  # not expected after the escaping above; said in the task's words
        raise ValueError(f"the glob '{pattern}' cannot be compiled: {exc}") from None


def glob_match(pattern: str, path: str) -> bool:
    """Whether a workspace-relative POSIX `path` matches `pattern`: `*` and `?` stay inside
    one folder, `**` spans folders (`data/**` is everything under data/, `**/*.py` every .py).
    A name that is not UTF-8 (surrogate escapes from the file system) is matched with its
    undecodable bytes as U+FFFD, which RE2 can read."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return glob_regex(pattern).fullmatch(text) is not None
