"""The tables every renderer draws (terminal, Markdown, HTML), built once from the figures
as text cells with a mark per cell for colour, so the three cannot disagree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from localagent.bench.figures import Cell, Rate, Summary
from localagent.bench.formatting import DASH, fmt_interval, fmt_number, fmt_pct, fmt_seconds, fmt_usd
from localagent.units import format_bytes

Mark = Literal["", "pass", "fail", "partial", "none"]


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]  # a newline breaks a header in the terminal and HTML
    rows: tuple[tuple[str, ...], ...]
    marks: tuple[tuple[Mark, ...], ...] = ()  # per cell, for colour; empty: no marks
    numeric_from: int = 1  # columns from this index on are right-aligned


def tables_of(s: Summary) -> list[Table]:
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
    energy = [m for m in s.models if m.median_energy_j is not None]
    if energy:  # its own table: an estimate of the machine's draw, never API dollars
        tables.append(
            Table(
                "Energy (estimate, local trials; not in the $ above)",
                ("Model", "Joules\nper trial", "Measured by", "Suite energy $\n(at --energy-price)"),
                tuple(
                    (m.name, fmt_number(m.median_energy_j, 1), m.energy_method or DASH, fmt_usd(m.suite_energy_usd))
                    for m in energy
                ),
            )
        )
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
            tuple((str(tier), *(tier_cell(tier_rates.get((n, tier))) for n in names)) for tier in tier_list),
        )
    )
    tables.append(grid_table("Task × model" + (f" (passes of {s.k} trials)" if s.k > 1 else ""), names, s.grid))
    modes = list(dict.fromkeys(mode for m in s.models for mode, _ in m.failures))  # first seen first
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


class TaskCells(Protocol):
    """A row of a task grid: the report's GridRow, the map's TaskRow."""

    @property
    def task_id(self) -> str: ...
    @property
    def tier(self) -> int: ...
    @property
    def cells(self) -> Sequence[Cell | None]: ...


def grid_table(title: str, columns: Sequence[str], rows: Sequence[TaskCells]) -> Table:
    """Task × model (or variant): a row per task with its tier, a marked cell per column."""
    return Table(
        title,
        ("Task", "Tier", *columns),
        tuple((r.task_id, str(r.tier), *(grid_cell(c) for c in r.cells)) for r in rows),
        marks=tuple(("", "", *(grid_mark(c) for c in r.cells)) for r in rows),
    )


def tier_cell(r: Rate | None) -> str:
    """A rate with its interval in one cell: `5/6 (83%, 44–97%)`; a dash when not run."""
    if r is None:
        return DASH
    return f"{r.successes}/{r.n} ({fmt_pct(r.rate)}, {fmt_interval(r.lo, r.hi)})"


def grid_cell(c: Cell | None) -> str:
    """A task's trials in one cell: ✓ or ✗ for one, passes/trials for more, · when not run."""
    if c is None:
        return "·"
    if c.trials == 1:
        return "✓" if c.passes else "✗"
    return f"{c.passes}/{c.trials}"


def grid_mark(c: Cell | None) -> Mark:
    """The colour of a grid cell: every trial passed, none, some, or not run."""
    if c is None:
        return "none"
    if c.passes == c.trials:
        return "pass"
    return "fail" if c.passes == 0 else "partial"


def header_lines(s: Summary) -> list[str]:
    """What the run was and where its figures come from, above the tables."""
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
