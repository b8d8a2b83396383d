"""Where in a task file's text a field is: the line a pydantic error location points at, and
the field's name in the words of the task format. Read from the text, not the parsed TOML,
which keeps no lines; a location that cannot be found gives no line, never a wrong one."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from localagent.bench.checks import CHECK_KINDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"'-]+?)\s*\]\]?\s*(#.*)?$")


def _segments(lines: list[str]) -> list[tuple[str, int, int, int]]:
    """(table name, index among same-named array tables, first line, last line), 0-based."""
    segments: list[tuple[str, int, int, int]] = []
    counts: dict[str, int] = {}
    name, index, start = "", 0, 0
    for n, line in enumerate(lines):
        m = _HEADER.match(line)
        if not m:
            continue
        segments.append((name, index, start, n - 1))
        name = m.group(2).strip("\"'")
        index = counts.get(name, 0) if m.group(1) == "[[" else 0
        counts[name] = index + 1
        start = n
    segments.append((name, index, start, len(lines) - 1))
    return segments


def _key_line(lines: list[str], first: int, last: int, key: str) -> int | None:
    pattern = re.compile(rf"^\s*(\"{re.escape(key)}\"|'{re.escape(key)}'|{re.escape(key)})\s*=")
    for n in range(first, last + 1):
        if pattern.match(lines[n]):
            return n
    return None


def line_of(text: str, loc: Sequence[str | int]) -> int | None:
    """The 1-based line of the value at pydantic location `loc` in a task file, if found."""
    lines = text.splitlines()
    segments = _segments(lines)
    parts = [p for p in loc if not (isinstance(p, str) and p in CHECK_KINDS)]
    if not parts:
        return None
    head = parts[0]
    if head in ("checks", "solution") and len(parts) > 1 and isinstance(parts[1], int):
        for name, index, first, last in segments:
            if name == head and index == parts[1]:
                if len(parts) > 2 and isinstance(parts[2], str):
                    found = _key_line(lines, first, last, parts[2])
                    if found is not None:
                        return found + 1
                return first + 1
    if head == "files" and len(parts) > 1 and isinstance(parts[1], str):
        for name, _, first, last in segments:
            if name == "files":
                found = _key_line(lines, first, last, parts[1])
                return (found if found is not None else first) + 1
    for name, _, first, _last in segments:
        if name == head:
            return first + 1
    _, _, first, last = segments[0]
    found = _key_line(lines, first, last, str(head))
    return found + 1 if found is not None else None


def field_name(loc: Sequence[str | int]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in CHECK_KINDS or part == "[key]":
            continue
        elif i == 1 and loc[0] == "files":
            # a fixture's name may be too long to be the task's error; its line still points at it
            out += f'."{part if len(part) <= 60 else part[:59] + "…"}"'
        else:
            out += f".{part}" if out else str(part)
    return out or "(task)"


def syntax_line(exc: tomllib.TOMLDecodeError) -> str:
    m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
    return f":{m.group(1)}:{m.group(2)}" if m else ""
