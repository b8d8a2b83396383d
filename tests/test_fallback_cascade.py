"""A cascade benched as a variant of its own (`--model 'down>oracle'`): the next step runs
only after one that stopped without an answer, on a fresh workspace; the trial's tokens, time
and cost are the sums over its tries. `down` is a real hosted engine on a shut loopback port;
`oracle` and `noop` are the scripted models."""

from __future__ import annotations

import pytest
from test_cli_run import localagent
from test_fallback import down_model

from localagent.bench import cascade
from localagent.bench.capability import MapFilter, load_map
from localagent.bench.database import ResultsDB
from localagent.bench.runner import BenchConfig, run_bench
from localagent.errors import ConfigError


def test_a_cascade_escalates_on_no_answer_and_sums_its_tries(localagent_home) -> None:
    down_model(localagent_home)
    outcome = run_bench(BenchConfig(models=("down>oracle", "noop>oracle", "oracle"), task_ids=("read-version",)))
    by_model = {t.model: t for t in outcome.trials}
    assert set(by_model) == {"down>oracle", "noop>oracle", "oracle"}
    up = by_model["down>oracle"]
    assert up.success and up.model_kind == "hosted"  # it may spend API dollars
    assert [(a.model, a.stop_reason) for a in up.attempts or []] == [("down", "api_error"), ("oracle", "answer")]
    assert up.wall_s == pytest.approx(sum(a.wall_s for a in up.attempts or []))
    assert up.steps == sum(a.steps for a in up.attempts or []) and up.steps >= 2
    # noop answers (wrongly): the checks fail, and no answer is what escalates, not a failed check
    stuck = by_model["noop>oracle"]
    assert not stuck.success and stuck.model_kind == "pseudo"
    assert [a.model for a in stuck.attempts or []] == ["noop"]
    assert by_model["oracle"].attempts is None
    assert outcome.info.models == ["down>oracle", "noop>oracle", "oracle"] and outcome.info.baselines == []
    with ResultsDB() as db:
        stored = {t.model: t for t in db.trials()}
    assert stored["down>oracle"].attempts == up.attempts
    # the map shows it as a variant of its own, and would bench it again as a --model
    cmap, _ = load_map(MapFilter(include_pseudo=True))
    stats = {s.label: s for s in cmap.groups[0].variants}
    assert stats["down>oracle"].passed.successes == 1
    assert stats["down>oracle"].variant.bench_args()[:2] == ["--model", "down>oracle"]


@pytest.mark.parametrize(
    "name, message", [("noop>", "has an empty step"), (">noop", "has an empty step"), ("noop>noop", "twice in a row")]
)
def test_malformed_cascades_are_refused(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cascade.members(name)


def test_a_cascade_with_an_unknown_step_fails_before_any_trial(tmp_path) -> None:
    done = localagent("bench", "--model", "noop>smollm2-135n", "--task", "read-version")
    assert done.returncode == 1
    assert "error: unknown model 'smollm2-135n'" in done.stderr and "hint: did you mean 'smollm2-135m'" in done.stderr
    assert "Traceback" not in done.stderr
    done = localagent("bench", "--model", "noop>", "--task", "read-version")
    assert done.returncode == 1 and "error: --model 'noop>' has an empty step" in done.stderr
