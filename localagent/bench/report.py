"""What the user reads after a bench: `summarize` turns a run's records into figures (pure);
the renderers turn the figures into a terminal report, JSON, Markdown or a standalone HTML
page. Every renderer draws the same tables, built once by `_tables`."""

from __future__ import annotations

import dataclasses
import html
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from localagent.bench import metrics
from localagent.bench.results import ResultsDB, locate_run, read_trace, trace_file
from localagent.bench.schema import SCHEMA_VERSION, RunInfo, TrialResult
from localagent.errors import MissingExtraError, ResultsError
from localagent.files import atomic_write
from localagent.units import format_bytes

DASH = "—"


# --- the figures -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """successes out of n, with its Wilson 95% interval."""

    successes: int
    n: int
    rate: float
    lo: float
    hi: float


@dataclass(frozen=True)
class ModelSummary:
    name: str
    kind: str  # local, hosted or pseudo
    tasks: int
    trials: int
    k: int  # trials per task (the most any task got)
    passed: Rate
    pass_hat_k: float | None  # all k trials pass, averaged over tasks; None when k == 1
    median_wall_s: float | None
    # all trials' tokens (input + output) and cost over the trials solved: the price of a success
    tokens_per_solved: float | None
    cost_per_solved: float | None
    total_cost_usd: float
    suite_cost_usd: float  # one pass over the tasks: mean cost per trial x tasks
    peak_rss_bytes: int | None
    peak_anon_bytes: int | None
    peak_file_bytes: int | None
    model_file_bytes: int | None
    median_decode_tokens_per_s: float | None
    median_ttft_s: float | None
    load_s: float | None
    price_as_of: str | None
    failures: tuple[tuple[str, int], ...]  # (failure mode, trials), most frequent first
    source_run_id: str  # the run these results come from
    source_date: str | None  # set when they come from an earlier stored run


@dataclass(frozen=True)
class TierSummary:
    model: str
    tier: int
    passed: Rate


@dataclass(frozen=True)
class Cell:
    passes: int
    trials: int


@dataclass(frozen=True)
class GridRow:
    task_id: str
    tier: int
    cells: tuple[Cell | None, ...]  # one per model, in Summary.models order; None: not run


@dataclass(frozen=True)
class Paired:
    """A model against a baseline on the tasks both ran (same task version): a win is a task
    the model passed more often than the baseline did (metrics.paired)."""

    model: str
    baseline: str
    common: int
    wins: int
    losses: int
    ties: int
    p_value: float  # exact sign test on wins against losses


@dataclass(frozen=True)
class TrialRef:
    model: str
    task_id: str
    tier: int
    trial: int
    success: bool
    failure_mode: str | None
    wall_s: float
    cost_usd: float
    run_id: str
    trace_path: str | None  # relative to the directory of run `run_id`


@dataclass(frozen=True)
class Verdict:
    model: str
    text: str


@dataclass(frozen=True)
class Summary:
    run_id: str
    started_at: str
    finished_at: str | None
    host: str
    localagent_version: str
    k: int
    temperature: float
    tool_mode: str
    price_table: str
    models: tuple[ModelSummary, ...]
    tiers: tuple[TierSummary, ...]
    grid: tuple[GridRow, ...]
    paired: tuple[Paired, ...]
    verdicts: tuple[Verdict, ...]
    trials: tuple[TrialRef, ...]
    notes: tuple[str, ...]


# --- summarize ---------------------------------------------------------------------------


