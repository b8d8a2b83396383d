"""The verdict: one sentence per model that says what the figures mean, against the first
hosted baseline with results when there is one, on the figures alone when there is not."""

from __future__ import annotations

from collections import defaultdict

from localagent.bench.figures import ModelSummary, Rate, Summary, Verdict
from localagent.bench.formatting import DASH, fmt_interval, fmt_pct, fmt_seconds, fmt_speed, fmt_tiers, fmt_usd
from localagent.units import format_bytes


def verdicts(s: Summary) -> tuple[Verdict, ...]:
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
