"""Stored results as a file another machine can import: .json (one document), .jsonl (a
header line, then one run or trial per line) or .tar.gz (that JSONL plus the traces). An
export is read as hostile: every record is checked before anything is written, and a bad one
refuses the whole import."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from localagent import settings
from localagent.bench.database import ResultsDB, StoredRun
from localagent.bench.results_errors import first_error, write_error
from localagent.bench.rundir import RESULTS_FILE, TRACES_DIR, RunDir, check_run_id
from localagent.bench.schema import SCHEMA_VERSION, RunInfo, TrialResult
from localagent.bench.tracepaths import clean_trace_path, read_trace, trace_file
from localagent.errors import ResultsError
from localagent.files import atomic_write

EXPORT_FORMAT = "localagent-results"
# bytes of one trace an export packs or an import unpacks (the longest bench trace seen so far
# is a few MiB); a bigger file is left out of an export and refused in an import
TRACE_FILE_LIMIT = 64 * 2**20

# what to do about an export that is not one: nothing of it was written
REMAKE_HINT = "nothing was imported; make the file with `localagent results export FILE`"


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote, for the CLI to say."""

    runs: int
    trials: int
    traces: int
    notices: tuple[str, ...] = ()  # traces left out, and why


@dataclass(frozen=True)
class ImportSummary:
    """What an import added and what it found already stored, for the CLI to say."""

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
        raise ResultsError(
            f"no stored results{' for ' + what if what else ''}", hint="`localagent report` lists the stored runs"
        )
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
    dest: Path,
    kind: str,
    runs: list[RunInfo],
    trials: list[TrialResult],
    stored: dict[str, StoredRun | None],
    notices: list[str],
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
                        trace = _trace_for_export(run.run_dir, trial, notices)
                        if trace is not None:
                            _add_bytes(tar, f"{TRACES_DIR}/{trial.run_id}/{trial.trace_path}", trace)
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
                check_run_id(info.run_id)
                runs.append(info)
            else:
                trial = TrialResult.model_validate(record["trial"])
                if trial.trace_path is not None:
                    trial = trial.model_copy(update={"trace_path": clean_trace_path(trial.trace_path)})
                trials.append(trial)
        except ValidationError as exc:
            raise ResultsError(f"{at}: not a result record: {first_error(exc)}", hint=REMAKE_HINT) from exc
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
        raise ResultsError(
            f"{src}: no {RESULTS_FILE} inside", hint="make one with `localagent results export FILE.tar.gz`"
        ) from exc
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
        raise ResultsError(
            f"cannot write the run folder {final}: {exc.strerror or exc}", hint="nothing was imported"
        ) from exc
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
        raise ResultsError(
            f"{src}: trials of run {missing[0]} without its run record",
            hint="export again with `localagent results export`",
        )
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
