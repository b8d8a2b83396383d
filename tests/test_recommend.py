"""The recommendation's arithmetic, table-driven: which variant a preference picks, judged on
the lower end of the Wilson interval; what it gives up; how many trials would settle an
undecided one. Records come from the schema's own factories; the map's pipeline is the real one."""

from __future__ import annotations

import math

import pytest
from factories import HOST, make_run_info, make_trial

from localagent.bench import metrics
from localagent.bench.capability import MapFilter, Variant, build_map, host_profile, observations, select
from localagent.bench.recommend import bench_command, recommend, trials_to_settle, versus
from localagent.errors import ConfigError

TASKS = ("task-a", "task-b", "task-c")


def _trials(model: str, kind: str, successes: int, n: int, wall_s: float, cost: float, **extra):
    """n trials spread over TASKS, the first `successes` of them passed."""
    engine = {"tool_mode": "json"} if kind == "local" else {}
    return [
        make_trial(
            model=model,
            model_kind=kind,
            task_id=TASKS[i % len(TASKS)],
            task_sha256=f"sha-{TASKS[i % len(TASKS)]}",
            trial=i // len(TASKS),
            success=i < successes,
            wall_s=wall_s,
            cost_usd=cost,
            engine=engine,
            **extra,
        )
        for i in range(n)
    ]


def _group(*specs):
    trials = [t for spec in specs for t in _trials(*spec)]
    obs, _ = observations([make_run_info()], trials, {f"sha-{t}": ("tagged",) for t in TASKS})
    return build_map(obs).groups[0]


LOCAL_18_20 = ("small", "local", 18, 20, 10.0, 0.0)
HOSTED_20_20 = ("big", "hosted", 20, 20, 2.0, 0.01)


@pytest.mark.parametrize(
    "prefer, bar, use",
    [
        ("performance", 0.8, "big"),  # only big's lower bound (84%) clears 80%
        ("cost", 0.8, "big"),  # small is free, but 18/20 starts at 70%
        ("speed", 0.8, "big"),
        ("performance", 0.6, "big"),
        ("cost", 0.6, "small json"),  # both clear 60%: the free one
        ("speed", 0.6, "big"),
    ],
)
def test_the_preference_picks_among_the_variants_that_clear_the_bar(prefer, bar, use):
    rec = recommend(_group(LOCAL_18_20, HOSTED_20_20), prefer, bar)
    assert rec.use is not None and rec.use.label == use
    assert rec.text.startswith(f"use {use}: ")


def test_no_local_variant_at_the_bar_names_the_cheapest_that_is():
    group = _group(LOCAL_18_20, HOSTED_20_20, ("pricey", "hosted", 20, 20, 1.0, 0.05))
    rec = recommend(group, "speed", 0.8)
    assert rec.use is not None and rec.use.label == "pricey"
    assert rec.cheapest_meeting is not None and rec.cheapest_meeting.label == "big"
    assert "No local variant meets 80%; the cheapest that does is big" in rec.text
    rec = recommend(group, "performance", 0.8)  # big and pricey tie on success: the cheaper
    assert rec.use is not None and rec.use.label == "big" and rec.cheapest_meeting is None
    assert rec.text.endswith("No local variant meets 80%; this is the cheapest that does")


def test_what_the_cheaper_choice_gives_up():
    rec = recommend(_group(LOCAL_18_20, HOSTED_20_20), "cost", 0.6)
    assert rec.use is not None
    # 18/20 against 20/20, $0 against $0.01 a solved task, 10 s against 2 s per task
    assert rec.use.versus == "90% of big's success, at $0 per solved task (vs $0.01), 5.0x slower"
    assert rec.use.versus in rec.text
    # performance: big is used, and the free one is on the frontier beside it
    perf = recommend(_group(LOCAL_18_20, HOSTED_20_20), "performance", 0.6)
    assert [c.label for c in perf.frontier] == ["small json"]
    assert perf.frontier[0].versus.startswith("90% of big's success")


def test_a_dominated_variant_is_not_on_the_frontier():
    # worse and dearer than big: no preference could want it
    rec = recommend(_group(HOSTED_20_20, ("worse", "hosted", 19, 20, 3.0, 0.02)), "performance", 0.5)
    assert rec.use is not None and rec.use.label == "big"
    assert rec.frontier == ()


