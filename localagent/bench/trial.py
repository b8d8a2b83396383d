"""One bench trial: a model, a task, a fresh workspace, and the result it gives.

The runner (bench/runner.py) and a cluster's nodes (bench/cluster.py) run every trial through
here: `run_trial` with a model already open (`engine_config` opens it as the bench asks,
`local_facts` and `ModelFacts` say what is the same for all its trials), `failed_result` for a
trial that could not run at all. A failure of the harness inside a trial becomes that trial's
runtime_error result, never the end of the bench.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from localagent.bench import metrics
from localagent.bench.checks import classify_failure, run_checks
from localagent.bench.results_errors import write_error
from localagent.bench.rundir import RunDir
from localagent.bench.schema import CheckResult, RunInfo, TrialResult
from localagent.bench.tasks import Task, make_workspace
from localagent.catalog import Price, cost_usd
from localagent.engines.base import ChatModel, EngineConfig, EngineInfo
from localagent.errors import ConfigError, ResultsWriteError
from localagent.records import FinalStep, ModelStep, Usage
from localagent.trace import TraceWriter
from localagent.units import utc_now

if TYPE_CHECKING:
    from localagent.bench.runner import BenchConfig

ModelKind = Literal["local", "hosted", "pseudo"]


@dataclass
class Plan:
    """What a trial runs under: the run's settings, its record and folder, and (for the
    runner) the tasks, the models and the trials already done. A cluster node makes one of
    its own per model, with a temporary run folder for the traces it sends back."""

    config: BenchConfig  # the settings in force (a resumed run's own)
    info: RunInfo
    run: RunDir
    tasks: list[Task]
    kinds: dict[str, ModelKind]
    done: dict[tuple[str, str, int], TrialResult] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.kinds) * len(self.tasks) * self.config.trials

    def pending(self, model: str) -> Iterator[tuple[Task, int]]:
        """The trials of `model` not done yet, made as they are run, not listed up front."""
        return ((t, k) for t in self.tasks for k in range(self.config.trials) if (model, t.id, k) not in self.done)

    def has_pending(self, model: str) -> bool:
        return next(self.pending(model), None) is not None


@dataclass(frozen=True)
class ModelFacts:
    """What is the same for every trial of one model."""

    kind: ModelKind
    file_bytes: int | None = None
    kv_cache_bytes: int | None = None
    price: Price | None = None  # hosted models only


def engine_config(config: BenchConfig, **overrides: Any) -> EngineConfig:
    """How the bench opens a model: the run's tool mode, context and thinking, with `overrides`
    (n_threads on a cluster node, shorter timeouts for a reachability check)."""
    return EngineConfig(tool_mode=config.tool_mode, n_ctx=config.n_ctx, think=config.think, **overrides)


def local_facts(model: ChatModel) -> ModelFacts:
    """A loaded local model's file size and KV cache at its context, from its GGUF header."""
    from localagent import ggufinfo

    engine = model.describe()
    path = Path(engine.path or "")
    file_bytes = kv = None
    if path.is_file():
        file_bytes = path.stat().st_size
        per_token = ggufinfo.read(path).kv_bytes_per_token
        if per_token and engine.n_ctx:
            kv = per_token * int(engine.n_ctx)
    return ModelFacts("local", file_bytes, kv)


def pseudo_model(alias: str, task: Task) -> ChatModel:
    """The scripted model `alias` (oracle, noop) for one task: the oracle replays its solution."""
    from localagent.engines import open_pseudo

    return open_pseudo(alias, task.solution)


def run_trial(plan: Plan, alias: str, model: ChatModel, facts: ModelFacts, task: Task, trial: int) -> TrialResult:
    """One trial in a fresh workspace; a failure of the harness itself becomes a runtime_error
    result instead of ending the bench."""
    from localagent.agent import Agent, AgentConfig
    from localagent.energy import EnergyMeter
    from localagent.memory import PeakMemory

    config = plan.config
    seed = trial
    trace_rel = plan.run.trace_path(alias, task.id, trial)
    agent_config = AgentConfig(
        max_steps=task.max_steps or config.max_steps,
        time_limit_s=config.time_limit_s,
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        seed=seed,
        path_constraints=config.path_constraints,
    )
    header = {
        "run_id": plan.info.run_id,
        "model": alias,
        "task_id": task.id,
        "task_sha256": task.sha256,
        "trial": trial,
        "seed": seed,
        "temperature": config.temperature,
        "path_constraints": config.path_constraints,
        "prompt": task.prompt,
        "engine": model.describe().as_dict(),
    }
    seen = _Observed(memory=PeakMemory() if facts.kind != "hosted" else None)
    # a hosted trial's energy is the provider's, and its trials overlap: local trials only
    meter = EnergyMeter(config.watts) if facts.kind == "local" else None
    with tempfile.TemporaryDirectory(prefix="localagent-bench-") as tmp:
        try:
            workspace = make_workspace(task, Path(tmp) / "workspace")
            agent = Agent(model, workspace, agent_config)
            with (
                _RunTrace(plan.run.path / trace_rel, header) as trace,
                seen.memory or nullcontext(),
                meter or nullcontext(),
            ):
                for step in agent.run(task.prompt):
                    trace.write(step)
                    if isinstance(step, ModelStep):
                        seen.model_steps.append(step)
                    elif isinstance(step, FinalStep):
                        seen.final = step
            if seen.final is not None:
                seen.checks = run_checks(
                    task, workspace, seen.final.answer, allow_unconfined=config.allow_unconfined_checks
                )
        except ResultsWriteError:
            # the run folder cannot be written: no result of this trial can be kept, and every
            # next trial would fail the same way (recorded as runtime errors before, rc 0)
            raise
        except Exception as exc:  # noqa: BLE001 - recorded as the trial's runtime error
            seen.error = f"{type(exc).__name__}: {exc}"
    # described after the run: a hosted engine may have switched modes on the first call
    result = _result(plan, alias, facts, task, trial, seed, seen, trace_rel, model.describe())
    if meter is None or meter.result is None:
        return result
    return result.model_copy(update={"energy_joules": meter.result.joules, "energy_method": meter.result.method})


