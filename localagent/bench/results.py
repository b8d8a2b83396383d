"""Where bench results live.

A run directory holds one run: run.json (its RunInfo, rewritten atomically), results.jsonl
(one TrialResult per line, appended and fsync'd the moment a trial ends: the run's source of
truth, what --resume reads) and traces/<model>/<task>-<trial>.jsonl. The SQLite database in
$LOCALAGENT_HOME accumulates every run's trials into a model x task capability map; its schema
moves forward through an ordered list of small migrations recorded in a table.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import sqlite3
import tarfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

from pydantic import ValidationError

from localagent import settings
from localagent.bench.schema import SCHEMA_VERSION, RunInfo, TrialResult
from localagent.errors import ResultsError

RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
TRACES_DIR = "traces"
EXPORT_FORMAT = "localagent-results"

TrialKey = tuple[str, str, int]  # (model, task id, trial)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    """Sortable by start time, unique across machines that share results."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def key_of(trial: TrialResult) -> TrialKey:
    return (trial.model, trial.task_id, trial.trial)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _safe_name(name: str) -> str:
    """A model alias or task id as one path component."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


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
        _atomic_write(self.info_path, info.model_dump_json(indent=2) + "\n")

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

    def read_trials(self) -> list[TrialResult]:
        """Every complete line. A last line without its newline is a write a kill cut short:
        it is skipped (and `repair` removes it)."""
        if not self.results_path.exists():
            return []
        text = self.results_path.read_text(encoding="utf-8")
        lines = text.split("\n")
        trials = []
        for number, line in enumerate(lines[:-1], 1):
            if line.strip():
                trials.append(_parse_trial(line, f"{self.results_path}:{number}"))
        return trials

    def repair(self) -> None:
        """Cut a torn last line so the next append starts on a line of its own."""
        if not self.results_path.exists():
            return
        data = self.results_path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.results_path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
                os.fsync(f.fileno())

    def append(self, trial: TrialResult) -> None:
        line = trial.model_dump_json() + "\n"
        with open(self.results_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(record)"
    return f"field '{field}': {err['msg']}"


def _parse_trial(line: str, where: str) -> TrialResult:
    try:
        return TrialResult.model_validate_json(line)
    except ValidationError as exc:
        raise ResultsError(f"{where}: not a trial record: {_first_error(exc)}") from exc


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
            # autocommit; transactions are explicit, so DDL in migrations is transactional too
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise ResultsError(f"cannot open the results database {self.path}: {exc}") from exc
        self.migrate()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def applied_migrations(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT name FROM schema_migrations ORDER BY rowid")]

    def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded, each in its own transaction; returns their
        names. A second process waits on the lock and then finds nothing left to do."""
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

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- writing ---

    def save_run(self, info: RunInfo, run_dir: Path | None = None) -> None:
        """Insert or update a run (a resumed or finished run rewrites its record). An existing
        run_dir is kept when none is given (an import does not know one)."""
        with self._transaction():
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

    def add_trial(self, trial: TrialResult) -> bool:
        """Insert one trial; False when (run, model, task, trial) is already stored."""
        with self._transaction():
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
        rows = self.db.execute("SELECT info, run_dir FROM runs ORDER BY started_at, run_id").fetchall()
        return [_stored_run(info, run_dir) for info, run_dir in rows]

    def run(self, run_id: str) -> StoredRun | None:
        row = self.db.execute("SELECT info, run_dir FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return _stored_run(*row) if row else None

    def latest_run(self) -> StoredRun | None:
        row = self.db.execute("SELECT info, run_dir FROM runs ORDER BY started_at DESC, run_id DESC LIMIT 1").fetchone()
        return _stored_run(*row) if row else None

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
        return [TrialResult.model_validate_json(row[0]) for row in self.db.execute(sql, params)]

    def latest_results(self, model: str, task_sha256s: Iterable[str]) -> list[TrialResult]:
        """For each task version, the trials of `model` from the latest run that ran it: what
        a bench compares against when that model cannot be run now."""
        wanted = json.dumps(sorted(set(task_sha256s)))
        rows = self.db.execute(
            """SELECT t.task_sha256, r.started_at, t.run_id, t.record
            FROM trials t JOIN runs r ON r.run_id = t.run_id
            WHERE t.model = ? AND t.task_sha256 IN (SELECT value FROM json_each(?))
            ORDER BY t.task_id, t.trial""",
            (model, wanted),
        ).fetchall()
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
    dest.parent.mkdir(parents=True, exist_ok=True)
    traces = 0
    if kind == "json":
        doc = {
            "format": EXPORT_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "runs": [r.model_dump(mode="json") for r in runs],
            "trials": [t.model_dump(mode="json") for t in trials],
        }
        _atomic_write(dest, json.dumps(doc, indent=1) + "\n")
    elif kind == "jsonl":
        _atomic_write(dest, "".join(line + "\n" for line in _jsonl_lines(runs, trials)))
    else:
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with tarfile.open(tmp, "w:gz") as tar:
                data = "".join(line + "\n" for line in _jsonl_lines(runs, trials)).encode("utf-8")
                _add_bytes(tar, RESULTS_FILE, data)
                for trial in trials:
                    run = stored.get(trial.run_id)
                    if trial.trace_path and run is not None and run.run_dir is not None:
                        source = run.run_dir / trial.trace_path
                        if source.is_file():
                            tar.add(source, arcname=f"{TRACES_DIR}/{trial.run_id}/{trial.trace_path}")
                            traces += 1
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return ExportSummary(len(runs), len(trials), traces)


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
            raise ResultsError(f"{at}: not a localagent results export", hint="make one with `localagent results export FILE`")
        version = doc.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ResultsError(
                f"{at}: results schema version {version} is newer than this localagent's ({SCHEMA_VERSION})",
                hint="upgrade localagent to import it",
            )

    def add(record: object, at: str) -> None:
        try:
            if isinstance(record, dict) and set(record) == {"run"}:
                runs.append(RunInfo.model_validate(record["run"]))
            elif isinstance(record, dict) and set(record) == {"trial"}:
                trials.append(TrialResult.model_validate(record["trial"]))
            else:
                raise ResultsError(f"{at}: expected an object with one key, 'run' or 'trial'")
        except ValidationError as exc:
            raise ResultsError(f"{at}: not a result record: {_first_error(exc)}") from exc

    if kind == "json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{where}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
        header(doc, where)
        for i, run in enumerate(doc.get("runs", [])):
            add({"run": run}, f"{where}: runs[{i}]")
        for i, trial in enumerate(doc.get("trials", [])):
            add({"trial": trial}, f"{where}: trials[{i}]")
        return runs, trials
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ResultsError(f"{where}: empty file")
    for n, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{where}:{n}: not valid JSON: {exc.msg}") from exc
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


def import_results(db: ResultsDB, src: Path) -> ImportSummary:
    """Add an export's runs and trials to the database. Idempotent: a (run, model, task,
    trial) already stored is skipped. From a .tar.gz, traces of newly added runs are written
    under settings.runs_dir()/<run id>/."""
    kind = _format_of(src)
    if not src.is_file():
        raise ResultsError(f"{src}: no such file")
    traces: dict[str, list[tuple[str, bytes]]] = {}
    try:
        if kind == "tar":
            with tarfile.open(src, "r:*") as tar:
                member = tar.getmember(RESULTS_FILE)
                handle = tar.extractfile(member)
                text = handle.read().decode("utf-8") if handle else ""
                for member in tar.getmembers():
                    target = _trace_target(member.name) if member.isfile() else None
                    handle = tar.extractfile(member) if target else None
                    if target and handle:
                        traces.setdefault(target[0], []).append((target[1], handle.read()))
        else:
            text = src.read_text(encoding="utf-8")
    except KeyError as exc:
        raise ResultsError(f"{src}: no {RESULTS_FILE} inside", hint="make one with `localagent results export FILE.tar.gz`") from exc
    except (OSError, tarfile.TarError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{src}: cannot read: {exc}") from exc
    runs, trials = _read_records(text, str(src), "json" if kind == "json" else "jsonl")
    known = {r.run_id for r in runs}
    missing = sorted({t.run_id for t in trials} - known)
    if missing:
        raise ResultsError(f"{src}: trials of run {missing[0]} without its run record", hint="export again with `localagent results export`")
    runs_added = written = 0
    for info in runs:
        if db.run(info.run_id) is not None:
            continue
        run_dir = None
        if traces.get(info.run_id):
            run_dir = settings.runs_dir() / info.run_id
            for rel, data in traces[info.run_id]:
                path = run_dir / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                written += 1
            run = RunDir(run_dir)
            run.write_info(info)
            own = "".join(t.model_dump_json() + "\n" for t in trials if t.run_id == info.run_id)
            _atomic_write(run.results_path, own)
        db.save_run(info, run_dir)
        runs_added += 1
    added = sum(db.add_trial(t) for t in trials)
    return ImportSummary(runs_added, added, len(trials) - added, written)
