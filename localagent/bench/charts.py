"""The success charts of the report and the map: success (with its Wilson interval) against
cost or time, one point per model or variant, the Pareto frontier marked, drawn with
matplotlib as inline SVG. matplotlib is the `report` extra, imported only here and only when
a chart is drawn."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from localagent.bench.figures import Rate, Summary
from localagent.errors import MissingExtraError

HOSTED_COLOUR = "#d62728"
LOCAL_COLOUR = "#1f77b4"


@dataclass(frozen=True)
class ChartPoint:
    """One point of a success chart: a model or variant, its figure on x, its success."""

    label: str
    x: float
    passed: Rate
    colour: str


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: as cheap (x) or cheaper and as
    successful (y) or more, better in one. Sorted by x."""
    front = [
        i for i, (x, y) in enumerate(points) if not any(x2 <= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)
    ]
    return sorted(front, key=lambda i: points[i])


def chart_svg(summary: Summary, field: str, xlabel: str, title: str) -> str:
    """Success against the ModelSummary field `field` (models without it are left out), as
    an <svg> element to put in a page."""
    points = [
        ChartPoint(m.name, float(getattr(m, field)), m.passed, HOSTED_COLOUR if m.kind == "hosted" else LOCAL_COLOUR)
        for m in summary.models
        if getattr(m, field) is not None
    ]
    fig, ax = success_figure(points, (5.6, 3.8), 8, "Drawing the HTML report's charts")
    ax.margins(x=0.15)
    return finished_svg(fig, ax, xlabel, title)


def success_figure(
    points: Sequence[ChartPoint], size: tuple[float, float], label_size: int, purpose: str
) -> tuple[Any, Any]:
    """A figure and its axes with success (with its interval) against x, one point per
    label, the Pareto frontier dashed; its x scale is the caller's, then `finished_svg`. A
    bare Figure, not pyplot: no GUI backend and no global state. `purpose` names what needs
    matplotlib when it is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("matplotlib", "report", purpose) from None

    xy = [(p.x, p.passed.rate * 100) for p in points]
    fig = Figure(figsize=size)
    ax = fig.subplots()
    for p, (x, y) in zip(points, xy, strict=True):
        # clamped: at 0/n and n/n rounding can put a bound a hair past the rate
        err = [[max(0.0, y - p.passed.lo * 100)], [max(0.0, p.passed.hi * 100 - y)]]
        ax.errorbar(x, y, yerr=err, fmt="o", color=p.colour, capsize=3)
        ax.annotate(p.label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=label_size)
    front = pareto_front(xy)
    if front:
        xs, ys = [xy[i][0] for i in front], [xy[i][1] for i in front]
        # a ring around each point on the frontier, so a frontier of one point shows too
        ax.plot(xs, ys, "--o", color="#2ca02c", linewidth=1.5, markersize=12, fillstyle="none", label="Pareto frontier")
        ax.legend(loc="lower right", fontsize=8)
    return fig, ax


def finished_svg(fig: Any, ax: Any, xlabel: str, title: str) -> str:
    """The chart's labels, success axis and grid, as an <svg> element to put in a page."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Trials passed (%), Wilson 95%")
    ax.set_ylim(-5, 112)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # inline: without the XML declaration and doctype
