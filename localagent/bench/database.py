"""The results database in $LOCALAGENT_HOME: every run's trials, accumulated into a model x
task capability map that reports and baselines are read from. The run folders stay the
source of truth; the database is what a query asks, and --resume puts a folder's trials back
in it. Its schema is in `migrations`."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from localagent import settings
from localagent.bench.migrations import MIGRATIONS, migration_name
from localagent.bench.results_errors import write_error
from localagent.bench.schema import RunInfo, TrialResult
from localagent.errors import ResultsError, ResultsWriteError
from localagent.units import utc_now

# how long a database statement waits for another process's lock before it gives up: the
# transactions of a bench or an import last milliseconds, so a lock held longer is a program
# holding the database open in a transaction (a sqlite3 shell, a stuck process), not a queue
BUSY_TIMEOUT_S = 5.0


class _RollBack(Exception):
    """Ends a transaction with a rollback and no error (ResultsDB.check_writable)."""


@dataclass(frozen=True)
class StoredRun:
    """A run as the database holds it."""

    info: RunInfo
    run_dir: Path | None  # where its traces are on this machine; None for imported JSON


class ResultsDB:
    """The results database (settings.database() by default), migrated on open."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else settings.database()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        with self._sqlite_errors("open"):
            # autocommit; transactions are explicit, so DDL in migrations is transactional too
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            self.migrate()
        except BaseException:
            self.db.close()
            raise

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def applied_migrations(self) -> list[str]:
        return [row[0] for row in self._rows("SELECT name FROM schema_migrations ORDER BY rowid")]

    def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded, each in its own transaction; returns their
        names. A second process waits on the lock and then finds nothing left to do."""
        with self._sqlite_errors("open"):
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
        applied = []
        for fn in MIGRATIONS:
            name = migration_name(fn)
            with self._transaction():
                if self.db.execute("SELECT 1 FROM schema_migrations WHERE name = ?", (name,)).fetchone():
                    continue
                fn(self.db)
                self.db.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", (name, utc_now()))
                applied.append(name)
        return applied

    def check_writable(self) -> None:
        """Fail now, before a bench makes its run folder, when the database cannot be written
        (read-only, its folder read-only, its disk full): a write rolled back. BEGIN alone
        succeeds on a read-only file; only a changed page needs the file and its journal."""
        with self._transaction():
            self.db.execute("INSERT INTO schema_migrations (name, applied_at) VALUES ('write check', '')")
            raise _RollBack

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._sqlite_errors("write"):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException as exc:
                # the first error is the one to report: one from the rollback (the transaction
                # may already be gone with a failed write) would only hide it
                with suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                if isinstance(exc, _RollBack):
                    return
                raise
            self.db.execute("COMMIT")

    def _rows(self, sql: str, params: Iterable[object] = ()) -> list[tuple]:
        with self._sqlite_errors():
            return self.db.execute(sql, tuple(params)).fetchall()

    @contextmanager
    def _sqlite_errors(self, doing: str = "read") -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(exc, doing) from exc

    def _error(self, exc: sqlite3.Error, doing: str) -> ResultsError:
        """An SQLite error as something the user can act on, naming the database file. The
        file itself is never deleted or rewritten to get past an error."""
        name = getattr(exc, "sqlite_errorname", "")  # Python >= 3.11; before, the message alone
        where = f"the results database {self.path}"
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            if not os.access(self.path.parent, os.W_OK):
                # SQLite cannot create its journal beside the database, and calls that "locked"
                return ResultsWriteError(
                    f"cannot write {where}: its folder is read-only", hint=f"make {self.path.parent} writable"
                )
            return ResultsError(
                f"{where} is locked: another process has held it for over {BUSY_TIMEOUT_S:g} s",
                hint="let that program (another localagent, a sqlite3 shell) finish or close the database, then run this again",
            )
        if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
            return ResultsError(
                f"{where} is damaged ({exc}); it is left as it is",
                hint=f"move it aside (mv {self.path} {self.path}.damaged): the next command makes a new one, and"
                " `localagent bench --resume RUN` puts a run folder's trials back in it",
            )
        if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
            return ResultsWriteError(
                f"cannot write {where}: {exc}",
                hint=f"make {self.path} and its folder writable, or set LOCALAGENT_HOME to a folder you can write",
            )
        if name.startswith("SQLITE_CANTOPEN"):
            return ResultsWriteError(
                f"cannot {doing} {where}: {exc}",
                hint=f"{self.path.parent} must be a folder you can write, and {self.path.name} a file in it",
            )
        if name.startswith(("SQLITE_FULL", "SQLITE_IOERR")):
            return ResultsWriteError(
                f"cannot write {where}: {exc}",
                hint="free some space on its disk, or lift a file size limit (`ulimit -f`)",
            )
        return ResultsError(f"cannot {doing} {where}: {exc}")

    # --- writing ---

    def save_run(self, info: RunInfo, run_dir: Path | None = None) -> None:
        """Insert or update a run (a resumed or finished run rewrites its record). An existing
        run_dir is kept when none is given (an import does not know one)."""
        with self._transaction():
            self._save_run(info, run_dir)

    def add_trial(self, trial: TrialResult) -> bool:
        """Insert one trial; False when (run, model, task, trial) is already stored."""
        with self._transaction():
            return self._add_trial(trial)

    def add_all(self, runs: Iterable[tuple[RunInfo, Path | None]], trials: Iterable[TrialResult]) -> int:
        """Runs and trials in one transaction (an import: all or nothing); the number of
        trials added."""
        with self._transaction():
            for info, run_dir in runs:
                self._save_run(info, run_dir)
            return sum(self._add_trial(t) for t in trials)

    def _save_run(self, info: RunInfo, run_dir: Path | None) -> None:
        self.db.execute(
            """INSERT INTO runs (run_id, started_at, finished_at, localagent_version, run_dir, info)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (run_id) DO UPDATE SET
                finished_at = excluded.finished_at,
                run_dir = COALESCE(excluded.run_dir, runs.run_dir),
                info = excluded.info""",
            (
                info.run_id,
                info.started_at,
                info.finished_at,
                info.localagent_version,
                str(run_dir.resolve()) if run_dir is not None else None,
                info.model_dump_json(),
            ),
        )

    def _add_trial(self, trial: TrialResult) -> bool:
        cursor = self.db.execute(
            """INSERT OR IGNORE INTO trials (run_id, model, model_kind, task_id, task_sha256, tier, trial,
                success, failure_mode, finished_at, wall_s, cost_usd, input_tokens, output_tokens, record)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                trial.run_id,
                trial.model,
                trial.model_kind,
                trial.task_id,
                trial.task_sha256,
                trial.tier,
                trial.trial,
                int(trial.success),
                trial.failure_mode,
                trial.finished_at,
                trial.wall_s,
                trial.cost_usd,
                trial.input_tokens,
                trial.output_tokens,
                trial.model_dump_json(),
            ),
        )
        return cursor.rowcount == 1

    # --- reading ---

    def runs(self) -> list[StoredRun]:
        """Every run, oldest first."""
        rows = self._rows("SELECT info, run_dir FROM runs ORDER BY started_at, run_id")
        return [_stored_run(info, run_dir) for info, run_dir in rows]

    def run(self, run_id: str) -> StoredRun | None:
        rows = self._rows("SELECT info, run_dir FROM runs WHERE run_id = ?", (run_id,))
        return _stored_run(*rows[0]) if rows else None

    def latest_run(self) -> StoredRun | None:
        rows = self._rows("SELECT info, run_dir FROM runs ORDER BY started_at DESC, run_id DESC LIMIT 1")
        return _stored_run(*rows[0]) if rows else None

    def trials(self, run_id: str | None = None, model: str | None = None) -> list[TrialResult]:
        """Stored trials, optionally of one run and/or one model, in run then task order."""
        sql = "SELECT t.record FROM trials t JOIN runs r ON r.run_id = t.run_id WHERE 1=1"
        params: list[str] = []
        if run_id is not None:
            sql += " AND t.run_id = ?"
            params.append(run_id)
        if model is not None:
            sql += " AND t.model = ?"
            params.append(model)
        sql += " ORDER BY r.started_at, t.run_id, t.model, t.tier, t.task_id, t.trial"
        return [TrialResult.model_validate_json(row[0]) for row in self._rows(sql, params)]

    def latest_results(self, model: str, task_sha256s: Iterable[str]) -> list[TrialResult]:
        """For each task version, the trials of `model` from the latest run that ran it: what
        a bench compares against when that model cannot be run now."""
        wanted = json.dumps(sorted(set(task_sha256s)))
        rows = self._rows(
            """SELECT t.task_sha256, r.started_at, t.run_id, t.record
            FROM trials t JOIN runs r ON r.run_id = t.run_id
            WHERE t.model = ? AND t.task_sha256 IN (SELECT value FROM json_each(?))
            ORDER BY t.task_id, t.trial""",
            (model, wanted),
        )
        latest: dict[str, tuple[str, str]] = {}
        for sha, started, run_id, _ in rows:
            latest[sha] = max(latest.get(sha, ("", "")), (started, run_id))
        return [
            TrialResult.model_validate_json(record)
            for sha, started, run_id, record in rows
            if latest[sha] == (started, run_id)
        ]


def _stored_run(info: str, run_dir: str | None) -> StoredRun:
    return StoredRun(RunInfo.model_validate_json(info), Path(run_dir) if run_dir else None)