def test_no_variant_at_the_bar_says_so_and_how_to_settle_it():
    group = _group(("small", "local", 2, 3, 10.0, 0.0), ("tiny", "local", 1, 3, 5.0, 0.0))
    rec = recommend(group, "performance", 0.8)
    assert rec.use is None
    assert rec.text.startswith(
        "no variant meets 80% on the lower end of its 95% interval; the best so far is small json"
    )
    # 2/3 spans 21-94%: undecided; 1/3 tops out at 79%: ruled out already
    assert [s.label for s in rec.undecided] == ["small json"]
    (settle,) = rec.undecided
    total = trials_to_settle(2, 3, 0.8)
    assert total is not None and settle.trials_needed == total - 3
    per_task = math.ceil((total - 3) / len(TASKS))
    assert settle.command == (
        "localagent bench --model small --tool-mode json "
        + " ".join(f"--task {t}" for t in ())  # the all-tasks group names no task
        + f"--trials {per_task}"
    )


@pytest.mark.parametrize(
    "successes, n, bar, expected",
    [
        (3, 3, 0.8, 16),  # n/n has lower bound n / (n + z^2): 16/16 is the first at 80%
        (9, 10, 0.5, 10),  # already settled
        (0, 3, 0.8, 3),  # 0/3 tops out at 56%: below 80% already
        (4, 5, 0.8, None),  # the rate is the bar: no count settles it
        (0, 0, 0.8, None),  # nothing known
        (1, 2, 0.8, 8),  # 4/7 (rounded up) tops out at 84%, 4/8 at 78%
        (2, 3, 0.5, 36),  # 23/35 (rounded down) starts at 49.6%, 24/36 at 50.3%
    ],
)
def test_trials_to_settle(successes, n, bar, expected):
    assert trials_to_settle(successes, n, bar) == expected
    if expected is not None:
        rate = successes / n
        lo, hi = metrics.wilson_interval(math.floor(rate * expected + 1e-9), expected)
        assert (
            lo >= bar if rate > bar else metrics.wilson_interval(math.ceil(rate * expected - 1e-9), expected)[1] < bar
        )


@pytest.mark.parametrize(
    "variant, label, args",
    [
        (Variant("oracle", "pseudo", None, None, None, 0.0), "oracle", ["--model", "oracle"]),
        (Variant("gpt-5-mini", "hosted", None, None, None, 0.0), "gpt-5-mini", ["--baseline", "gpt-5-mini"]),
        (
            Variant("qwen-small:Q8_0", "local", "native", False, 8192, 0.7),
            "qwen-small:Q8_0 native no-think ctx=8192 temp=0.7",
            [
                "--model",
                "qwen-small:Q8_0",
                "--tool-mode",
                "native",
                "--no-think",
                "--ctx",
                "8192",
                "--temperature",
                "0.7",
            ],
        ),
        (
            Variant("qwen-small", "local", "json", True, None, 0.0),
            "qwen-small json think",
            ["--model", "qwen-small", "--tool-mode", "json", "--think"],
        ),
    ],
)
def test_a_variant_names_its_settings_and_the_bench_that_runs_it_again(variant, label, args):
    assert variant.label == label
    assert variant.bench_args() == args


def test_bench_command_for_a_tag_names_its_tasks_and_the_folder():
    group = _group(LOCAL_18_20)
    tagged = build_map(
        observations([make_run_info()], _trials(*LOCAL_18_20), {f"sha-{t}": ("tagged",) for t in TASKS})[0]
    ).groups[-1]
    assert tagged.kind == "tag" and tagged.name == "tagged"
    command = bench_command(group.variants[0], tagged, 3, "/my tasks")
    assert command == (
        "localagent bench --model small --tool-mode json --tasks '/my tasks' "
        "--task task-a --task task-b --task task-c --trials 3"
    )


def test_versus_the_best_itself_is_empty():
    group = _group(HOSTED_20_20)
    best = group.variants[0]
    assert versus(best, best, group.reference_host) == ""


def test_latest_task_version_only_and_variants_split_by_settings():
    old = make_run_info(run_id="run-0", started_at="2026-11-19T10:00:00+00:00")
    new = make_run_info(run_id="run-1", started_at="2026-11-20T10:00:00+00:00")
    trials = [
        make_trial(run_id="run-0", task_sha256="sha-old", success=False),
        make_trial(run_id="run-1", task_sha256="sha-new"),
        make_trial(run_id="run-1", task_sha256="sha-new", trial=1, temperature=0.7),
    ]
    obs, superseded = observations([old, new], trials, {"sha-new": ("read",)})
    assert superseded == 1
    assert [o.trial.task_sha256 for o in obs] == ["sha-new", "sha-new"]
    cmap = build_map(obs)
    assert cmap.variants == ("oracle", "oracle temp=0.7")  # 1/1 each: ties by label
    assert [g.title for g in cmap.groups] == ["all tasks", "tier 1", "tag read"]
    assert cmap.hosts == (host_profile(HOST),)