def failed_result(plan: Plan, alias: str, kind: ModelKind, task: Task, trial: int, error: str) -> TrialResult:
    """The runtime_error result of a trial that never ran to its end where it was sent (it
    raised on a cluster node, or lost its worker every time): no trace, no engine."""
    return _result(plan, alias, ModelFacts(kind), task, trial, trial, _Observed(error=error), None, None)


class _RunTrace(TraceWriter):
    """A trial's trace in the run folder. A write that fails (disk full, a read-only folder, a
    file size limit) is the run folder's failure, not the trial's: ResultsWriteError naming the
    file, raised from that first failed write. Closing the file after it, which fails again
    on the bytes still buffered, stays quiet so as not to replace it."""

    def __enter__(self) -> _RunTrace:
        try:
            super().__enter__()
        except ConfigError as exc:  # the file could not be opened: TraceWriter keeps the OSError as cause
            if isinstance(exc.__cause__, OSError):
                raise write_error(self.path, exc.__cause__) from None
            raise
        except ResultsWriteError:  # the header could not be written
            self.__exit__(None, None, None)
            raise
        return self

    def _append(self, record: dict[str, Any]) -> None:
        try:
            super()._append(record)
        except OSError as exc:
            raise write_error(self.path, exc) from None

    def __exit__(self, *exc_info: Any) -> None:
        with suppress(OSError):  # every record was flushed as written: only an echo can fail here
            super().__exit__(*exc_info)


@dataclass
class _Observed:
    """What one trial produced, gathered while it ran."""

    memory: Any = None  # PeakMemory, except for hosted trials
    model_steps: list[ModelStep] = field(default_factory=list)
    final: FinalStep | None = None
    checks: list[CheckResult] = field(default_factory=list)
    error: str | None = None  # the harness failed


def _result(
    plan: Plan,
    alias: str,
    facts: ModelFacts,
    task: Task,
    trial: int,
    seed: int,
    seen: _Observed,
    trace_rel: str | None,
    engine: EngineInfo | None,
) -> TrialResult:
    final, memory, model_steps = seen.final, seen.memory, seen.model_steps
    usage = final.usage if final else sum((s.reply.usage for s in model_steps), Usage())
    stop_reason = final.stop_reason if final and seen.error is None else "runtime_error"
    failure = "runtime_error" if stop_reason == "runtime_error" else classify_failure(stop_reason, seen.checks)
    timings = [s.reply.timings for s in model_steps]
    return TrialResult(
        run_id=plan.info.run_id,
        model=alias,
        model_kind=facts.kind,
        task_id=task.id,
        task_sha256=task.sha256,
        tier=task.tier,
        trial=trial,
        seed=seed,
        temperature=plan.config.temperature,
        finished_at=utc_now(),
        success=failure is None,
        failure_mode=failure,
        checks=seen.checks,
        stop_reason=stop_reason,
        answer=final.answer if final else "",
        error=seen.error or (final.error if final else None),
        steps=len(model_steps),
        tool_calls=final.tool_calls if final else 0,
        invalid_tool_calls=final.invalid_tool_calls if final else 0,
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        prompt_tokens_evaluated=sum(t.prompt_tokens_evaluated for t in timings),
        wall_s=final.wall_s if final else sum(t.total_s for t in timings),
        model_s=final.model_s if final else sum(t.total_s for t in timings),
        tool_s=final.tool_s if final else 0.0,
        ttft_s_mean=metrics.mean(t.ttft_s for t in timings),
        prefill_tokens_per_s=metrics.throughput((t.prompt_tokens_evaluated, t.prefill_tokens_per_s) for t in timings),
        decode_tokens_per_s=metrics.throughput(
            (max(s.reply.usage.output_tokens - 1, 0), s.reply.timings.decode_tokens_per_s) for s in model_steps
        ),
        peak_rss_bytes=memory.peak_rss if memory else None,
        peak_anon_bytes=memory.peak_anon if memory else None,
        peak_file_bytes=memory.peak_file if memory else None,
        model_file_bytes=facts.file_bytes,
        kv_cache_bytes=facts.kv_cache_bytes,
        cost_usd=cost_usd(usage, facts.price),
        price_as_of=facts.price.as_of if facts.price else None,
        engine=engine.as_dict() if engine is not None else {},
        trace_path=trace_rel,
    )
