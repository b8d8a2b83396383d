"""Which run a report shows, and the records it is drawn from: the run (by id, folder, or the
latest), read from its folder or the database, with the stored results of baselines it named
but did not run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from localagent.bench.database import ResultsDB
from localagent.bench.rundir import locate_run
from localagent.bench.schema import RunInfo, TrialResult
from localagent.errors import ResultsError


@dataclass(frozen=True)
class StoredReport:
    """What `summarize` and `render_html` need, read from a run folder and the database."""

    info: RunInfo
    trials: list[TrialResult]
    baseline_trials: list[TrialResult]
    run_dir: Path | None  # None: the run is in the database only (imported without traces)
    other_runs: dict[str, Path | None]  # the runs stored baselines come from -> their folders


def stored_baselines(db: ResultsDB, info: RunInfo, trials: Sequence[TrialResult]) -> list[TrialResult]:
    """The latest stored results of each baseline that has no trial in this run, on this
    run's task versions."""
    ran = {t.model for t in trials}
    versions = {t.task_sha256 for t in trials}
    return [t for b in info.baselines if b not in ran for t in db.latest_results(b, versions)]


def load_report(db: ResultsDB, ref: str | None = None) -> StoredReport:
    """A run by id or folder (default: the latest stored run). The run folder's results.jsonl
    is the source of truth; a run known only to the database is read from there."""
    if ref is None:
        latest = db.latest_run()
        if latest is None:
            raise ResultsError("no bench run is stored yet", hint="run `localagent bench` first")
        ref = latest.info.run_id
    try:
        folder = locate_run(ref, db)
    except ResultsError:
        stored = db.run(ref)
        if stored is None:
            recent = [r.info.run_id for r in reversed(db.runs())][:5]
            hint = f"latest runs: {', '.join(recent)}" if recent else "run `localagent bench` first"
            raise ResultsError(f"no bench run '{ref}'", hint=hint) from None
        info, trials, run_dir = stored.info, db.trials(run_id=stored.info.run_id), None
    else:
        info, trials, run_dir = folder.read_info(), folder.read_trials(), folder.path
    baselines = stored_baselines(db, info, trials)
    others = {}
    for run_id in dict.fromkeys(t.run_id for t in baselines):
        other = db.run(run_id)
        others[run_id] = other.run_dir if other is not None else None
    return StoredReport(info, trials, baselines, run_dir, others)
