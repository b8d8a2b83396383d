"""Where bench results live.

A run directory holds one run: run.json (its RunInfo, rewritten atomically), results.jsonl
(one TrialResult per line, appended and fsync'd the moment a trial ends: the run's source of
truth, what --resume reads) and traces/<model>/<task>-<trial>.jsonl. The SQLite database in
$LOCALAGENT_HOME accumulates every run's trials into a model x task capability map; its schema
moves forward through an ordered list of small migrations recorded in a table.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import stat
import tarfile
import uuid
import warnings
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

from pydantic import ValidationError

from localagent import settings
from localagent.bench.schema import SCHEMA_VERSION, RunInfo, TrialResult
from localagent.errors import ResultsError, ResultsWarning, ResultsWriteError
from localagent.files import atomic_write
from localagent.units import utc_now

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked there
    fcntl = None  # type: ignore[assignment]

RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
# held (flock) by the bench running the run, and naming it: one bench per run at a time
LOCK_FILE = "bench.lock"
TRACES_DIR = "traces"
EXPORT_FORMAT = "localagent-results"
# localagent writes traces/<model>/<task>-<trial>.jsonl; a trace path far longer is not ours
TRACE_PATH_MAX = 1024
# bytes of one trace an export packs or an import unpacks (the longest bench trace seen so far
# is a few MiB); a bigger file is left out of an export and refused in an import
TRACE_FILE_LIMIT = 64 * 2**20
# how long a database statement waits for another process's lock before it gives up: the
# transactions of a bench or an import last milliseconds, so a lock held longer is a program
# holding the database open in a transaction (a sqlite3 shell, a stuck process), not a queue
BUSY_TIMEOUT_S = 5.0

# what to do about an export that is not one: nothing of it was written
REMAKE_HINT = "nothing was imported; make the file with `localagent results export FILE`"

TrialKey = tuple[str, str, int]  # (model, task id, trial)


def new_run_id() -> str:
    """Sortable by start time, unique across machines that share results."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def key_of(trial: TrialResult) -> TrialKey:
    return (trial.model, trial.task_id, trial.trial)


def write_error(path: Path, exc: OSError) -> ResultsWriteError:
    """A failed write of `path`, in words, with what to do about it. Made from the first error
    of a write, before anything else (closing the file, a cleanup) can raise a second one."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f"free some space on the disk that holds {path.parent}"
    elif exc.errno == errno.EFBIG:
        hint = "a file size limit stopped the write (see `ulimit -f`): lift it"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = f"make {path.parent} writable"
    else:
        hint = None
    return ResultsWriteError(f"cannot write {path}: {exc.strerror or exc}", hint=hint)


def _warn(message: str) -> None:
    warnings.warn(message, ResultsWarning, stacklevel=3)


def _safe_name(name: str) -> str:
    """A model alias or task id as one path component."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def _shown(value: str, width: int = 60) -> str:
    """A value from a file, quoted and shortened, for a message."""
    return repr(value if len(value) <= width else value[:width] + "...")


def clean_trace_path(value: str) -> str:
    """A trace path as stored in TrialResult.trace_path, normalised ('.' and empty parts
    dropped), relative to its run folder; ResultsError when it is not one localagent could have
    written: absolute, with a '..' part (refused, not resolved: a symlink can make `a/..` lead
    anywhere), a backslash, NUL or another control character, or over TRACE_PATH_MAX long."""
    if len(value) > TRACE_PATH_MAX:
        raise ResultsError(f"trace path of {len(value)} characters (at most {TRACE_PATH_MAX})")
    if "\\" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ResultsError(f"trace path {_shown(value)} holds a backslash or a control character")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise ResultsError(f"trace path {_shown(value)} leads outside its run folder")
    if not path.parts:
        raise ResultsError("empty trace path")
    return path.as_posix()


def trace_file(run_dir: Path, trace_path: str) -> Path | None:
    """The file a trial's trace path names, symlinks resolved, checked to be a regular file
    inside the (resolved) run folder; None when there is no such file (a trace deleted, or not
    imported), ResultsError saying why not for one that must not be read."""
    rel = clean_trace_path(trace_path)
    root = Path(run_dir).resolve()
    named = root / rel
    try:
        path = named.resolve(strict=True)
    except FileNotFoundError:
        return None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise ResultsError(f"cannot read {named}: {getattr(exc, 'strerror', None) or exc}") from None
    if not path.is_relative_to(root):
        raise ResultsError(f"{named} leads outside its run folder {root} (to {path})")
    if not path.is_file():
        raise ResultsError(f"{named}: not a regular file")
    return path