def summarize(
    run_info: RunInfo, trials: Iterable[TrialResult], baseline_trials: Iterable[TrialResult] = ()
) -> Summary:
    """The report's figures. `baseline_trials` are stored results of baselines that did not
    run in this run; only those on this run's task versions are compared."""
    own = list(trials)
    by_model = _group(own, lambda t: t.model)
    versions = {t.task_id: t.task_sha256 for t in own}
    stored = [
        t
        for t in baseline_trials
        if t.model not in by_model
        and t.task_id in run_info.task_ids
        and versions.get(t.task_id, t.task_sha256) == t.task_sha256
    ]
    by_model.update(_group(stored, lambda t: t.model))

    names = _ordered([*run_info.models, *run_info.baselines, *by_model])
    present = [n for n in names if by_model.get(n)]
    notes = tuple(f"{n}: no results" for n in names if not by_model.get(n))
    models = tuple(_model_summary(n, by_model[n], run_info) for n in present)
    tiers = tuple(
        TierSummary(n, tier, _rate(rows))
        for n in present
        for tier, rows in sorted(_group(by_model[n], lambda t: t.tier).items())
    )
    task_order = _ordered([*run_info.task_ids, *(t.task_id for n in present for t in by_model[n])])
    tier_of = {t.task_id: t.tier for n in present for t in by_model[n]}
    grid = tuple(
        GridRow(task, tier_of[task], tuple(_cell(by_model[n], task) for n in present))
        for task in sorted((t for t in task_order if t in tier_of), key=lambda t: tier_of[t])
    )
    hosted = [m.name for m in models if m.kind == "hosted"]
    others = [m.name for m in models if m.kind != "hosted"]
    paired = tuple(_paired(n, by_model[n], b, by_model[b]) for n in others for b in hosted)
    summary = Summary(
        run_id=run_info.run_id,
        started_at=run_info.started_at,
        finished_at=run_info.finished_at,
        host=_host_line(run_info),
        localagent_version=run_info.localagent_version,
        k=run_info.trials,
        temperature=run_info.temperature,
        tool_mode=run_info.tool_mode,
        price_table=run_info.price_table,
        models=models,
        tiers=tiers,
        grid=grid,
        paired=paired,
        verdicts=(),
        trials=tuple(_ref(t) for n in present for t in sorted(by_model[n], key=_trial_key(task_order))),
        notes=notes,
    )
    return dataclasses.replace(summary, verdicts=_verdicts(summary))


