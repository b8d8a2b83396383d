"""The capability map and the recommendations as tables (printed by render.print_tables),
JSON, and one HTML page with a task x variant heatmap and Pareto charts. The table cells, the
charts and the page are the report's own (tables.py, charts.py, html_page.py), so a map and a
report write the same figure the same way."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from localagent.bench.capability import CapabilityMap, Group
from localagent.bench.charts import HOSTED_COLOUR, LOCAL_COLOUR, ChartPoint, finished_svg, success_figure
from localagent.bench.formatting import DASH, fmt_interval, fmt_number, fmt_pct, fmt_seconds, fmt_usd
from localagent.bench.html_page import chart_row, escape, html_table, meta_list, write_page
from localagent.bench.recommend import Choice, Recommendation
from localagent.bench.schema import SCHEMA_VERSION
from localagent.bench.tables import Table, grid_table, tier_cell
from localagent.units import format_bytes

_COLOURS = {"hosted": HOSTED_COLOUR, "local": LOCAL_COLOUR, "pseudo": "#7f7f7f"}


def header_lines(m: CapabilityMap) -> list[str]:
    lines = [
        f"{_count(m.trials, 'trial')} from {_count(m.runs, 'run')}, {m.first_date} to {m.last_date}; "
        f"{_count(len(m.tasks), 'task')} (latest version of each) × {_count(len(m.variants), 'variant')}",
        "Success pools every host; wall time is per host profile: " + "; ".join(m.hosts),
    ]
    return lines + list(m.notes)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def group_table(g: Group) -> Table:
    table = _group_table(g)
    if all(s.median_energy_j is None for s in g.variants):
        return table
    # energy is its own column, an estimate, never inside the $ columns
    energy = tuple(fmt_number(s.median_energy_j, 1) for s in g.variants)
    return dataclasses.replace(
        table,
        headers=(*table.headers, "Energy J/trial\n(estimate)"),
        rows=tuple((*row, e) for row, e in zip(table.rows, energy, strict=True)),
    )


def _group_table(g: Group) -> Table:
    return Table(
        f"{g.title[0].upper()}{g.title[1:]} ({_count(len(g.task_ids), 'task')})",
        (
            "Variant",
            "Kind",
            "Tasks",
            "Passed",
            "Rate",
            "95% CI",
            "pass^k",
            "Wall\nper task",
            "Tokens\nper solved",
            "$ per\nsolved",
            "Peak RSS",
            "Last run",
        ),
        tuple(
            (
                s.label,
                s.variant.kind,
                str(s.tasks),
                f"{s.passed.successes}/{s.passed.n}",
                fmt_pct(s.passed.rate),
                fmt_interval(s.passed.lo, s.passed.hi),
                f"{fmt_pct(s.pass_hat_k)} (k={s.k})" if s.pass_hat_k is not None else DASH,
                fmt_seconds(s.median_wall_s),
                fmt_number(s.tokens_per_solved),
                fmt_usd(s.cost_per_solved),
                format_bytes(s.peak_rss_bytes, DASH),
                s.last_date,
            )
            for s in g.variants
        ),
        numeric_from=2,
    )


def _matrix(title: str, first: str, groups: Sequence[Group], variants: Sequence[str]) -> Table:
    rates = {(g.name, s.label): s.passed for g in groups for s in g.variants}
    return Table(
        title,
        (first, "Tasks", *variants),
        tuple((g.name, str(len(g.task_ids)), *(tier_cell(rates.get((g.name, v))) for v in variants)) for g in groups),
    )


def map_tables(m: CapabilityMap) -> list[Table]:
    all_tasks = m.groups[0]
    tiers = [g for g in m.groups if g.kind == "tier"]
    tags = [g for g in m.groups if g.kind == "tag"]
    tables = [group_table(all_tasks)]
    if len(tiers) > 1:
        tables.append(_matrix("Success by tier", "Tier", tiers, m.variants))
    if tags:
        tables.append(_matrix("Success by tag", "Tag", tags, m.variants))
    tables.append(
        Table(
            "Speed per host profile (all tasks)",
            ("Variant", "Host", "Trials", "Wall\nper task", "Decode\ntok/s"),
            tuple(
                (
                    s.label,
                    h.host,
                    str(h.trials),
                    fmt_seconds(h.median_wall_s),
                    fmt_number(h.median_decode_tokens_per_s, 1),
                )
                for s in all_tasks.variants
                for h in s.speeds
            ),
            numeric_from=2,
        )
    )
    tables.append(grid_table("Task × variant (passes of trials)", m.variants, m.tasks))
    return tables


def map_json(m: CapabilityMap) -> str:
    return json.dumps({"schema_version": SCHEMA_VERSION, **dataclasses.asdict(m)}, indent=2)


def recommendations_json(recs: Sequence[Recommendation]) -> str:
    return json.dumps(
        {"schema_version": SCHEMA_VERSION, "recommendations": [dataclasses.asdict(r) for r in recs]}, indent=2
    )


def recommendation_lines(r: Recommendation) -> list[str]:
    """A recommendation as text: the headline, the frontier, what would settle the rest."""
    head = f"{r.group} ({r.tasks} task{'s' if r.tasks != 1 else ''}), prefer {r.prefer}, bar {fmt_pct(r.min_success)}:"
    lines = [head, f"  {r.text}"]
    for c in r.frontier:
        lines.append(f"  frontier: {_cite(c)}")
    cited = r.use or r.best
    if cited is not None:
        lines.append(f"  measured on: {'; '.join(cited.hosts)}")
    if r.cheapest_meeting is not None:
        lines.append(f"  cheapest at the bar: {_cite(r.cheapest_meeting)}")
    for s in r.undecided:
        if s.trials_needed is None:
            lines.append(
                f"  too little evidence for {s.label}: its rate sits at the bar; no number of trials settles it"
            )
        else:
            more = f"{s.trials_needed} more trial{'s' if s.trials_needed != 1 else ''}"
            lines.append(f"  too little evidence for {s.label}: about {more} settle it: {s.command}")
        if s.repeats:
            lines.append(
                "    (at temperature 0 it answers alike every trial: more tasks, or a temperature above 0, add more evidence)"
            )
    return lines


def _cite(c: Choice) -> str:
    figures = f"{c.label}: {fmt_pct(c.rate)} ({fmt_interval(c.lo, c.hi)}, n={c.n})"
    return f"{figures}; {c.versus}" if c.versus else figures


# --- the HTML page ---


def render_map_html(m: CapabilityMap, out_path: Path, recs: Sequence[Recommendation] = ()) -> Path:
    """A standalone page: the header, the recommendations, two Pareto charts across variants
    (success against $ per solved task on a scale where $0 shows, and against wall time),
    the task x variant heatmap and the tables."""
    body = [
        "<h1>localagent capability map</h1>",
        meta_list(header_lines(m)),
    ]
    if recs:
        items = "".join(f"<li><pre>{escape(chr(10).join(recommendation_lines(r)))}</pre></li>" for r in recs)
        body.append(f"<h2>Recommendations</h2><ul>{items}</ul>")
    g = m.groups[0]
    charts = [
        pareto_svg(g, "cost_per_solved", "$ per solved task (symlog: $0 at the left)", "cost", symlog=True),
        pareto_svg(g, "median_wall_s", "Median wall time per task (s, log)", "time", symlog=False),
    ]
    body.append(chart_row(charts))
    body.append(_heatmap(m))
    body += [html_table(spec) for spec in map_tables(m)[:-1]]  # the last, the grid, is the heatmap
    return write_page(out_path, "localagent capability map", body)


def _heatmap(m: CapabilityMap) -> str:
    head = "".join(f"<th class='v'>{escape(v)}</th>" for v in m.variants)
    rows = []
    for r in m.tasks:
        cells = []
        for c in r.cells:
            if c is None:
                cells.append("<td class='none'>·</td>")
                continue
            rate = c.passes / c.trials
            # red (0%) through yellow to green (100%)
            cells.append(
                f"<td class='num' style='background: hsl({rate * 120:.0f}, 65%, 78%)' "
                f"title='{c.passes}/{c.trials}'>{c.passes}/{c.trials}</td>"
            )
        tags = ", ".join(r.tags)
        rows.append(
            f"<tr><td>{escape(r.task_id)}</td><td class='num'>{r.tier}</td><td>{escape(tags)}</td>{''.join(cells)}</tr>"
        )
    return (
        "<h2>Task × variant heatmap (passes of trials)</h2><table><thead><tr><th>Task</th><th>Tier</th><th>Tags</th>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def pareto_svg(group: Group, field: str, xlabel: str, what: str, symlog: bool) -> str:
    """Success (with its Wilson interval) against a VariantStats field, one point per
    variant, the Pareto frontier dashed; variants without the figure are left out."""
    points = [
        ChartPoint(s.label, float(getattr(s, field)), s.passed, _COLOURS.get(s.variant.kind, LOCAL_COLOUR))
        for s in group.variants
        if getattr(s, field) is not None
    ]
    fig, ax = success_figure(points, (6.4, 4.2), 7, "Drawing the map's charts")
    positive = [p.x for p in points if p.x > 0]
    if symlog:
        # linear around 0, so $0 local runs sit at the left edge and paid runs spread out
        linthresh = min(positive) / 10 if positive else 1e-4
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.set_xlim(-linthresh / 2, max(positive) * 3 if positive else linthresh * 100)
    elif positive and len(positive) == len(points):
        ax.set_xscale("log")
        ax.margins(x=0.15)
    return finished_svg(fig, ax, xlabel, f"{group.title}: success against {what}, one point per variant")
