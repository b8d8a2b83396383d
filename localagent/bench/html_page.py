"""The report as one standalone HTML page: header, verdicts, the two charts, the tables, and
every trial with its trace linked relative to the page and embedded, collapsed. The page and
its parts (header, chart row, table) are the map's page too (map_render.py)."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from localagent.bench.charts import chart_svg
from localagent.bench.figures import Summary
from localagent.bench.formatting import fmt_seconds, fmt_usd
from localagent.bench.tables import Table, header_lines, tables_of
from localagent.bench.tracepaths import read_trace, trace_file
from localagent.errors import ResultsError
from localagent.files import atomic_write

TRACE_EMBED_LIMIT = 200_000  # bytes of one trace embedded in the page; the link has all


def render_html(
    summary: Summary, run_dir: Path | None, out_path: Path, other_runs: Mapping[str, Path | None] | None = None
) -> Path:
    """A standalone page: verdicts, tables, two charts (inline SVG), every trial with its
    trace linked (relative to the page) and embedded, collapsed. `run_dir` is this run's
    folder; `other_runs` maps the runs stored baselines come from to their folders (None or
    absent: its traces are not on this machine)."""
    charts = [
        chart_svg(summary, "suite_cost_usd", "Suite cost (USD)", "Success against cost"),
        chart_svg(summary, "median_wall_s", "Median wall time per task (s)", "Success against time"),
    ]
    body = [
        f"<h1>Bench run {escape(summary.run_id)}</h1>",
        meta_list(header_lines(summary)),
    ]
    if summary.verdicts:
        body.append("<h2>Verdict</h2><ul>" + "".join(f"<li>{escape(v.text)}</li>" for v in summary.verdicts) + "</ul>")
    body.append(chart_row(charts))
    body += [html_table(spec) for spec in tables_of(summary)]
    folders = {**(other_runs or {}), summary.run_id: run_dir}
    body.append(_html_trials(summary, folders, Path(out_path).parent))
    return write_page(out_path, f"localagent bench {summary.run_id}", body)


def escape(text: object) -> str:
    """`text` as HTML text or an attribute value."""
    return html.escape(str(text), quote=True)


def meta_list(lines: Sequence[str]) -> str:
    """The header lines above a page's figures."""
    return "<ul class='meta'>" + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>"


def chart_row(svgs: Sequence[str]) -> str:
    """Inline <svg> charts side by side."""
    return "<div class='charts'>" + "".join(f"<figure>{svg}</figure>" for svg in svgs) + "</div>"


def html_table(spec: Table) -> str:
    """One of tables.py's tables, its marks as classes (coloured by the page's style)."""
    head = "".join(f"<th>{escape(h).replace(chr(10), '<br>')}</th>" for h in spec.headers)
    rows = []
    for r, row in enumerate(spec.rows):
        marks = spec.marks[r] if spec.marks else ("",) * len(row)
        cells = "".join(
            f"<td class='{'num ' if i >= spec.numeric_from else ''}{mark}'>{escape(cell)}</td>"
            for i, (cell, mark) in enumerate(zip(row, marks, strict=False))
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<h2>{escape(spec.title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def write_page(out_path: Path, title: str, body: Sequence[str]) -> Path:
    """A standalone page of `body`'s HTML parts, in the report's style, written atomically."""
    page = _PAGE.format(title=escape(title), body="\n".join(body))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_path, page)
    return out_path


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
            trace = f"in run {escape(ref.run_id)}, not on this machine"
        else:
            trace = _html_trace(Path(folder), ref.trace_path, page_dir)
        outcome = "pass" if ref.success else f"fail ({ref.failure_mode or 'unknown'})"
        rows.append(
            f"<tr><td>{escape(ref.model)}</td><td>{escape(ref.task_id)}</td><td class='num'>{ref.tier}</td>"
            f"<td class='num'>{ref.trial}</td><td class='{'pass' if ref.success else 'fail'}'>{escape(outcome)}</td>"
            f"<td class='num'>{escape(fmt_seconds(ref.wall_s))}</td><td class='num'>{escape(fmt_usd(ref.cost_usd))}</td>"
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
            return f"missing: {escape(folder / trace_path)}"
        data, more = read_trace(path, TRACE_EMBED_LIMIT)
    except ResultsError as exc:
        return f"not shown: {escape(exc.message)}"
    text = data.decode("utf-8", errors="replace") + ("\n… (clipped; open the file)" if more else "")
    return (
        f"<a href='{escape(_href(path, page_dir))}'>{escape(trace_path)}</a>"
        f"<details><summary>show</summary><pre>{escape(text)}</pre></details>"
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
