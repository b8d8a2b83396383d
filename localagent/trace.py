"""A run's trace: JSONL, a header line then one record per step, each written and flushed
as the step completes, so a crashed or interrupted run still leaves everything before it."""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from localagent.errors import ConfigError
from localagent.records import Step, ToolStep, as_dict

TRACE_VERSION = 1


def step_record(step: Step) -> dict[str, Any]:
    """A step as trace data; tool steps also carry the result's size."""
    record = as_dict(step)
    if isinstance(step, ToolStep):
        record["result_chars"] = len(step.result)
    return record


class TraceWriter:
    def __init__(self, path: Path, header: dict[str, Any]):
        self.path = Path(path)
        self.header = {"kind": "header", "trace_version": TRACE_VERSION, **header}
        self._file: IO[str] | None = None

    def __enter__(self) -> TraceWriter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write the trace file {self.path}: {exc.strerror}") from exc
        self._append(self.header)
        return self

    def write(self, step: Step) -> None:
        self._append(step_record(step))

    def _append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError("TraceWriter used outside its `with` block")
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
