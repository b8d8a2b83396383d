"""The bench's arithmetic: pure functions over plain numbers and records, nothing stored.

Confidence intervals are Wilson score intervals (sane at 0/n and n/n, unlike the normal
approximation); pass^k is tau-bench's unbiased estimator; paired comparisons count tasks, not
trials, so a model is not rewarded for having been run more often. What a trial's stop and
checks make of it (classify_failure) is decided beside the check kinds, in checks.py.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% at z=1.96). With n == 0 nothing is
    known: (0, 1)."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def pass_hat_k(per_task: Iterable[tuple[int, int]], k: int) -> float | None:
    """pass^k: the chance that k independent trials of a task all succeed, averaged over tasks.

    `per_task` holds (trials, successes) per task; each task contributes C(c, k) / C(n, k),
    the unbiased estimate from n >= k trials (tau-bench). Tasks with fewer than k trials are
    left out; None when none has k.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    values = [math.comb(c, k) / math.comb(n, k) for n, c in per_task if n >= k]
    return sum(values) / len(values) if values else None


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are known; None when none is."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def mean(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are known; None when none is."""
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def per_solved(total: float, solved: int) -> float | None:
    """What was spent on every trial (solved or not) divided by the trials solved: the price
    of one success. None when nothing was solved."""
    return total / solved if solved else None


def throughput(calls: Iterable[tuple[int, float | None]]) -> float | None:
    """Tokens per second over several calls given as (tokens, tokens/s) each: total tokens over
    total seconds, so a long call weighs more than a short one (a mean of rates would not)."""
    tokens = 0
    seconds = 0.0
    for n, rate in calls:
        if rate and n > 0:
            tokens += n
            seconds += n / rate
    return tokens / seconds if seconds > 0 else None


@dataclass(frozen=True)
class Paired:
    """Model A against model B on the tasks both ran. A task is a win for A when A's success
    rate on it is higher than B's."""

    common: int
    wins: int
    losses: int
    ties: int
    p_value: float  # two-sided exact sign test on wins vs losses (ties dropped)


K = TypeVar("K", bound=Hashable)


def paired(a: Mapping[K, Sequence[bool]], b: Mapping[K, Sequence[bool]]) -> Paired:
    """Wins, losses and ties of A against B over the keys (e.g. (task id, task sha256)) both
    have trials for."""
    wins = losses = ties = 0
    common = [key for key in a if key in b and a[key] and b[key]]
    for key in common:
        rate_a = sum(a[key]) / len(a[key])
        rate_b = sum(b[key]) / len(b[key])
        if rate_a > rate_b:
            wins += 1
        elif rate_a < rate_b:
            losses += 1
        else:
            ties += 1
    return Paired(len(common), wins, losses, ties, sign_test(wins, losses))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial sign test: the chance of a split at least this uneven if both
    sides were equally good. 1.0 with no decided pairs."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)
