"""A suite of one task for bench tests that need tasks of their own: copy a.txt to b.txt
(tier 1), which the oracle passes (its solution writes b.txt) and noop fails."""

from __future__ import annotations

from pathlib import Path

_COPY = """
id = "{task_id}"
title = "{title}"
tier = 1
{header}
prompt = "Copy a.txt to b.txt."

[files]
"a.txt" = "hello"

[[checks]]
kind = "file_equals"
path = "b.txt"
text = "hello"

{read}[[solution]]
tool = "write_file"
arguments = {{ path = "b.txt", content = "hello" }}
[[solution]]
answer = "{answer}"
"""
_READ = """[[solution]]
tool = "read_file"
arguments = { path = "a.txt" }
"""


def copy_suite(
    folder: Path, task_id: str, title: str, *, header: str = "", read_first: bool = False, answer: str = "Copied."
) -> Path:
    """`folder` (made if missing) with the copy task as `<task_id>.toml`, written again when
    there: `header`, more top-level lines (tags, max_steps); `read_first`, the solution reads
    a.txt before it writes b.txt; `answer`, its final answer."""
    folder.mkdir(exist_ok=True)
    text = _COPY.format(task_id=task_id, title=title, header=header, read=_READ if read_first else "", answer=answer)
    (folder / f"{task_id}.toml").write_text(text)
    return folder
