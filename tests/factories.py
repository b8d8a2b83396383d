"""Stored bench records for tests: one factory each, so a new required field of the schema is
added here once rather than in every test file that builds records by hand.

Every factory returns a record that validates; keyword arguments replace the defaults.
"""

from __future__ import annotations

from typing import Any

from localagent.bench.schema import HostInfo, RunInfo, TrialResult

HOST = HostInfo(
    cpu="Test CPU", physical_cores=4, logical_cores=8, ram_bytes=16 * 2**30, gpu="none", os="Linux", python="3.11.0"
)


def make_run_info(**fields: Any) -> RunInfo:
    values: dict[str, Any] = {
        "run_id": "run-1",
        "started_at": "2026-11-20T10:00:00+00:00",
        "localagent_version": "0.1.0",
        "host": HOST,
        "models": ["oracle"],
        "tasks_dir": "/tasks",
        "task_ids": ["read-version"],
        "trials": 1,
        "tool_mode": "auto",
        "temperature": 0.0,
        "path_constraints": True,  # as the runner writes it now (older runs lack it: False)
        "price_table": "models.toml (no hosted prices used)",
    }
    values.update(fields)
    return RunInfo(**values)


def make_trial(**fields: Any) -> TrialResult:
    """A trial of the oracle on read-version unless `fields` say otherwise. The seed follows
    `trial`, and a failed trial (success=False) without a failure_mode is a wrong answer, as
    the runner would have written them."""
    values: dict[str, Any] = {
        "run_id": "run-1",
        "model": "oracle",
        "model_kind": "pseudo",
        "task_id": "read-version",
        "task_sha256": "sha-read-version",
        "tier": 1,
        "trial": 0,
        "temperature": 0.0,
        "finished_at": "2026-11-20T10:01:00+00:00",
        "success": True,
        "stop_reason": "answer",
        "steps": 2,
        "tool_calls": 1,
        "invalid_tool_calls": 0,
        "input_tokens": 800,
        "cached_input_tokens": 600,
        "output_tokens": 40,
        "prompt_tokens_evaluated": 200,
        "wall_s": 1.5,
        "model_s": 1.4,
        "tool_s": 0.01,
    }
    values.update(fields)
    values.setdefault("seed", values["trial"])
    if not values["success"]:
        values.setdefault("failure_mode", "wrong_answer")
    values.setdefault("trace_path", f"traces/{values['model']}/{values['task_id']}-{values['trial']}.jsonl")
    return TrialResult(**values)