def _group(rows: Iterable[TrialResult], key) -> dict[Any, list[TrialResult]]:
    groups: dict[Any, list[TrialResult]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return dict(groups)


def _ordered(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _trial_key(task_order: list[str]):
    position = {task: i for i, task in enumerate(task_order)}
    return lambda t: (t.tier, position.get(t.task_id, len(position)), t.task_id, t.trial)


def _rate(rows: Sequence[TrialResult]) -> Rate:
    successes = sum(t.success for t in rows)
    lo, hi = metrics.wilson_interval(successes, len(rows))
    return Rate(successes, len(rows), successes / len(rows) if rows else 0.0, lo, hi)


def _max(values: Iterable[Any]) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _model_summary(name: str, rows: list[TrialResult], run_info: RunInfo) -> ModelSummary:
    by_task = _group(rows, lambda t: t.task_id)
    k = max(len(v) for v in by_task.values())
    solved = sum(t.success for t in rows)
    total_cost = sum(t.cost_usd for t in rows)
    from_here = rows[0].run_id == run_info.run_id
    return ModelSummary(
        name=name,
        kind=rows[0].model_kind,
        tasks=len(by_task),
        trials=len(rows),
        k=k,
        passed=_rate(rows),
        pass_hat_k=(
            metrics.pass_hat_k([(len(v), sum(t.success for t in v)) for v in by_task.values()], k)
            if k > 1
            else None
        ),
        median_wall_s=metrics.median(t.wall_s for t in rows),
        tokens_per_solved=metrics.per_solved(sum(t.input_tokens + t.output_tokens for t in rows), solved),
        cost_per_solved=metrics.per_solved(total_cost, solved),
        total_cost_usd=total_cost,
        suite_cost_usd=total_cost / len(rows) * len(by_task),
        peak_rss_bytes=_max(t.peak_rss_bytes for t in rows),
        peak_anon_bytes=_max(t.peak_anon_bytes for t in rows),
        peak_file_bytes=_max(t.peak_file_bytes for t in rows),
        model_file_bytes=_max(t.model_file_bytes for t in rows),
        median_decode_tokens_per_s=metrics.median(t.decode_tokens_per_s for t in rows),
        median_ttft_s=metrics.median(t.ttft_s_mean for t in rows),
        load_s=run_info.load_s.get(name) if from_here else None,
        price_as_of=_max(t.price_as_of for t in rows),
        failures=tuple(
            sorted(
                Counter(t.failure_mode or "unclassified" for t in rows if not t.success).items(),
                key=lambda kv: (-kv[1], kv[0]),
            )
        ),
        source_run_id=rows[0].run_id,
        source_date=None if from_here else max(t.finished_at for t in rows)[:10],
    )


def _cell(rows: list[TrialResult], task_id: str) -> Cell | None:
    mine = [t for t in rows if t.task_id == task_id]
    return Cell(sum(t.success for t in mine), len(mine)) if mine else None


def _paired(name: str, rows: list[TrialResult], baseline: str, base_rows: list[TrialResult]) -> Paired:
    def outcomes(trials: list[TrialResult]) -> dict[tuple[str, str], list[bool]]:
        groups = _group(trials, lambda t: (t.task_id, t.task_sha256))
        return {key: [t.success for t in v] for key, v in groups.items()}

    p = metrics.paired(outcomes(rows), outcomes(base_rows))
    return Paired(name, baseline, p.common, p.wins, p.losses, p.ties, p.p_value)


def _ref(t: TrialResult) -> TrialRef:
    return TrialRef(
        t.model, t.task_id, t.tier, t.trial, t.success, t.failure_mode, t.wall_s, t.cost_usd, t.run_id, t.trace_path
    )


def _host_line(run_info: RunInfo) -> str:
    h = run_info.host
    gpu = "" if h.gpu in ("", "none") else f", GPU {h.gpu}"
    return (
        f"{h.cpu}, {h.physical_cores} cores / {h.logical_cores} threads, "
        f"{format_bytes(h.ram_bytes, DASH)} RAM{gpu}, {h.os}, Python {h.python}"
    )


# --- reading a run from the store ---------------------------------------------------------


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


# --- the verdict -------------------------------------------------------------------------


def _verdicts(s: Summary) -> tuple[Verdict, ...]:
    """One per local (or pseudo) model, against the first baseline with results; a run with
    no baseline, or with baselines only, gets figures that stand on their own."""
    hosted = [m for m in s.models if m.kind == "hosted"]
    others = [m for m in s.models if m.kind != "hosted"]
    tiers: dict[str, dict[int, Rate]] = defaultdict(dict)
    for t in s.tiers:
        tiers[t.model][t.tier] = t.passed
    if not others or not hosted:
        return tuple(Verdict(m.name, _absolute_verdict(m, tiers[m.name])) for m in others or hosted)
    b = hosted[0]
    return tuple(Verdict(m.name, _relative_verdict(m, b, tiers[m.name], tiers[b.name])) for m in others)


def _solves(m: ModelSummary) -> str:
    r = m.passed
    figures = f"({fmt_pct(r.rate)}, {fmt_interval(r.lo, r.hi)})"
    if m.k == 1:
        return f"solves {r.successes}/{r.n} {figures}"
    return f"passes {r.successes}/{r.n} trials {figures}, pass^{m.k} {fmt_pct(m.pass_hat_k)}"


def _absolute_verdict(m: ModelSummary, tiers: dict[int, Rate]) -> str:
    parts = [f"{m.name} {_solves(m)}"]
    if len(tiers) > 1:
        # ties go to the lower tier: the easier tier is the less surprising one to be best at
        best = max(tiers, key=lambda tier: (tiers[tier].rate, -tier))
        worst = min(tiers, key=lambda tier: (tiers[tier].rate, -tier))
        if tiers[best].rate != tiers[worst].rate:
            parts.append(
                f"best on tier {best} ({tiers[best].successes}/{tiers[best].n}), "
                f"weakest on tier {worst} ({tiers[worst].successes}/{tiers[worst].n})"
            )
    parts.append(f"{fmt_usd(m.suite_cost_usd)} for the suite")
    parts.append(f"median {fmt_seconds(m.median_wall_s)} per task")
    if m.peak_rss_bytes is not None:
        parts.append(f"peak RSS {format_bytes(m.peak_rss_bytes, DASH)}")
    return "; ".join(parts)


def _relative_verdict(m: ModelSummary, b: ModelSummary, mine: dict[int, Rate], theirs: dict[int, Rate]) -> str:
    base = f"{b.passed.successes}/{b.passed.n}" + ("" if b.k == 1 else " trials")
    if b.source_date:
        base += f" (stored run of {b.source_date})"
    parts = [f"{m.name} {_solves(m)} vs {b.name} {base}"]
    compared = sorted(mine.keys() & theirs.keys())
    parity = [t for t in compared if at_parity(mine[t], theirs[t])]
    ahead = [t for t in compared if t not in parity and mine[t].rate > theirs[t].rate]
    if not parity:
        parts.append("no tier at parity")
    elif len(parity) == len(compared) > 1:
        parts.append("parity on every tier")
    else:
        parts.append(f"{fmt_tiers(parity)} parity")
    if ahead:
        parts.append(f"ahead on {fmt_tiers(ahead)}")
    parts.append(f"{fmt_usd(m.suite_cost_usd)} vs {fmt_usd(b.suite_cost_usd)} for the suite")
    if m.median_wall_s and b.median_wall_s:
        parts.append(fmt_speed(m.median_wall_s / b.median_wall_s))
    return "; ".join(parts)


def at_parity(a: Rate, b: Rate) -> bool:
    """Equal counts, or Wilson intervals that overlap: the data cannot tell the two apart."""
    return (a.successes, a.n) == (b.successes, b.n) or (a.lo <= b.hi and b.lo <= a.hi)


# --- formatting ---------------------------------------------------------------------------


def fmt_pct(x: float | None) -> str:
    return DASH if x is None else f"{x * 100:.0f}%"


def fmt_interval(lo: float, hi: float) -> str:
    return f"{lo * 100:.0f}–{hi * 100:.0f}%"


def fmt_usd(x: float | None) -> str:
    if x is None:
        return DASH
    if x == 0:
        return "$0"
    return f"${x:.4f}" if x < 0.01 else f"${x:.2f}"


def fmt_seconds(x: float | None) -> str:
    if x is None:
        return DASH
    if x < 0.01:
        return f"{x * 1000:.1f} ms"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.1f} s"


def fmt_number(x: float | None, digits: int = 0) -> str:
    return DASH if x is None else f"{x:,.{digits}f}"


def fmt_speed(ratio: float) -> str:
    if f"{ratio:.1f}" == "1.0":
        return "as fast"
    return f"{ratio:.1f}x slower" if ratio > 1 else f"{1 / ratio:.1f}x faster"


def fmt_tiers(tiers: list[int]) -> str:
    """[1, 2] -> 'tier 1–2'; [1, 3, 4] -> 'tiers 1 and 3–4'."""
    runs: list[list[int]] = []
    for t in tiers:
        if runs and t == runs[-1][-1] + 1:
            runs[-1].append(t)
        else:
            runs.append([t])
    texts = [str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs]
    word = "tier" if len(runs) == 1 else "tiers"
    joined = texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]
    return f"{word} {joined}"