@pytest.mark.parametrize(
    "flt, message, hint",
    [
        (MapFilter(tags=("raed",)), "no stored trial has the tag 'raed'", "did you mean 'read'?"),
        (MapFilter(models=("oracel",)), "no stored trial has the model 'oracel'", "did you mean 'oracle'?"),
        (MapFilter(tier=3), "no stored trial is of a tier 3 task", "stored tiers: 1"),
        (MapFilter(host="m3 max"), "no stored run was made on a host matching 'm3 max'", "Test CPU"),
        (MapFilter(since="last week"), "--since takes a date as YYYY-MM-DD", "--since 2026-11-01"),
    ],
)
def test_filters_that_match_nothing_name_what_is_known(flt, message, hint):
    obs, _ = observations([make_run_info()], [make_trial()], {"sha-read-version": ("read", "answer")})
    with pytest.raises(ConfigError) as raised:
        select(obs, flt)
    assert message in raised.value.message
    assert hint in (raised.value.hint or "")


def test_pseudo_models_are_left_out_unless_named_or_asked():
    obs, _ = observations(
        [make_run_info()],
        [make_trial(), make_trial(model="small", model_kind="local", engine={"tool_mode": "json"})],
        {},
    )
    assert {o.variant.model for o in select(obs, MapFilter())} == {"small"}
    assert {o.variant.model for o in select(obs, MapFilter(include_pseudo=True))} == {"small", "oracle"}
    assert {o.variant.model for o in select(obs, MapFilter(models=("oracle",)))} == {"oracle"}
    assert select(obs, MapFilter(since="2026-11-21")) == []


def test_when_nothing_was_solved_it_says_so_instead_of_naming_a_best():
    rec = recommend(_group(("small", "local", 0, 3, 10.0, 0.0), ("big", "hosted", 0, 6, 2.0, 0.01)), "speed", 0.8)
    assert rec.use is None
    assert rec.text == "no variant meets 80%: none solved any of these tasks in 9 trials"


def test_the_text_names_the_frontier_and_the_cheapest_at_the_bar():
    from localagent.bench.map_render import recommendation_lines

    group = _group(LOCAL_18_20, HOSTED_20_20, ("pricey", "hosted", 20, 20, 1.0, 0.05))
    lines = recommendation_lines(recommend(group, "speed", 0.8))
    assert lines[0] == "all tasks (3 tasks), prefer speed, bar 80%:"
    assert lines[1].startswith("  use pricey: 20/20 trials on 3 tasks (100%, 84–100%)")
    # big is as good and cheaper (so the best to compare with), and slower: on the frontier
    assert "100% of big's success, at $0.05 per solved task (vs $0.01), 2.0x faster" in lines[1]
    assert "  frontier: big: 100% (84–100%, n=20)" in lines
    assert "  cheapest at the bar: big: 100% (84–100%, n=20)" in lines
    performance = recommendation_lines(recommend(group, "performance", 0.8))
    assert performance[1].endswith("No local variant meets 80%; this is the cheapest that does")
    assert (
        "  frontier: pricey: 100% (84–100%, n=20); 100% of big's success, at $0.05 per solved task (vs $0.01), 2.0x faster"
        in performance
    )
    # 18/20 (70-97%) straddles 80%: said, with the bench that would settle it, and the caveat of temperature 0
    (i,) = [i for i, line in enumerate(lines) if line.startswith("  too little evidence for small json: about ")]
    assert "localagent bench --model small --tool-mode json --trials " in lines[i]
    assert lines[i + 1].startswith("    (at temperature 0 it answers alike every trial")


def test_success_pools_across_hosts_and_speed_is_per_host():
    laptop = HOST.model_copy(update={"cpu": "Laptop CPU", "logical_cores": 4})
    runs = [make_run_info(run_id="run-1"), make_run_info(run_id="run-2", host=laptop)]
    trials = [
        make_trial(run_id="run-1", trial=0, wall_s=1.0),
        make_trial(run_id="run-1", trial=1, wall_s=3.0, success=False),
        make_trial(run_id="run-2", trial=0, wall_s=10.0),
        # a trial a cluster node ran records its own host
        make_trial(run_id="run-2", trial=1, wall_s=20.0, host=HOST),
    ]
    obs, _ = observations(runs, trials, {})
    (stats,) = build_map(obs).groups[0].variants
    assert (stats.passed.successes, stats.passed.n) == (3, 4)  # one rate over both machines
    speeds = {s.host: (s.trials, s.median_wall_s) for s in stats.speeds}
    assert speeds == {host_profile(HOST): (3, 3.0), host_profile(laptop): (1, 10.0)}
    assert stats.wall_on(host_profile(laptop)) == 10.0
    assert stats.wall_on("a host it never ran on") == stats.median_wall_s == 6.5
    assert build_map(obs).groups[0].reference_host == host_profile(HOST)  # the most trials
