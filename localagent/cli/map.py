"""`localagent map` and `localagent recommend`: every stored run read across, as a capability
map of variants on task groups, and the variant to use for a preference."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from localagent.cli.app import app

if TYPE_CHECKING:
    from localagent.bench.capability import CapabilityMap, MapFilter


class PreferChoice(str, enum.Enum):
    performance = "performance"
    speed = "speed"
    cost = "cost"


def _filter_options(
    tag: list[str] | None,
    tier: int | None,
    model: list[str] | None,
    since: str | None,
    host: str | None,
    include_pseudo: bool,
) -> MapFilter:
    from localagent.bench.capability import MapFilter

    return MapFilter(
        tags=tuple(tag or ()),
        tier=tier,
        models=tuple(model or ()),
        since=since,
        host=host,
        include_pseudo=include_pseudo,
    )


def _load(flt: MapFilter) -> tuple[CapabilityMap, str | None]:
    from localagent.bench.capability import load_map

    return load_map(flt)


_TAG = typer.Option(None, "--tag", help="Only tasks with this tag; repeatable.")
_TIER = typer.Option(None, "--tier", min=1, max=4, help="Only tasks of this tier.")
_MODEL = typer.Option(None, "--model", "-m", help="Only this model (as benched); repeatable. Names oracle/noop too.")
_SINCE = typer.Option(None, "--since", help="Only runs started on this day (YYYY-MM-DD) or later.")
_HOST = typer.Option(None, "--host", help="Only runs on a host whose profile contains this text.")


@app.command("map")
def map_(
    tag: Optional[list[str]] = _TAG,
    tier: Optional[int] = _TIER,
    model: Optional[list[str]] = _MODEL,
    since: Optional[str] = _SINCE,
    host: Optional[str] = _HOST,
    html: Optional[Path] = typer.Option(
        None, "--html", help="Also write a page with a task × variant heatmap and Pareto charts (localagent[report])."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the map as JSON."),
) -> None:
    """Which variant succeeds at which tasks, how fast and at what cost, across every stored run."""
    from rich.console import Console

    from localagent.bench.map_render import header_lines, map_json, map_tables, render_map_html
    from localagent.bench.render import print_tables

    cmap, _ = _load(_filter_options(tag, tier, model, since, host, include_pseudo=True))
    if html is not None:
        print(f"wrote {render_map_html(cmap, html)}", file=sys.stderr)
    if as_json:
        typer.echo(map_json(cmap))
        return
    console = Console(highlight=False)
    # piped: no colours (rich's own choice) and a width the widest table fits in
    console = console if console.is_terminal else Console(width=160, highlight=False)
    for line in header_lines(cmap):
        console.print(line, style="dim", soft_wrap=True)
    print_tables(map_tables(cmap), console)


@app.command()
def recommend(
    prefer: PreferChoice = typer.Option(PreferChoice.performance, "--prefer", help="What to optimise for."),
    min_success: float = typer.Option(
        0.8, "--min-success", min=0.0, max=1.0, help="The bar, on the lower end of the 95% interval."
    ),
    tag: Optional[list[str]] = _TAG,
    tier: Optional[int] = _TIER,
    model: Optional[list[str]] = _MODEL,
    since: Optional[str] = _SINCE,
    host: Optional[str] = _HOST,
    as_json: bool = typer.Option(False, "--json", help="Print the recommendations as JSON."),
) -> None:
    """The variant to use per task group for a preference, with its evidence and the frontier."""
    from localagent.bench.map_render import recommendation_lines, recommendations_json
    from localagent.bench.recommend import recommend_all, recommended_groups

    cmap, tasks_dir = _load(_filter_options(tag, tier, model, since, host, include_pseudo=False))
    recs = recommend_all(recommended_groups(cmap, tag or ()), prefer.value, min_success, tasks_dir)
    if as_json:
        typer.echo(recommendations_json(recs))
        return
    for note in cmap.notes:
        typer.echo(note, err=True)
    for r in recs:
        typer.echo("\n".join(recommendation_lines(r)))
