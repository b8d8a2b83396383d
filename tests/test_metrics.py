"""The bench's arithmetic, table-driven against values worked out by hand or published."""

from __future__ import annotations

import pytest

from localagent.bench import metrics
from localagent.catalog import Price, cost_usd
from localagent.records import Usage


@pytest.mark.parametrize(
    "successes, n, lo, hi",
    [
        (9, 20, 0.2582, 0.6579),  # the example: 45%, 26-66%
        (18, 20, 0.6990, 0.9721),
        (0, 10, 0.0, 0.2775),  # never below 0, unlike the normal approximation
        (10, 10, 0.7225, 1.0),
        (1, 1, 0.2065, 1.0),
        (50, 100, 0.4038, 0.5962),
        (24, 24, 0.8617, 1.0),
    ],
)
def test_wilson_interval_known_values(successes, n, lo, hi):
    got_lo, got_hi = metrics.wilson_interval(successes, n)
    assert got_lo == pytest.approx(lo, abs=5e-4)
    assert got_hi == pytest.approx(hi, abs=5e-4)


def test_wilson_interval_of_nothing_is_everything():
    assert metrics.wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_wider_at_higher_confidence():
    lo95, hi95 = metrics.wilson_interval(9, 20)
    lo99, hi99 = metrics.wilson_interval(9, 20, z=2.576)
    assert lo99 < lo95 and hi99 > hi95


@pytest.mark.parametrize("successes, n", [(-1, 5), (6, 5), (0, -1)])
def test_wilson_interval_rejects_impossible_counts(successes, n):
    with pytest.raises(ValueError):
        metrics.wilson_interval(successes, n)


@pytest.mark.parametrize(
    "per_task, k, expected",
    [
        ([(4, 4), (4, 0)], 1, 0.5),  # pass^1 is the plain success rate
        ([(4, 2)], 2, 1 / 6),  # C(2,2)/C(4,2)
        ([(4, 3)], 2, 3 / 6),  # C(3,2)/C(4,2)
        ([(4, 2), (4, 4), (4, 0)], 2, (1 / 6 + 1 + 0) / 3),
        ([(5, 4)], 4, 1 / 5),  # C(4,4)/C(5,4)
        ([(4, 3), (4, 3)], 4, 0.0),  # one failure in four trials: never all four
        ([(8, 8)], 8, 1.0),
        ([(3, 3), (1, 1)], 2, 1.0),  # the task with 1 trial cannot say anything about k=2
    ],
)
def test_pass_hat_k(per_task, k, expected):
    assert metrics.pass_hat_k(per_task, k) == pytest.approx(expected)


def test_pass_hat_k_falls_as_k_grows():
    tasks = [(8, 6), (8, 7), (8, 8), (8, 3)]
    values = [metrics.pass_hat_k(tasks, k) for k in range(1, 9)]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(24 / 32)


def test_pass_hat_k_without_enough_trials_is_unknown():
    assert metrics.pass_hat_k([(1, 1)], 2) is None
    with pytest.raises(ValueError):
        metrics.pass_hat_k([(3, 1)], 0)


@pytest.mark.parametrize(
    "values, med, mean",
    [
        ([3.0, 1.0, 2.0], 2.0, 2.0),
        ([4.0, 1.0, 2.0, 3.0], 2.5, 2.5),
        ([None, 5.0, None], 5.0, 5.0),
        ([None], None, None),
        ([], None, None),
    ],
)
def test_median_and_mean_skip_unknowns(values, med, mean):
    assert metrics.median(values) == med
    assert metrics.mean(values) == mean


@pytest.mark.parametrize(
    "total, solved, expected",
    [(1200.0, 3, 400.0), (0.41, 2, 0.205), (900.0, 0, None), (0.0, 4, 0.0)],
)
def test_per_solved_charges_failures_to_successes(total, solved, expected):
    assert metrics.per_solved(total, solved) == expected


def test_throughput_weighs_calls_by_tokens():
    # 100 tokens at 100/s (1 s) and 10 tokens at 10/s (1 s): 110 tokens in 2 s, not mean 55
    assert metrics.throughput([(100, 100.0), (10, 10.0)]) == pytest.approx(55.0)
    assert metrics.throughput([(300, 150.0), (100, 50.0)]) == pytest.approx(100.0)
    assert metrics.throughput([(0, 80.0), (5, None)]) is None
    assert metrics.throughput([]) is None


def test_paired_counts_tasks_not_trials():
    a = {"t1": [True, True], "t2": [False, False], "t3": [True, False], "t4": [True], "only-a": [True]}
    b = {"t1": [False, False], "t2": [True, True], "t3": [True, False], "t4": [False], "only-b": [False]}
    got = metrics.paired(a, b)
    assert (got.common, got.wins, got.losses, got.ties) == (4, 2, 1, 1)
    assert got.p_value == pytest.approx(1.0)


def test_paired_keys_by_task_version():
    a = {("t1", "v2"): [True]}
    b = {("t1", "v1"): [False]}
    assert metrics.paired(a, b).common == 0


@pytest.mark.parametrize(
    "wins, losses, p",
    [(0, 0, 1.0), (5, 5, 1.0), (9, 1, 0.021484375), (10, 0, 2 / 1024), (0, 6, 2 / 64), (3, 1, 0.625)],
)
def test_sign_test(wins, losses, p):
    assert metrics.sign_test(wins, losses) == pytest.approx(p)


PRICE = Price(input=1.25, cached_input=0.125, output=10.0, source="test", as_of="2025-10")


@pytest.mark.parametrize(
    "usage, expected",
    [
        # 1M fresh input + 1M output = 1.25 + 10
        (Usage(input_tokens=1_000_000, output_tokens=1_000_000), 11.25),
        # 800k of 1M input cached: 200k x 1.25 + 800k x 0.125 = 0.25 + 0.10
        (Usage(input_tokens=1_000_000, cached_input_tokens=800_000), 0.35),
        # reasoning tokens are inside output tokens: 2000 output (1500 of them reasoning) = 0.02
        (Usage(input_tokens=0, output_tokens=2000, reasoning_tokens=1500), 0.02),
        # a real agent trial's numbers: 3 calls, 2,301 input (1,536 cached), 184 output
        (
            Usage(input_tokens=2301, cached_input_tokens=1536, output_tokens=184),
            (765 * 1.25 + 1536 * 0.125 + 184 * 10) / 1e6,
        ),
    ],
)
def test_cost_arithmetic(usage, expected):
    assert cost_usd(usage, PRICE) == pytest.approx(expected)
    assert cost_usd(usage, None) == 0.0