# --- tables, shared by every renderer ----------------------------------------------------

Mark = Literal["", "pass", "fail", "partial", "none"]


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]  # a newline breaks a header in the terminal and HTML
    rows: tuple[tuple[str, ...], ...]
    marks: tuple[tuple[Mark, ...], ...] = ()  # per cell, for colour; empty: no marks
    numeric_from: int = 1  # columns from this index on are right-aligned


def _tables(s: Summary) -> list[Table]:
    names = [m.name for m in s.models]
    success = Table(
        "Success",
        ("Model", "Kind", "Tasks", "Passed", "Rate", "95% CI", f"pass^{s.k}" if s.k > 1 else "pass^k"),
        tuple(
            (
                m.name,
                m.kind,
                str(m.tasks),
                f"{m.passed.successes}/{m.passed.n}",
                fmt_pct(m.passed.rate),
                fmt_interval(m.passed.lo, m.passed.hi),
                fmt_pct(m.pass_hat_k),
            )
            for m in s.models
        ),
        numeric_from=2,
    )
    speed = Table(
        "Speed and cost",
        ("Model", "Wall\nper task", "TTFT", "Decode\ntok/s", "Load", "Tokens\nper solved", "$ per\nsolved", "Suite\n$"),
        tuple(
            (
                m.name,
                fmt_seconds(m.median_wall_s),
                fmt_seconds(m.median_ttft_s),
                fmt_number(m.median_decode_tokens_per_s, 1),
                fmt_seconds(m.load_s),
                fmt_number(m.tokens_per_solved),
                fmt_usd(m.cost_per_solved),
                fmt_usd(m.suite_cost_usd),
            )
            for m in s.models
        ),
    )
    tables = [success, speed]
    measured = [m for m in s.models if m.peak_rss_bytes is not None]
    if measured:
        tables.append(
            Table(
                "Memory (peak during a trial)",
                ("Model", "Peak RSS", "Anonymous", "File-backed", "Model file"),
                tuple(
                    (
                        m.name,
                        format_bytes(m.peak_rss_bytes, DASH),
                        format_bytes(m.peak_anon_bytes, DASH),
                        format_bytes(m.peak_file_bytes, DASH),
                        format_bytes(m.model_file_bytes, DASH),
                    )
                    for m in measured
                ),
            )
        )
    tier_rates = {(t.model, t.tier): t.passed for t in s.tiers}
    tier_list = sorted({t.tier for t in s.tiers})
    tables.append(
        Table(
            "Per tier",
            ("Tier", *names),
            tuple(
                (str(tier), *(_tier_cell(tier_rates.get((n, tier))) for n in names)) for tier in tier_list
            ),
        )
    )
    tables.append(
        Table(
            "Task × model" + (f" (passes of {s.k} trials)" if s.k > 1 else ""),
            ("Task", "Tier", *names),
            tuple((r.task_id, str(r.tier), *(_grid_cell(c) for c in r.cells)) for r in s.grid),
            marks=tuple(("", "", *(_grid_mark(c) for c in r.cells)) for r in s.grid),
        )
    )
    modes = _ordered(mode for m in s.models for mode, _ in m.failures)
    if modes:
        counts = {m.name: dict(m.failures) for m in s.models}
        tables.append(
            Table(
                "Failure modes (trials)",
                ("Failure mode", *names),
                tuple((mode, *(str(counts[n].get(mode, 0)) for n in names)) for mode in modes),
            )
        )
    if s.paired:
        tables.append(
            Table(
                "Paired against each baseline (common tasks)",
                ("Model", "Baseline", "Common", "Wins", "Losses", "Ties", "Sign test p"),
                tuple(
                    (p.model, p.baseline, str(p.common), str(p.wins), str(p.losses), str(p.ties), f"{p.p_value:.2g}")
                    for p in s.paired
                ),
                numeric_from=2,
            )
        )
    return tables


