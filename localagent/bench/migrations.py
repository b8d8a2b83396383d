"""The results database's schema, as an ordered list of small migrations. Each is applied
once, in its own transaction, and recorded by name in schema_migrations (ResultsDB.migrate),
so a database made by any earlier localagent moves forward to this one's schema. A new
migration goes at the end of MIGRATIONS; one already released is never edited."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


def _m001_runs_and_trials(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            localagent_version TEXT NOT NULL,
            run_dir TEXT,
            info TEXT NOT NULL
        )"""
    )
    # the columns a capability map is queried by; `record` keeps the whole TrialResult
    db.execute(
        """CREATE TABLE trials (
            run_id TEXT NOT NULL REFERENCES runs(run_id),
            model TEXT NOT NULL,
            model_kind TEXT NOT NULL,
            task_id TEXT NOT NULL,
            task_sha256 TEXT NOT NULL,
            tier INTEGER NOT NULL,
            trial INTEGER NOT NULL,
            success INTEGER NOT NULL,
            failure_mode TEXT,
            finished_at TEXT NOT NULL,
            wall_s REAL NOT NULL,
            cost_usd REAL NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            record TEXT NOT NULL,
            PRIMARY KEY (run_id, model, task_id, trial)
        )"""
    )
    db.execute("CREATE INDEX trials_by_model_task ON trials (model, task_sha256)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_runs_and_trials]


def migration_name(fn: Callable) -> str:
    """The name a migration is recorded by: its function's, without the leading underscore."""
    return fn.__name__.lstrip("_")
