"""Which variant to use for a group of tasks, given what the user prefers: performance, speed or
cost. Pure: the map's groups in, frozen recommendations out.

A variant meets the bar when the lower end of its Wilson 95% interval does, not its point
estimate: 3/3 is 100% but its interval starts at 44%. A variant whose interval straddles the
bar is undecided, and the recommendation says how many more trials would settle it.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from localagent.bench import metrics
from localagent.bench.capability import CapabilityMap, Group, VariantStats
from localagent.bench.formatting import fmt_interval, fmt_pct, fmt_seconds, fmt_speed, fmt_usd

Prefer = Literal["performance", "speed", "cost"]
PREFERENCES: tuple[Prefer, ...] = ("performance", "speed", "cost")

# more trials than this in one group is not "a few more": the interval will not settle
MAX_SETTLE_TRIALS = 2000


@dataclass(frozen=True)
class Choice:
    """A variant as the recommendation cites it: the figures it was judged on and what it
    gives up against the most successful variant."""

    label: str
    kind: str
    successes: int
    n: int
    rate: float
    lo: float
    hi: float
    tasks: int
    median_wall_s: float | None  # on the group's reference host when it ran there
    cost_per_solved: float | None
    last_date: str
    hosts: tuple[str, ...]
    versus: str  # '91% of gpt-5-mini's success at $0, 2.4x slower'; '' for the best itself


@dataclass(frozen=True)
class Settle:
    """An undecided variant and the bench run that would decide it at its observed rate."""

    label: str
    trials_needed: int | None  # more trials in this group; None: too many to be worth it
    command: str
    # a local model at temperature 0 answers the same way every trial: more trials of it
    # repeat one observation, so the interval narrows without the evidence growing
    repeats: bool


@dataclass(frozen=True)
class Recommendation:
    group: str  # the group's title
    tasks: int
    prefer: Prefer
    min_success: float
    use: Choice | None  # None: no variant meets the bar
    frontier: tuple[Choice, ...]  # the others at the bar that no variant beats on success, cost and time
    best: Choice | None  # the highest lower bound, when `use` is None
    cheapest_meeting: Choice | None  # when no local variant meets the bar but another does
    undecided: tuple[Settle, ...]  # could meet the bar with more trials
    text: str  # the recommendation in one sentence


def trials_to_settle(successes: int, n: int, bar: float, z: float = 1.96) -> int | None:
    """The fewest trials in all (n or more) after which the Wilson interval, at the rate seen
    so far (rounded against the verdict), lies wholly above `bar` (rate >= bar) or wholly below it; None when over
    MAX_SETTLE_TRIALS or when the rate is the bar itself."""
    if n == 0:
        return None
    rate = successes / n
    if rate == bar:
        return None
    for total in range(n, MAX_SETTLE_TRIALS + 1):
        # the successes at this rate, rounded against the verdict: never settled too soon
        if rate > bar:
            lo, _ = metrics.wilson_interval(successes * total // n, total, z)
            if lo >= bar:
                return total
        else:
            _, hi = metrics.wilson_interval(-(-successes * total // n), total, z)
            if hi < bar:
                return total
    return None


def frontier(variants: Sequence[VariantStats], host: str) -> list[VariantStats]:
    """The variants no other beats on all three of success (the interval's lower end),
    dollars per solved task and wall time on `host` while better on one; a figure not known
    counts as the worst. In order of the lower end, highest first."""

    def figures(s: VariantStats) -> tuple[float, float, float]:
        wall = s.wall_on(host)
        cost = s.cost_per_solved
        return (-s.passed.lo, math.inf if cost is None else cost, math.inf if wall is None else wall)

    points = [figures(s) for s in variants]
    kept = [
        s
        for s, p in zip(variants, points, strict=True)
        if not any(all(a <= b for a, b in zip(q, p, strict=True)) and q != p for q in points)
    ]
    return sorted(kept, key=lambda s: figures(s))


def _rank(s: VariantStats, prefer: Prefer, host: str) -> tuple:
    wall = s.wall_on(host)
    wall_key = math.inf if wall is None else wall
    cost = math.inf if s.cost_per_solved is None else s.cost_per_solved
    if prefer == "performance":
        return (-s.passed.lo, cost, wall_key, s.label)
    if prefer == "speed":
        return (wall_key, -s.passed.lo, cost, s.label)
    return (cost, -s.passed.lo, wall_key, s.label)


def versus(s: VariantStats, best: VariantStats, host: str) -> str:
    """What `s` gives up (or gains) against `best`: success as a share of best's, its
    dollars per solved task, and how much slower or faster it is."""
    if s is best:
        return ""
    parts = []
    if best.passed.rate > 0:
        parts.append(f"{s.passed.rate / best.passed.rate:.0%} of {best.label}'s success")
    cost = f"at {fmt_usd(s.cost_per_solved)} per solved task"
    if s.cost_per_solved != best.cost_per_solved:
        cost += f" (vs {fmt_usd(best.cost_per_solved)})"
    parts.append(cost)
    mine, theirs = s.wall_on(host), best.wall_on(host)
    if mine and theirs:
        parts.append(fmt_speed(mine / theirs))
    return ", ".join(parts)


def _choice(s: VariantStats, best: VariantStats, host: str) -> Choice:
    return Choice(
        label=s.label,
        kind=s.variant.kind,
        successes=s.passed.successes,
        n=s.passed.n,
        rate=s.passed.rate,
        lo=s.passed.lo,
        hi=s.passed.hi,
        tasks=s.tasks,
        median_wall_s=s.wall_on(host),
        cost_per_solved=s.cost_per_solved,
        last_date=s.last_date,
        hosts=tuple(h.host for h in s.speeds),
        versus=versus(s, best, host),
    )


def bench_command(s: VariantStats, group: Group, trials_per_task: int, tasks_dir: str | None) -> str:
    """The `localagent bench` line that adds `trials_per_task` trials of `s` on the group."""
    args = ["localagent", "bench", *s.variant.bench_args(), *group_args(group, tasks_dir)]
    args += ["--trials", str(trials_per_task)]
    return shlex.join(args)


def group_args(group: Group, tasks_dir: str | None) -> list[str]:
    """The `localagent bench` arguments that select the group's tasks."""
    args = ["--tasks", tasks_dir] if tasks_dir else []
    if group.kind == "tier":
        args += ["--tier", group.name]
    elif group.kind == "tag":
        for task in group.task_ids:
            args += ["--task", task]
    return args


def recommend(group: Group, prefer: Prefer, min_success: float, tasks_dir: str | None = None) -> Recommendation:
    """The variant to use on `group` for `prefer`, judged on the lower end of the interval;
    the frontier beside it; and, when the evidence cannot decide, what would. `tasks_dir`:
    the task folder to name in bench commands (None: the shipped suite)."""
    if not 0.0 <= min_success <= 1.0:
        raise ValueError(f"min_success must be in [0, 1], got {min_success}")
    host = group.reference_host
    variants = list(group.variants)
    top = min(variants, key=lambda s: _rank(s, "performance", host))
    meets = [s for s in variants if s.passed.lo >= min_success]
    undecided = [s for s in variants if s.passed.lo < min_success <= s.passed.hi]
    settle = tuple(_settle(s, group, min_success, tasks_dir) for s in undecided)
    if meets:
        return _use(group, prefer, min_success, meets, settle)
    bar = fmt_pct(min_success)
    if top.passed.successes == 0:
        n = sum(s.passed.n for s in variants)
        text = f"no variant meets {bar}: none solved any of these tasks in {n} trials"
    else:
        text = f"no variant meets {bar} on the lower end of its 95% interval; the best so far is {top.label}: {_evidence(top)}"
    if settle:
        text += f". Too little evidence to rule out {', '.join(s.label for s in settle)}"
    return Recommendation(
        group.title, len(group.task_ids), prefer, min_success, None, (), _choice(top, top, host), None, settle, text
    )


def _use(
    group: Group, prefer: Prefer, min_success: float, meets: list[VariantStats], settle: tuple[Settle, ...]
) -> Recommendation:
    """The recommendation when some variants (`meets`) clear the bar."""
    host = group.reference_host
    use = min(meets, key=lambda s: _rank(s, prefer, host))
    best = min(meets, key=lambda s: _rank(s, "performance", host))
    text = f"use {use.label}: {_evidence(use)}"
    if use is not best:
        text += f"; {versus(use, best, host)}"
    cheapest = None
    if not any(s.variant.kind == "local" for s in meets) and any(s.variant.kind == "local" for s in group.variants):
        bar = fmt_pct(min_success)
        cheapest_stats = min(meets, key=lambda s: _rank(s, "cost", host))
        if cheapest_stats is use:
            text += f". No local variant meets {bar}; this is the cheapest that does"
        else:
            cheapest = _choice(cheapest_stats, best, host)
            text += f". No local variant meets {bar}; the cheapest that does is {cheapest.label}"
    return Recommendation(
        group=group.title,
        tasks=len(group.task_ids),
        prefer=prefer,
        min_success=min_success,
        use=_choice(use, best, host),
        frontier=tuple(_choice(s, best, host) for s in frontier(meets, host) if s is not use),
        best=None,
        cheapest_meeting=cheapest,
        undecided=settle,
        text=text,
    )


def _evidence(s: VariantStats) -> str:
    r = s.passed
    return (
        f"{r.successes}/{r.n} trials on {s.tasks} task{'s' if s.tasks != 1 else ''} ({fmt_pct(r.rate)}, "
        f"{fmt_interval(r.lo, r.hi)}), {fmt_seconds(s.median_wall_s)} per task, "
        f"{fmt_usd(s.cost_per_solved)} per solved task, last run {s.last_date}"
    )


def _settle(s: VariantStats, group: Group, bar: float, tasks_dir: str | None) -> Settle:
    repeats = s.variant.kind == "local" and s.variant.temperature == 0
    total = trials_to_settle(s.passed.successes, s.passed.n, bar)
    if total is None:
        return Settle(s.label, None, "", repeats)
    more = total - s.passed.n
    per_task = max(1, math.ceil(more / max(1, len(group.task_ids))))
    return Settle(s.label, more, bench_command(s, group, per_task, tasks_dir), repeats)


def recommended_groups(cmap: CapabilityMap, tags: Sequence[str] = ()) -> list[Group]:
    """The groups a recommendation is given for: the tags asked for; else all tasks and each
    tier, leaving out a group with the same tasks as one before it (one tier: all tasks is
    that tier, and is named as the tier so a bench command selects it)."""
    if tags:
        return [g for g in cmap.groups if g.kind == "tag" and g.name in tags]
    chosen: list[Group] = []
    for g in cmap.groups:
        if g.kind == "tag":
            continue
        if chosen and chosen[-1].kind == "all" and g.task_ids == chosen[-1].task_ids:
            chosen[-1] = g
        elif all(g.task_ids != c.task_ids for c in chosen):
            chosen.append(g)
    return chosen


def recommend_all(
    groups: Sequence[Group], prefer: Prefer, min_success: float, tasks_dir: str | None = None
) -> list[Recommendation]:
    return [recommend(g, prefer, min_success, tasks_dir) for g in groups]