def _tier_cell(r: Rate | None) -> str:
    if r is None:
        return DASH
    return f"{r.successes}/{r.n} ({fmt_pct(r.rate)}, {fmt_interval(r.lo, r.hi)})"


def _grid_cell(c: Cell | None) -> str:
    if c is None:
        return "·"
    if c.trials == 1:
        return "✓" if c.passes else "✗"
    return f"{c.passes}/{c.trials}"


def _grid_mark(c: Cell | None) -> Mark:
    if c is None:
        return "none"
    if c.passes == c.trials:
        return "pass"
    return "fail" if c.passes == 0 else "partial"


def _header_lines(s: Summary) -> list[str]:
    lines = [
        f"Run {s.run_id} · started {s.started_at}" + (f" · finished {s.finished_at}" if s.finished_at else ""),
        f"{len(s.grid)} tasks × {s.k} trial{'s' if s.k != 1 else ''} · temperature {s.temperature:g}"
        f" · tool mode {s.tool_mode} · localagent {s.localagent_version}",
        f"Host: {s.host}",
        f"Prices: {s.price_table}",
    ]
    for m in s.models:
        if m.source_date:
            lines.append(f"{m.name}: stored results from run {m.source_run_id} ({m.source_date})")
    return lines + list(s.notes)


# --- terminal ----------------------------------------------------------------------------

_STYLES = {"pass": "green", "fail": "red", "partial": "yellow", "none": "dim", "": ""}