def read_trace(path: Path, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the trace file `path` (from `trace_file`), and whether it holds
    more. Opened without following a symlink swapped in since, without blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ResultsError(f"{path}: not a regular file")
        data = f.read(limit + 1)
    return data[:limit], len(data) > limit


def _check_run_id(run_id: str) -> None:
    """A run id names its folder under the runs folder: one plain path component."""
    if run_id in ("", ".", "..") or _safe_name(run_id) != run_id:
        raise ResultsError(f"run id {_shown(run_id)} is not a plain folder name (letters, digits, '.', '_', '-')")


# --- the run directory ----------------------------------------------------------------------


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def info_path(self) -> Path:
        return self.path / RUN_FILE

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_FILE

    @classmethod
    def create(cls, path: Path, info: RunInfo) -> RunDir:
        run = cls(path)
        if run.info_path.exists():
            old = run.read_info().run_id
            raise ResultsError(f"{path} already holds bench run {old}", hint=f"continue it with --resume {path}, or pick another --out")
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultsError(f"cannot create the run folder {path}: {exc.strerror}") from exc
        run.write_info(info)
        return run

    def write_info(self, info: RunInfo) -> None:
        try:
            atomic_write(self.info_path, info.model_dump_json(indent=2) + "\n")
        except OSError as exc:
            raise write_error(self.info_path, exc) from None

    def read_info(self) -> RunInfo:
        try:
            return RunInfo.model_validate_json(self.info_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ResultsError(f"cannot read {self.info_path}: {exc.strerror}", hint="is this a bench run folder?") from exc
        except ValidationError as exc:
            raise ResultsError(f"{self.info_path}: not a bench run record: {_first_error(exc)}") from exc

    def trace_path(self, model: str, task_id: str, trial: int) -> str:
        """Relative to the run directory, as stored in TrialResult.trace_path."""
        return f"{TRACES_DIR}/{_safe_name(model)}/{_safe_name(task_id)}-{trial}.jsonl"

    def read_trials(self, on_problem: Callable[[str], None] | None = None) -> list[TrialResult]:
        """Every trial, once. A line that is no trial record (not UTF-8, not JSON, wrong
        fields: an edit or a disk fault) is skipped and reported to `on_problem` as
        `file:line: why` (default: a ResultsWarning), so one bad line costs one trial, which
        --resume runs again. A last line without its newline is a write a kill cut short, and
        skipped the same way, unless it is a whole record. A trial recorded twice (two benches
        on one run, before runs were locked) counts once: its last record."""
        problem = on_problem or _warn
        try:
            data = self.results_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ResultsError(f"cannot read {self.results_path}: {exc.strerror}") from exc
        lines = data.split(b"\n")
        last = lines.pop()  # what follows the last newline: b"" in a whole file
        trials: dict[TrialKey, TrialResult] = {}
        first_line: dict[TrialKey, int] = {}
        repeated: list[tuple[TrialKey, int, int]] = []
        for number, raw in enumerate([*lines, last], 1):
            if not raw.strip():
                continue
            parsed = _trial_or_reason(raw)
            if isinstance(parsed, str):
                torn = number > len(lines)
                why = "an incomplete last line (a write cut short)" if torn else parsed
                problem(f"{self.results_path}:{number}: {why}: skipped (`localagent bench --resume` runs its trial again)")
                continue
            key = key_of(parsed)
            if key in trials:
                repeated.append((key, first_line[key], number))
            first_line.setdefault(key, number)
            trials[key] = parsed
        if repeated:
            (model, task_id, trial), a, b = repeated[0]
            problem(
                f"{self.results_path}: {len(repeated)} record(s) repeat a trial already recorded"
                f" (the first: {model} on {task_id} trial {trial}, lines {a} and {b}); each trial counts once, as its last record"
            )
        return list(trials.values())

    def repair(self) -> None:
        """End the file on a whole line, so the next append starts a line of its own: a last
        line without its newline is cut when it is a write cut short, and given its newline
        when it is a whole record (nothing readable is dropped)."""
        try:
            data = self.results_path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ResultsError(f"cannot read {self.results_path}: {exc.strerror}") from exc
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        whole = isinstance(_trial_or_reason(data[start:]), TrialResult)
        try:
            fd = os.open(self.results_path, os.O_WRONLY | os.O_APPEND)
            try:
                if whole:
                    os.write(fd, b"\n")
                else:
                    os.ftruncate(fd, start)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise write_error(self.results_path, exc) from None

    def append(self, trial: TrialResult) -> None:
        """One line, fsync'd. A write the disk refuses part-way (full, a size limit) is cut
        back off, so the file still ends on its last whole line, and the write's own error is
        the one raised: a buffered file would raise a second time on close, on the bytes it
        could not write, and hide the first. The run lock makes this process the only writer."""
        data = (trial.model_dump_json() + "\n").encode("utf-8")
        try:
            fd = os.open(self.results_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(self.results_path, exc) from None
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError as exc:
                with suppress(OSError):  # shrinking needs no space; if it fails, repair() cuts the line
                    os.ftruncate(fd, start)
                raise write_error(self.results_path, exc) from None
        finally:
            os.close(fd)

    @contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        """Hold the run for one bench: an exclusive flock on bench.lock in the run folder for
        as long as the bench runs, the file naming the holder (pid, host, start). A second
        bench on the run is refused at once: two resumes at once both ran every pending trial
        (846 records for 580 trials). The kernel drops a flock when its process dies, so the
        lock of a killed bench blocks nothing; the file stays (removing it would let a third
        bench lock a new file while a second still holds the old one)."""
        if fcntl is None:  # pragma: no cover
            yield
            return
        path = self.path / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(path, exc) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _run_busy(run_id, fd) from None
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()}
            try:
                os.ftruncate(fd, 0)
                os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
            except OSError as exc:
                raise write_error(path, exc) from None
            try:
                yield
            finally:
                with suppress(OSError):  # no holder to name any more; the flock goes with the fd
                    os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def _run_busy(run_id: str, fd: int) -> ResultsError:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        who = f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):  # the holder has not written itself yet
        who = "another process"
    return ResultsError(
        f"run {run_id} is being run by {who}",
        hint=f"wait for that bench to end (or stop it), then `localagent bench --resume {run_id}` runs what it left",
    )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(record)"
    return f"field '{field}': {err['msg']}"


def _trial_or_reason(line: bytes) -> TrialResult | str:
    """A line of results.jsonl as a trial, or why it is none."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start + 1} of the line)"
    try:
        return TrialResult.model_validate_json(text)
    except ValidationError as exc:
        return f"not a trial record: {_first_error(exc)}"


# --- the database -----------------------------------------------------------------------------


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
    return fn.__name__.lstrip("_")


class _RollBack(Exception):
    """Ends a transaction with a rollback and no error (ResultsDB.check_writable)."""


@dataclass(frozen=True)
class StoredRun:
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
            self.db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
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
                return ResultsWriteError(f"cannot write {where}: its folder is read-only", hint=f"make {self.path.parent} writable")
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
                f"cannot write {where}: {exc}", hint="free some space on its disk, or lift a file size limit (`ulimit -f`)"
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
        return [TrialResult.model_validate_json(record) for sha, started, run_id, record in rows if latest[sha] == (started, run_id)]


def _stored_run(info: str, run_dir: str | None) -> StoredRun:
    return StoredRun(RunInfo.model_validate_json(info), Path(run_dir) if run_dir else None)


def locate_run(ref: str, db: ResultsDB) -> RunDir:
    """A run folder from a path or a run id (the database knows where each run was written)."""
    candidates = [Path(ref).expanduser()]
    stored = db.run(ref)
    if stored is not None and stored.run_dir is not None:
        candidates.append(stored.run_dir)
    candidates.append(settings.runs_dir() / ref)
    for path in candidates:
        if (path / RUN_FILE).is_file():
            return RunDir(path)
    raise ResultsError(f"no bench run '{ref}'", hint="give a run id from `localagent report` or the path of a run folder")


# --- export and import --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSummary:
    runs: int
    trials: int
    traces: int
    notices: tuple[str, ...] = ()  # traces left out, and why


@dataclass(frozen=True)
class ImportSummary:
    runs_added: int
    trials_added: int
    trials_skipped: int  # already stored: importing twice changes nothing
    traces: int


def _format_of(path: Path) -> str:
    name = path.name.lower()
    for suffix, kind in ((".tar.gz", "tar"), (".tgz", "tar"), (".jsonl", "jsonl"), (".json", "json")):
        if name.endswith(suffix):
            return kind
    raise ResultsError(f"{path}: unknown results file type", hint="use a .json, .jsonl or .tar.gz file name")


def _jsonl_lines(runs: list[RunInfo], trials: list[TrialResult]) -> Iterator[str]:
    yield json.dumps({"format": EXPORT_FORMAT, "schema_version": SCHEMA_VERSION})
    for info in runs:
        yield json.dumps({"run": info.model_dump(mode="json")})
    for trial in trials:
        yield json.dumps({"trial": trial.model_dump(mode="json")})


def export_results(db: ResultsDB, dest: Path, *, run_id: str | None = None, model: str | None = None) -> ExportSummary:
    """Write stored results to `dest`: .json (one document), .jsonl (a header line, then one
    run or trial per line) or .tar.gz (the JSONL plus every trace still on disk)."""
    kind = _format_of(dest)
    trials = db.trials(run_id=run_id, model=model)
    if not trials:
        what = " ".join(filter(None, [f"run {run_id}" if run_id else "", f"model {model}" if model else ""]))
        raise ResultsError(f"no stored results{' for ' + what if what else ''}", hint="`localagent report` lists the stored runs")
    run_ids = list(dict.fromkeys(t.run_id for t in trials))
    stored = {rid: db.run(rid) for rid in run_ids}
    runs = [s.info for s in stored.values() if s is not None]
    notices: list[str] = []
    trials = [_exportable(t, notices) for t in trials]
    try:
        traces = _write_export(dest, kind, runs, trials, stored, notices)
    except OSError as exc:  # a full disk, a read-only folder: said once, naming the file
        raise write_error(dest, exc) from None
    return ExportSummary(len(runs), len(trials), traces, tuple(notices))


def _write_export(
    dest: Path, kind: str, runs: list[RunInfo], trials: list[TrialResult], stored: dict[str, StoredRun | None], notices: list[str]
) -> int:
    """The export file, written beside `dest` and renamed into place; the number of traces packed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    traces = 0
    if kind == "json":
        doc = {
            "format": EXPORT_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "runs": [r.model_dump(mode="json") for r in runs],
            "trials": [t.model_dump(mode="json") for t in trials],
        }
        atomic_write(dest, json.dumps(doc, indent=1) + "\n")
    elif kind == "jsonl":
        atomic_write(dest, "".join(line + "\n" for line in _jsonl_lines(runs, trials)))
    else:
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with tarfile.open(tmp, "w:gz") as tar:
                data = "".join(line + "\n" for line in _jsonl_lines(runs, trials)).encode("utf-8")
                _add_bytes(tar, RESULTS_FILE, data)
                for trial in trials:
                    run = stored.get(trial.run_id)
                    if trial.trace_path and run is not None and run.run_dir is not None:
                        data = _trace_for_export(run.run_dir, trial, notices)
                        if data is not None:
                            _add_bytes(tar, f"{TRACES_DIR}/{trial.run_id}/{trial.trace_path}", data)
                            traces += 1
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return traces


def _exportable(trial: TrialResult, notices: list[str]) -> TrialResult:
    """The trial with its trace path normalised, or without one when it is not a path inside
    a run folder (stored by an import before imports checked them): an export another
    localagent accepts."""
    if not trial.trace_path:
        return trial
    try:
        clean = clean_trace_path(trial.trace_path)
    except ResultsError as exc:
        notices.append(f"{_trial_name(trial)}: trace left out: {exc.message}")
        return trial.model_copy(update={"trace_path": None})
    return trial if clean == trial.trace_path else trial.model_copy(update={"trace_path": clean})


def _trace_for_export(run_dir: Path, trial: TrialResult, notices: list[str]) -> bytes | None:
    """The trace's bytes, when its file is a regular file inside the run folder and at most
    TRACE_FILE_LIMIT long; a trace whose file is gone is left out without a word (as before)."""
    assert trial.trace_path is not None
    try:
        path = trace_file(run_dir, trial.trace_path)
        if path is None:
            return None
        data, more = read_trace(path, TRACE_FILE_LIMIT)
    except ResultsError as exc:
        notices.append(f"{_trial_name(trial)}: trace left out: {exc.message}")
        return None
    if more:
        notices.append(f"{_trial_name(trial)}: trace left out: over {TRACE_FILE_LIMIT // 2**20} MiB")
        return None
    return data


def _trial_name(trial: TrialResult) -> str:
    return f"run {trial.run_id}, {trial.model} on {trial.task_id} trial {trial.trial}"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    tar.addfile(member, io.BytesIO(data))


def _read_records(text: str, where: str, kind: str) -> tuple[list[RunInfo], list[TrialResult]]:
    """Parse an export; every error names the file and, for JSONL, the line."""
    runs: list[RunInfo] = []
    trials: list[TrialResult] = []

    def header(doc: object, at: str) -> None:
        if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
            raise ResultsError(f"{at}: not a localagent results export", hint=REMAKE_HINT)
        version = doc.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ResultsError(
                f"{at}: results schema version {version} is newer than this localagent's ({SCHEMA_VERSION})",
                hint="upgrade localagent to import it",
            )

    def add(record: object, at: str) -> None:
        if not (isinstance(record, dict) and set(record) in ({"run"}, {"trial"})):
            raise ResultsError(f"{at}: expected an object with one key, 'run' or 'trial'", hint=REMAKE_HINT)
        try:
            if "run" in record:
                info = RunInfo.model_validate(record["run"])
                _check_run_id(info.run_id)
                runs.append(info)
            else:
                trial = TrialResult.model_validate(record["trial"])
                if trial.trace_path is not None:
                    trial = trial.model_copy(update={"trace_path": clean_trace_path(trial.trace_path)})
                trials.append(trial)
        except ValidationError as exc:
            raise ResultsError(f"{at}: not a result record: {_first_error(exc)}", hint=REMAKE_HINT) from exc
        except ResultsError as exc:
            # a record localagent could not have written: the file was edited or is hostile,
            # and its figures are no more trustworthy than its paths; nothing is imported
            raise ResultsError(
                f"{at}: {exc.message}",
                hint="nothing was imported; ask for a fresh `localagent results export`, or remove that record",
            ) from None

    if kind == "json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{where}:{exc.lineno}: not valid JSON: {exc.msg}", hint=REMAKE_HINT) from exc
        header(doc, where)
        assert isinstance(doc, dict)
        for field in ("runs", "trials"):
            if not isinstance(doc.get(field, []), list):
                raise ResultsError(f"{where}: '{field}' is not a list", hint=REMAKE_HINT)
        for i, run in enumerate(doc.get("runs", [])):
            add({"run": run}, f"{where}: runs[{i}]")
        for i, trial in enumerate(doc.get("trials", [])):
            add({"trial": trial}, f"{where}: trials[{i}]")
        return runs, trials
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ResultsError(f"{where}: empty file", hint=REMAKE_HINT)
    for n, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{where}:{n}: not valid JSON: {exc.msg}", hint=REMAKE_HINT) from exc
        if n == lines[0][0]:
            header(record, f"{where}:{n}")
        else:
            add(record, f"{where}:{n}")
    return runs, trials


