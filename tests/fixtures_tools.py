"""Tool specs for the engine tests. READ, WRITE and LIST: the real tools' shapes, for a real
model (the bundled SmolLM2) and for prompts that only render. The rest, for random-weight
models (test_guided, test_native_lazy): the same shapes with their strings bounded, so that
random weights can end a call within the budget (an unbounded string from noise runs to
max_tokens, well-formed or not)."""

from __future__ import annotations

from typing import Any

from localagent.records import ToolSpec

READ = ToolSpec(
    "read_file",
    "Read a text file in the workspace.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)
WRITE = ToolSpec(
    "write_file",
    "Write a text file in the workspace.",
    {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
    },
)
LIST = ToolSpec(
    "list_directory",
    "List the files in a directory.",
    {"type": "object", "properties": {"path": {"type": "string"}, "recursive": {"type": "boolean"}}},
)


def bounded_edit(*, with_tags: bool = False) -> ToolSpec:
    """edit_file with a bounded path, an enum, a bounded integer and a boolean; `with_tags`
    adds an array of bounded strings."""
    properties: dict[str, Any] = {
        "path": {"type": "string", "maxLength": 12},
        "mode": {"enum": ["append", "replace"]},
        "line": {"type": "integer", "minimum": 1, "maximum": 999},
        "dry_run": {"type": "boolean"},
    }
    if with_tags:
        properties["tags"] = {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2}
    return ToolSpec(
        "edit_file", "Edit a file.", {"type": "object", "properties": properties, "required": ["path", "mode"]}
    )


NOTHING = ToolSpec("get_time", "The current time.", {"type": "object", "properties": {}})
SHORT_READ = ToolSpec(
    "read_file",
    "Read a text file.",
    {"type": "object", "properties": {"path": {"type": "string", "maxLength": 8}}, "required": ["path"]},
)