def render_terminal(summary: Summary, console) -> None:
    """Rich tables; rich drops colours by itself when the console is not a terminal."""
    from rich import box
    from rich.table import Table as RichTable
    from rich.text import Text

    for line in _header_lines(summary):
        console.print(Text(line, style="dim"))
    for spec in _tables(summary):
        table = RichTable(title=spec.title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for i, header in enumerate(spec.headers):
            table.add_column(header, justify="right" if i >= spec.numeric_from else "left", no_wrap=i == 0)
        for r, row in enumerate(spec.rows):
            marks = spec.marks[r] if spec.marks else ("",) * len(row)
            table.add_row(*(Text(cell, style=_STYLES[mark]) for cell, mark in zip(row, marks)))
        console.print(table)
    if summary.verdicts:
        verdicts = RichTable.grid(padding=(0, 1))
        verdicts.add_column(no_wrap=True)
        verdicts.add_column()
        for v in summary.verdicts:
            verdicts.add_row("•", v.text)
        console.print(Text("Verdict", style="bold"))
        console.print(verdicts)


# --- JSON and Markdown -------------------------------------------------------------------


def to_json(summary: Summary) -> str:
    return json.dumps({"schema_version": SCHEMA_VERSION, **dataclasses.asdict(summary)}, indent=2)


def to_markdown(summary: Summary) -> str:
    out = [f"## Bench run {summary.run_id}", "", *(f"- {line}" for line in _header_lines(summary)), ""]
    if summary.verdicts:
        out += ["**Verdict**", "", *(f"- {v.text}" for v in summary.verdicts), ""]
    for spec in _tables(summary):
        out += [f"### {spec.title}", "", _md_row([h.replace("\n", " ") for h in spec.headers])]
        out.append(
            "|" + "|".join("---:" if i >= spec.numeric_from else "---" for i in range(len(spec.headers))) + "|"
        )
        out += [_md_row(row) for row in spec.rows]
        out.append("")
    return "\n".join(out)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


# --- HTML --------------------------------------------------------------------------------

TRACE_EMBED_LIMIT = 200_000  # bytes of one trace embedded in the page; the link has all


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: as cheap (x) or cheaper and as
    successful (y) or more, better in one. Sorted by x."""
    front = [
        i
        for i, (x, y) in enumerate(points)
        if not any(x2 <= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)
    ]
    return sorted(front, key=lambda i: points[i])


def render_html(
    summary: Summary, run_dir: Path | None, out_path: Path, other_runs: Mapping[str, Path | None] | None = None
) -> Path:
    """A standalone page: verdicts, tables, two charts (inline SVG), every trial with its
    trace linked (relative to the page) and embedded, collapsed. `run_dir` is this run's
    folder; `other_runs` maps the runs stored baselines come from to their folders (None or
    absent: its traces are not on this machine)."""
    charts = [
        _chart(summary, "suite_cost_usd", "Suite cost (USD)", "Success against cost"),
        _chart(summary, "median_wall_s", "Median wall time per task (s)", "Success against time"),
    ]
    out_path = Path(out_path)
    body = [
        f"<h1>Bench run {_e(summary.run_id)}</h1>",
        "<ul class='meta'>" + "".join(f"<li>{_e(line)}</li>" for line in _header_lines(summary)) + "</ul>",
    ]
    if summary.verdicts:
        body.append("<h2>Verdict</h2><ul>" + "".join(f"<li>{_e(v.text)}</li>" for v in summary.verdicts) + "</ul>")
    body.append("<div class='charts'>" + "".join(f"<figure>{svg}</figure>" for svg in charts) + "</div>")
    body += [_html_table(spec) for spec in _tables(summary)]
    folders = {**(other_runs or {}), summary.run_id: run_dir}
    body.append(_html_trials(summary, folders, out_path.parent))
    page = _PAGE.format(title=_e(f"localagent bench {summary.run_id}"), body="\n".join(body))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_path, page)
    return out_path


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _chart(summary: Summary, field: str, xlabel: str, title: str) -> str:
    return _svg(_figure(summary, field, xlabel, title))


def _figure(summary: Summary, field: str, xlabel: str, title: str):
    """Success (with its interval) against `field`, one point per model, the Pareto frontier
    dashed. A bare Figure, not pyplot: no GUI backend and no global state."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("matplotlib", "report", "Drawing the HTML report's charts") from None

    models = [m for m in summary.models if getattr(m, field) is not None]
    points = [(float(getattr(m, field)), m.passed.rate * 100) for m in models]
    fig = Figure(figsize=(5.6, 3.8))
    ax = fig.subplots()
    for m, (x, y) in zip(models, points):
        # clamped: at 0/n and n/n rounding can put a bound a hair past the rate
        err = [[max(0.0, y - m.passed.lo * 100)], [max(0.0, m.passed.hi * 100 - y)]]
        ax.errorbar(x, y, yerr=err, fmt="o", color="#d62728" if m.kind == "hosted" else "#1f77b4", capsize=3)
        ax.annotate(m.name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    front = pareto_front(points)
    if front:
        xs, ys = [points[i][0] for i in front], [points[i][1] for i in front]
        # a ring around each point on the frontier, so a frontier of one point shows too
        ax.plot(xs, ys, "--o", color="#2ca02c", linewidth=1.5, markersize=12, fillstyle="none", label="Pareto frontier")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Trials passed (%), Wilson 95%")
    ax.set_ylim(-5, 112)
    ax.margins(x=0.15)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _svg(fig) -> str:
    import io

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # inline: without the XML declaration and doctype


def _html_table(spec: Table) -> str:
    head = "".join(f"<th>{_e(h).replace(chr(10), '<br>')}</th>" for h in spec.headers)
    rows = []
    for r, row in enumerate(spec.rows):
        marks = spec.marks[r] if spec.marks else ("",) * len(row)
        cells = "".join(
            f"<td class='{'num ' if i >= spec.numeric_from else ''}{mark}'>{_e(cell)}</td>"
            for i, (cell, mark) in enumerate(zip(row, marks))
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<h2>{_e(spec.title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _href(path: Path, page_dir: Path) -> str:
    """Relative to the page, so the page and the runs can move together."""
    try:
        return quote(Path(os.path.relpath(path.resolve(), page_dir.resolve())).as_posix())
    except ValueError:  # another drive (Windows): no relative path exists
        return path.resolve().as_uri()


def _html_trials(summary: Summary, folders: Mapping[str, Path | None], page_dir: Path) -> str:
    rows = []
    for ref in summary.trials:
        folder = folders.get(ref.run_id)
        if not ref.trace_path:
            trace = "no trace"
        elif folder is None:
            trace = f"in run {_e(ref.run_id)}, not on this machine"
        else:
            trace = _html_trace(Path(folder), ref.trace_path, page_dir)
        outcome = "pass" if ref.success else f"fail ({ref.failure_mode or 'unknown'})"
        rows.append(
            f"<tr><td>{_e(ref.model)}</td><td>{_e(ref.task_id)}</td><td class='num'>{ref.tier}</td>"
            f"<td class='num'>{ref.trial}</td><td class='{'pass' if ref.success else 'fail'}'>{_e(outcome)}</td>"
            f"<td class='num'>{_e(fmt_seconds(ref.wall_s))}</td><td class='num'>{_e(fmt_usd(ref.cost_usd))}</td>"
            f"<td>{trace}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("Model", "Task", "Tier", "Trial", "Outcome", "Wall", "Cost", "Trace"))
    return f"<h2>Trials</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _html_trace(folder: Path, trace_path: str, page_dir: Path) -> str:
    """A trace linked and embedded (its first TRACE_EMBED_LIMIT bytes), when it is a regular
    file inside its run folder; otherwise why it is not shown."""
    try:
        path = trace_file(folder, trace_path)
        if path is None:
            return f"missing: {_e(folder / trace_path)}"
        data, more = read_trace(path, TRACE_EMBED_LIMIT)
    except ResultsError as exc:
        return f"not shown: {_e(exc.message)}"
    text = data.decode("utf-8", errors="replace") + ("\n… (clipped; open the file)" if more else "")
    return (
        f"<a href='{_e(_href(path, page_dir))}'>{_e(trace_path)}</a>"
        f"<details><summary>show</summary><pre>{_e(text)}</pre></details>"
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.pass {{ color: #176f2c; }} .fail {{ color: #b3261e; }} .partial {{ color: #8a6d00; }} .none {{ color: #999; }}
.meta {{ color: #555; font-size: 0.9em; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1em; }} figure {{ margin: 0; }}
.charts svg {{ max-width: 100%; height: auto; }}
pre {{ white-space: pre-wrap; font-size: 0.8em; background: #f6f6f6; padding: 0.5em; max-height: 30em; overflow: auto; }}
</style></head>
<body>
{body}
</body></html>
"""
