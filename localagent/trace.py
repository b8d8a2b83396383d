"""A run's trace: JSONL, a header line then one record per step, each written and flushed
as the step completes, so a crashed or interrupted run still leaves everything before it."""

from __future__ import annotations

import json
import os
import stat
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

from localagent.errors import ConfigError
from localagent.records import Step, ToolStep, as_dict, safe_data, safe_text

TRACE_VERSION = 1


def step_record(step: Step) -> dict[str, Any]:
    """A step as trace data; tool steps also carry the result's size."""
    record = as_dict(step)
    if isinstance(step, ToolStep):
        record["result_chars"] = len(step.result)
    return record


def trace_error(path: Path, exc: OSError) -> ConfigError:
    """A trace file that cannot be opened or written, said for the user."""
    return ConfigError(
        f"cannot write the trace file {path}: {exc.strerror or exc}",
        hint="pass --trace a file on a disk with room that you can write, or leave --trace out",
    )


class TraceWriter:
    """Writes the header when entered. With header=None, `start(header)` writes it later, so
    a caller can open the file (and fail on a path it cannot write) before it knows the
    header, e.g. before a model loads; the file is emptied only then, so a run that fails
    before its header leaves an earlier trace there as it was. Write errors are OSErrors:
    the caller says whose failure they are (the CLI's, the bench's run folder)."""

    def __init__(self, path: Path, header: dict[str, Any] | None = None):
        self.path = Path(path)
        self.header = None if header is None else self._header(header)
        self._file: IO[str] | None = None

    @staticmethod
    def _header(header: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "header", "trace_version": TRACE_VERSION, **header}

    def __enter__(self) -> TraceWriter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w" if self.header is not None else "a", encoding="utf-8")
        except OSError as exc:
            raise trace_error(self.path, exc) from exc
        if self.header is not None:
            self._append(self.header)
        return self

    def start(self, header: dict[str, Any]) -> None:
        """Write the header of a writer made without one."""
        if self._file is not None and stat.S_ISREG(os.fstat(self._file.fileno()).st_mode):
            self._file.truncate(0)  # opened to append, so writing goes on from the new end
        self.header = self._header(header)
        self._append(self.header)

    def write(self, step: Step) -> None:
        self._append(step_record(step))

    def _append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError("TraceWriter used outside its `with` block")
        # strings that are not valid text (a model's "\ud800", a file name or workspace path
        # that is not UTF-8) are written escaped: the file stays UTF-8 and every reader can read it
        line = json.dumps(safe_data(record), ensure_ascii=False, default=lambda o: safe_text(str(o)))
        self._file.write(line + "\n")
        self._file.flush()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._file is None:
            return
        file, self._file = self._file, None
        if exc_type is None:
            file.close()
            return
        # the block failed, perhaps on a write: closing flushes the same unwritten bytes and
        # fails again, which must not replace the error that ended the block
        with suppress(OSError):
            file.close()