def _trace_target(name: str) -> tuple[str, str] | None:
    """(run id, path inside the run folder) for a trace member of an export, or None for a
    name that could escape the folder it is written to."""
    parts = PurePosixPath(name).parts
    if len(parts) < 3 or parts[0] != TRACES_DIR or PurePosixPath(name).is_absolute():
        return None
    if any(p in ("", ".", "..") for p in parts) or "\\" in name:
        return None
    return parts[1], "/".join(parts[2:])


def _read_export(src: Path, kind: str) -> tuple[str, dict[str, dict[str, bytes]]]:
    """The export's JSON or JSONL text and, from a .tar.gz, its trace members: run id ->
    path inside that run's folder -> bytes. A member bigger than TRACE_FILE_LIMIT is refused."""
    traces: dict[str, dict[str, bytes]] = {}
    try:
        if kind != "tar":
            return src.read_text(encoding="utf-8"), traces
        with tarfile.open(src, "r:*") as tar:
            handle = tar.extractfile(tar.getmember(RESULTS_FILE))
            text = handle.read().decode("utf-8") if handle else ""
            for member in tar.getmembers():
                target = _trace_target(member.name) if member.isfile() else None
                if target is None:
                    continue
                if member.size > TRACE_FILE_LIMIT:
                    raise ResultsError(
                        f"{src}: {member.name} is {member.size} bytes, over the {TRACE_FILE_LIMIT // 2**20} MiB a trace may have",
                        hint="nothing was imported; export without it (`localagent results export FILE.jsonl` has no traces)",
                    )
                handle = tar.extractfile(member)
                if handle is not None:
                    traces.setdefault(target[0], {})[target[1]] = handle.read()
    except KeyError as exc:
        raise ResultsError(f"{src}: no {RESULTS_FILE} inside", hint="make one with `localagent results export FILE.tar.gz`") from exc
    except (OSError, tarfile.TarError, UnicodeDecodeError, EOFError) as exc:
        raise ResultsError(f"{src}: cannot read: {exc}") from exc
    return text, traces


