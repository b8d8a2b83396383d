"""The report's charts: success (with its Wilson interval) against cost or time, one point
per model, the Pareto frontier marked, drawn with matplotlib as inline SVG. matplotlib is the
`report` extra, imported only here and only when a chart is drawn."""

from __future__ import annotations

import io
from collections.abc import Sequence

from localagent.bench.figures import Summary
from localagent.errors import MissingExtraError


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
    for m, (x, y) in zip(models, points, strict=False):
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
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # inline: without the XML declaration and doctype
