"""The report as text: rich tables for the terminal, JSON for programs, Markdown for a
README. The tables are `tables.tables_of`; JSON is the figures themselves. The map's tables
are printed here too (`print_tables`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from localagent.bench.figures import Summary
from localagent.bench.schema import SCHEMA_VERSION
from localagent.bench.tables import Table, header_lines, tables_of

_STYLES = {"pass": "green", "fail": "red", "partial": "yellow", "none": "dim", "": ""}


def render_terminal(summary: Summary, console) -> None:
    """The header, the tables and the verdicts; rich drops colours by itself when the
    console is not a terminal."""
    from rich.table import Table as RichTable
    from rich.text import Text

    for line in header_lines(summary):
        console.print(Text(line, style="dim"))
    print_tables(tables_of(summary), console)
    if summary.verdicts:
        verdicts = RichTable.grid(padding=(0, 1))
        verdicts.add_column(no_wrap=True)
        verdicts.add_column()
        for v in summary.verdicts:
            verdicts.add_row("•", v.text)
        console.print(Text("Verdict", style="bold"))
        console.print(verdicts)


def print_tables(tables: Sequence[Table], console) -> None:
    """tables.py's tables as rich tables, marked cells coloured (the report's and the map's)."""
    from rich import box
    from rich.table import Table as RichTable
    from rich.text import Text

    for spec in tables:
        table = RichTable(title=spec.title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for i, header in enumerate(spec.headers):
            table.add_column(header, justify="right" if i >= spec.numeric_from else "left", no_wrap=i == 0)
        for r, row in enumerate(spec.rows):
            marks = spec.marks[r] if spec.marks else ("",) * len(row)
            table.add_row(*(Text(cell, style=_STYLES[mark]) for cell, mark in zip(row, marks, strict=False)))
        console.print(table)


def to_json(summary: Summary) -> str:
    return json.dumps({"schema_version": SCHEMA_VERSION, **dataclasses.asdict(summary)}, indent=2)


def to_markdown(summary: Summary) -> str:
    out = [f"## Bench run {summary.run_id}", "", *(f"- {line}" for line in header_lines(summary)), ""]
    if summary.verdicts:
        out += ["**Verdict**", "", *(f"- {v.text}" for v in summary.verdicts), ""]
    for spec in tables_of(summary):
        out += [f"### {spec.title}", "", _md_row([h.replace("\n", " ") for h in spec.headers])]
        out.append("|" + "|".join("---:" if i >= spec.numeric_from else "---" for i in range(len(spec.headers))) + "|")
        out += [_md_row(row) for row in spec.rows]
        out.append("")
    return "\n".join(out)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