def _write_run_folder(final: Path, info: RunInfo, trials: list[TrialResult], traces: dict[str, bytes]) -> int:
    """A new run folder for an imported run: run.json, results.jsonl and the trials' traces
    (other members are ignored), written beside it and renamed into place, so a folder is
    either whole or absent. Returns the number of traces written."""
    tmp = final.with_name(f".import-{final.name}-{uuid.uuid4().hex[:8]}")
    written = 0
    try:
        tmp.mkdir(parents=True)
        for rel in dict.fromkeys(t.trace_path for t in trials if t.trace_path in traces):
            assert rel is not None
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(traces[rel])
            written += 1
        run = RunDir(tmp)
        run.write_info(info)
        atomic_write(run.results_path, "".join(t.model_dump_json() + "\n" for t in trials))
        os.rename(tmp, final)  # refuses a folder that appeared since the check
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ResultsError(f"cannot write the run folder {final}: {exc.strerror or exc}", hint="nothing was imported") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def import_results(db: ResultsDB, src: Path) -> ImportSummary:
    """Add an export's runs and trials to the database. Idempotent: a (run, model, task,
    trial) already stored is skipped. From a .tar.gz, traces of newly added runs are written
    under settings.runs_dir()/<run id>/.

    Every record is checked (schema, run ids that name one folder, trace paths inside their
    run folder) before anything is written, and a bad one refuses the whole import; the
    database is written in one transaction, and a run folder that already exists is never
    written into."""
    kind = _format_of(src)
    if not src.is_file():
        raise ResultsError(f"{src}: no such file")
    text, traces = _read_export(src, kind)
    runs, trials = _read_records(text, str(src), "json" if kind == "json" else "jsonl")
    known = {r.run_id for r in runs}
    missing = sorted({t.run_id for t in trials} - known)
    if missing:
        raise ResultsError(f"{src}: trials of run {missing[0]} without its run record", hint="export again with `localagent results export`")
    new = [info for info in dict((r.run_id, r) for r in runs).values() if db.run(info.run_id) is None]
    folders: dict[str, Path] = {}
    for info in new:
        if traces.get(info.run_id):
            folder = settings.runs_dir() / info.run_id
            if os.path.lexists(folder):
                raise ResultsError(
                    f"{folder} already exists, but the results database does not know run {info.run_id}",
                    hint="nothing was imported; move that folder away, or import the .jsonl export (no traces)",
                )
            folders[info.run_id] = folder
    written = 0
    created: list[Path] = []  # removed again if the import fails: folders it wrote, no other
    try:
        for info in new:
            if info.run_id in folders:
                own = [t for t in trials if t.run_id == info.run_id]
                written += _write_run_folder(folders[info.run_id], info, own, traces[info.run_id])
                created.append(folders[info.run_id])
        try:
            added = db.add_all([(info, folders.get(info.run_id)) for info in new], trials)
        except ResultsError as exc:  # the database refused: its one transaction is rolled back
            exc.hint = "nothing was imported" + (f"; {exc.hint}" if exc.hint else "")
            raise
    except BaseException:
        for folder in created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return ImportSummary(len(new), added, len(trials) - added, written)
