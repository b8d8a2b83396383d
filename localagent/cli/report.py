"""`localagent report [RUN]`: a stored bench run's figures, as tables, JSON, Markdown or HTML."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from localagent.cli.app import app
from localagent.errors import ConfigError, ResultsWarning


@app.command()
def report(
    run: Optional[str] = typer.Argument(None, help="Run id or run folder. Default: the latest stored run."),
    html: Optional[Path] = typer.Option(
        None, "--html", help="Also write a standalone HTML page with charts (needs localagent[report])."
    ),
    markdown: bool = typer.Option(False, "--markdown", help="Print README-ready Markdown tables."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Show a bench run: success with confidence intervals, speed, memory, cost, a verdict."""
    from rich.console import Console

    from localagent.bench.database import ResultsDB
    from localagent.bench.html_page import render_html
    from localagent.bench.render import render_terminal, to_json, to_markdown
    from localagent.bench.report import load_report
    from localagent.bench.summary import summarize

    if markdown and as_json:
        raise ConfigError("--markdown and --json both print the report", hint="pick one")
    # lines of results.jsonl that are skipped, trials recorded twice: said, not fatal
    with ResultsDB() as db, warnings.catch_warnings(record=True) as problems:
        warnings.simplefilter("always", ResultsWarning)
        stored = load_report(db, run)
    for problem in problems:
        if issubclass(problem.category, ResultsWarning):
            print(f"warning: {problem.message}", file=sys.stderr)
        else:
            warnings.showwarning(problem.message, problem.category, problem.filename, problem.lineno)
    summary = summarize(stored.info, stored.trials, stored.baseline_trials)
    if html is not None:
        page = render_html(summary, stored.run_dir, html, stored.other_runs)
        print(f"wrote {page}", file=sys.stderr)
    if as_json:
        typer.echo(to_json(summary))
    elif markdown:
        typer.echo(to_markdown(summary))
    else:
        console = Console()
        # piped: no colours (rich's own choice) and a fixed width a reader's pager can hold
        render_terminal(summary, console if console.is_terminal else Console(width=100))
