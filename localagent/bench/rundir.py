"""One bench run on disk: a folder holding run.json (its RunInfo, rewritten atomically),
results.jsonl (one TrialResult per line, appended and fsync'd the moment a trial ends: the
run's source of truth, what --resume reads), traces/<model>/<task>-<trial>.jsonl, and
bench.lock, held by the one bench running it."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from localagent import settings
from localagent.bench.results_errors import first_error, shown, write_error
from localagent.bench.schema import RunInfo, TrialResult
from localagent.errors import ResultsError, ResultsWarning
from localagent.files import atomic_write
from localagent.units import utc_now

if TYPE_CHECKING:  # the database is only asked where a run was written
    from localagent.bench.database import ResultsDB

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked there
    fcntl = None  # type: ignore[assignment]

RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
# held (flock) by the bench running the run, and naming it: one bench per run at a time
LOCK_FILE = "bench.lock"
TRACES_DIR = "traces"

TrialKey = tuple[str, str, int]  # (model, task id, trial)


def new_run_id() -> str:
    """Sortable by start time, unique across machines that share results."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def key_of(trial: TrialResult) -> TrialKey:
    return (trial.model, trial.task_id, trial.trial)


def _warn(message: str) -> None:
    warnings.warn(message, ResultsWarning, stacklevel=3)


def safe_name(name: str) -> str:
    """A model alias or task id as one path component."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def check_run_id(run_id: str) -> None:
    """A run id names its folder under the runs folder: one plain path component."""
    if run_id in ("", ".", "..") or safe_name(run_id) != run_id:
        raise ResultsError(f"run id {shown(run_id)} is not a plain folder name (letters, digits, '.', '_', '-')")


class RunDir:
    """A run folder; nothing is read or made until a method is called."""

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
            raise ResultsError(
                f"{path} already holds bench run {old}", hint=f"continue it with --resume {path}, or pick another --out"
            )
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
            raise ResultsError(
                f"cannot read {self.info_path}: {exc.strerror}", hint="is this a bench run folder?"
            ) from exc
        except ValidationError as exc:
            raise ResultsError(f"{self.info_path}: not a bench run record: {first_error(exc)}") from exc

    def trace_path(self, model: str, task_id: str, trial: int) -> str:
        """Relative to the run directory, as stored in TrialResult.trace_path."""
        return f"{TRACES_DIR}/{safe_name(model)}/{safe_name(task_id)}-{trial}.jsonl"

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
                problem(
                    f"{self.results_path}:{number}: {why}: skipped (`localagent bench --resume` runs its trial again)"
                )
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
    # the holder writes its name just after taking the lock: a bench refused in between
    # waits a moment for the name rather than saying "another process"
    who = "another process"
    for _ in range(40):
        try:
            holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            who = f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
            break
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.025)
    return ResultsError(
        f"run {run_id} is being run by {who}",
        hint=f"wait for that bench to end (or stop it), then `localagent bench --resume {run_id}` runs what it left",
    )


def _trial_or_reason(line: bytes) -> TrialResult | str:
    """A line of results.jsonl as a trial, or why it is none."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start + 1} of the line)"
    try:
        return TrialResult.model_validate_json(text)
    except ValidationError as exc:
        return f"not a trial record: {first_error(exc)}"


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
    raise ResultsError(
        f"no bench run '{ref}'", hint="give a run id from `localagent report` or the path of a run folder"
    )
