"""The shipped suite is valid: `oracle` passes every task and `noop` fails every task, both
run through the real agent loop and the real tools in a fresh workspace."""

from __future__ import annotations

import pytest

from localagent.agent import Agent, AgentConfig
from localagent.bench.checks import run_checks
from localagent.bench.tasks import Task, load_tasks, make_workspace
from localagent.engines.scripted import NOOP_ANSWER, NoopModel, OracleModel
from localagent.records import FinalStep, ToolStep

TASKS = load_tasks()


def run(model, task: Task, tmp_path) -> tuple[list, FinalStep, list]:
    workspace = make_workspace(task, tmp_path / "ws")
    config = AgentConfig(max_steps=task.max_steps or AgentConfig().max_steps)
    steps = list(Agent(model, workspace, config).run(task.prompt))
    final = steps[-1]
    assert isinstance(final, FinalStep)
    return steps, final, run_checks(task, workspace, final.answer)


@pytest.mark.parametrize("task", TASKS, ids=[t.id for t in TASKS])
def test_oracle_passes(task, tmp_path):
    steps, final, outcomes = run(OracleModel(task.solution), task, tmp_path)
    tool_steps = [s for s in steps if isinstance(s, ToolStep)]
    assert [s.error for s in tool_steps] == [None] * len(task.tool_steps)
    assert final.stop_reason == "answer" and final.answer == task.answer
    assert final.tool_calls == len(task.tool_steps) and final.invalid_tool_calls == 0
    failed = [o for o in outcomes if not o.passed]
    assert not failed, f"{task.source.name}: the reference solution fails its own checks: {failed}"


@pytest.mark.parametrize("task", TASKS, ids=[t.id for t in TASKS])
def test_noop_fails(task, tmp_path):
    _, final, outcomes = run(NoopModel(), task, tmp_path)
    assert final.answer == NOOP_ANSWER and final.tool_calls == 0
    assert not all(o.passed for o in outcomes), f"{task.source.name}: checks pass without doing anything"
