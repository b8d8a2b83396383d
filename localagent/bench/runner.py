"""The bench runner: every (model, task, trial) through the real agent loop and tools, each
trial in a fresh workspace, each result appended the moment it ends.

Local models are loaded once per run and run one trial at a time (they share the CPU, and
concurrent trials would distort their timings). Hosted baselines run trials concurrently on a
thread pool. A baseline that cannot be reached is reported in one line and replaced by its
latest stored results on the same task versions, so the comparison still stands.

One trial (a model, a task, a fresh workspace, its result) is bench/trial.py's, which the
cluster's nodes (bench/cluster.py) run too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from localagent import __version__, settings
from localagent.bench.checks import require_confinement
from localagent.bench.database import ResultsDB
from localagent.bench.rundir import RunDir, key_of, locate_run, new_run_id
from localagent.bench.schema import HostInfo, RunInfo, TrialResult
from localagent.bench.tasks import Task, default_tasks_dir, load_tasks
from localagent.bench.trial import ModelFacts, ModelKind, Plan, engine_config, local_facts, pseudo_model, run_trial
from localagent.catalog import Catalog, HostedModel, load_catalog
from localagent.engines.base import ChatModel, ToolMode
from localagent.errors import ConfigError, LocalAgentError, ResultsError, ResultsWriteError
from localagent.records import Message
from localagent.units import utc_now

if TYPE_CHECKING:
    from localagent.store import ResolvedModel

# --trials 1000000000 grew to 3.4 GB listing its plan without finishing a trial; a thousand is
# far past what pass^k needs (and the pending trials are now made as they run, not listed).
MAX_TRIALS = 1000
# --ctx 4294967296 failed inside llama-cpp-python with a 16 GiB numpy allocation traceback:
# no model is trained on more than 4M tokens (2^22), and a model's own context is checked
# before loading (check_context)
MIN_CTX = 256
MAX_CTX = 4_194_304


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = ()  # local or pseudo models; empty: the catalog's default
    baselines: tuple[str, ...] = ()  # hosted aliases
    tasks_dir: Path | None = None  # None: the shipped suite
    task_ids: tuple[str, ...] = ()
    tier: int | None = None
    quick: bool = False  # only tasks tagged "quick"
    trials: int = 1
    tool_mode: ToolMode = "auto"
    think: bool | None = None  # None: each model's default (the catalog's `thinking`)
    temperature: float = 0.0
    path_constraints: bool = True  # json mode's grammar offers only the workspace's paths (pathchoices.py)
    jobs: int = 4  # concurrent trials of a hosted baseline
    out: Path | None = None  # the run folder; None: settings.runs_dir()/<run id>
    resume: str | None = None  # a run id or folder: its own settings replace the ones above
    max_steps: int = 20  # for tasks that set none
    time_limit_s: float = 600.0  # per trial
    max_tokens: int = 1024  # per model call
    n_ctx: int | None = None  # None: the engine's default
    download_progress: bool = False  # show a bar when a local model must be pulled first
    allow_unconfined_checks: bool = False  # run task commands even where nothing can confine them
    watts: float | None = None  # local trials' power draw where RAPL cannot be read (energy.py)
    energy_price_per_kwh: float | None = None  # to price the energy estimate at, apart from API dollars
    # a Ray cluster's address: the trials run on its nodes (bench/cluster.py); None: here
    cluster: str | None = None
    hosts: tuple[str, ...] = ()  # the cluster nodes that may run local models (empty: any)
    pins: tuple[tuple[str, tuple[str, ...]], ...] = ()  # model -> the nodes that may run it
    argv: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("trials", "jobs", "max_steps", "max_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.trials > MAX_TRIALS:
            raise ConfigError(
                f"--trials must be at most {MAX_TRIALS}, got {self.trials}",
                hint="pass^k is reported for k up to the trials run; a few (3 to 10) trials per task are enough to compare models",
            )
        if self.n_ctx is not None and not MIN_CTX <= self.n_ctx <= MAX_CTX:
            raise ConfigError(
                f"--ctx must be between {MIN_CTX} and {MAX_CTX:,} tokens, got {self.n_ctx:,}",
                hint="the KV cache grows with the context; leave --ctx out for the engine's default, or give at most the model's trained context",
            )
        if self.time_limit_s <= 0:
            raise ConfigError(f"the time limit must be positive, got {self.time_limit_s}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(f"--temperature must be between 0 and 2, got {self.temperature}")
        for name, flag in (("watts", "--watts"), ("energy_price_per_kwh", "--energy-price")):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1e6:  # nan and inf too
                raise ConfigError(f"{flag} must be a positive number, got {value}")
        if (self.hosts or self.pins) and not self.cluster:
            raise ConfigError("--hosts and --pin choose cluster nodes", hint="give the cluster with --cluster ADDRESS")

    @property
    def limits(self) -> dict[str, Any]:
        return {
            "max_steps": self.max_steps,
            "time_limit_s": self.time_limit_s,
            "max_tokens": self.max_tokens,
            "n_ctx": self.n_ctx,
        }


# --- events: what the CLI shows while a bench runs ---


@dataclass(frozen=True)
class RunStarted:
    info: RunInfo
    run_dir: Path


@dataclass(frozen=True)
class Notice:
    text: str  # one line for the user


@dataclass(frozen=True)
class ModelLoading:
    model: str


@dataclass(frozen=True)
class ModelLoaded:
    model: str
    load_s: float


@dataclass(frozen=True)
class TrialDone:
    result: TrialResult
    done: int  # trials finished in this run so far, resumed ones included
    total: int


BenchEvent = Union[RunStarted, Notice, ModelLoading, ModelLoaded, TrialDone]


@dataclass(frozen=True)
class BenchOutcome:
    info: RunInfo
    run_dir: Path
    trials: list[TrialResult]  # this run's, in the order they finished
    baseline_trials: list[TrialResult]  # stored results standing in for baselines not run now
    notices: list[str]


# --- the plan ---


def model_kind(alias: str, catalog: Catalog) -> ModelKind:
    """Local covers catalog aliases, alias:QUANT, hub names and paths to .gguf files (checked
    before the first trial): modelref.kind_of decides."""
    from localagent import modelref

    return modelref.kind_of(alias, catalog)


def _kinds(config: BenchConfig, catalog: Catalog) -> dict[str, ModelKind]:
    kinds: dict[str, ModelKind] = {}
    for alias in dict.fromkeys(config.models or (catalog.default,)):
        kinds[alias] = model_kind(alias, catalog)
        if kinds[alias] == "hosted":
            raise ConfigError(f"'{alias}' is a hosted model", hint=f"compare against it with --baseline {alias}")
    for alias in dict.fromkeys(config.baselines):
        if alias in kinds:
            raise ConfigError(f"'{alias}' is given both as --model and --baseline")
        kinds[alias] = model_kind(alias, catalog)
        if kinds[alias] != "hosted":
            if kinds[alias] == "local" and catalog.canonical(alias) not in catalog.local:
                catalog.get(alias)  # unknown: the catalog's error suggests close names
            raise ConfigError(
                f"--baseline takes a hosted model; '{alias}' is {kinds[alias]}", hint=f"run it with --model {alias}"
            )
    return kinds


def host_info() -> HostInfo:
    from localagent import hardware

    h = hardware.host(settings.models_dir())
    return HostInfo(
        cpu=h.cpu,
        physical_cores=h.physical_cores or 0,
        logical_cores=h.logical_cores or 0,
        ram_bytes=h.ram_total,
        gpu=h.backend if h.gpu_offload else "none",
        os=h.os,
        python=h.python,
    )


def price_table(catalog: Catalog, baselines: Iterable[str]) -> str:
    """The catalog files the prices come from and the dates they were copied."""
    dates = sorted({e.price.as_of for b in baselines if isinstance(e := catalog.get(b), HostedModel) and e.price})
    files = "; ".join(str(s) for s in catalog.sources)
    return f"{files} (prices as of {', '.join(dates)})" if dates else f"{files} (no hosted prices used)"


def _select_tasks(config: BenchConfig) -> list[Task]:
    tasks = load_tasks(config.tasks_dir, ids=config.task_ids, tier=config.tier)
    if config.quick:
        tasks = [t for t in tasks if "quick" in t.tags]
        if not tasks:
            raise ConfigError(
                "no selected task is tagged 'quick'", hint='drop --quick, or tag some tasks with tags = ["quick"]'
            )
    return tasks


def check_local_models(kinds: dict[str, ModelKind], config: BenchConfig) -> None:
    """Fail before the first trial, not after an hour, when a local model is unknown or
    cannot be had (a model not yet on disk is pulled here), or does not fit this machine's
    RAM at --ctx (or the default context): refused before any download (modelref.prepare).
    On a cluster each node checks (and pulls) for itself instead."""
    from localagent import modelref

    if config.cluster:
        return
    for alias, kind in kinds.items():
        if kind == "local":
            modelref.prepare(alias, n_ctx=config.n_ctx, progress=config.download_progress)


def check_context(resolved: ResolvedModel, n_ctx: int, available: int) -> None:
    """Refuse a --ctx past the model's trained context, or whose KV cache with the weights
    does not fit the `available` bytes of RAM, saying how much it would need
    (modelref.check_fit, for a model on disk)."""
    from localagent import modelref

    ref = modelref.ModelRef(resolved.alias, "local", resolved.entry, installed=resolved)
    modelref.check_fit(ref, n_ctx, available)


def _confine_commands(config: BenchConfig, tasks: list[Task]) -> str | None:
    """How the tasks' command checks will run (None: they have none); refuses to run them
    unconfined unless the config allows it."""
    if not any(c.kind == "command" for task in tasks for c in task.checks):
        return None
    found = require_confinement(config.allow_unconfined_checks)
    if found.mechanism is None:
        return f"command checks run UNCONFINED (--allow-unconfined-checks): {found.detail}"
    return f"command checks run confined by {found.detail}"


def _with_energy_settings(config: BenchConfig) -> BenchConfig:
    """--watts and --energy-price, else LOCALAGENT_WATTS and LOCALAGENT_ENERGY_PRICE."""
    from localagent import energy

    return dataclasses.replace(
        config,
        watts=config.watts if config.watts is not None else energy.setting("LOCALAGENT_WATTS", "--watts"),
        energy_price_per_kwh=config.energy_price_per_kwh
        if config.energy_price_per_kwh is not None
        else energy.setting("LOCALAGENT_ENERGY_PRICE", "--energy-price"),
    )


def _plan_kinds(config: BenchConfig, catalog: Catalog) -> tuple[dict[str, ModelKind], dict[str, ModelKind]]:
    """The kind of every model of the run, a cascade ('small>big', bench/cascade.py) as one of
    its own; and the kinds of the models that will load (a cascade's steps in its place),
    for the checks before the first trial."""
    from localagent.bench import cascade

    steps_config, cascades = cascade.expand(config, catalog)
    steps = _kinds(steps_config, catalog)
    if not cascades:
        return steps, steps
    # with only cascades of hosted steps, _kinds adds the default model: it does not run
    named = {*steps_config.models, *steps_config.baselines}
    steps = {a: k for a, k in steps.items() if a in named}
    if config.cluster:
        raise ConfigError("a cascade runs on this machine only", hint="drop --cluster, or bench its models one by one")
    kinds: dict[str, ModelKind] = {}
    for alias in (*config.models, *config.baselines):
        parts = cascades.get(alias)
        kinds[alias] = cascade.kind(parts, catalog) if parts else steps[alias]
    return kinds, steps


def _new_plan(config: BenchConfig, catalog: Catalog, db: ResultsDB, held: ExitStack) -> Plan:
    config = _with_energy_settings(config)
    kinds, steps = _plan_kinds(config, catalog)
    tasks = _select_tasks(config)
    _confine_commands(config, tasks)  # refused before a run folder exists
    check_local_models(steps, config)
    run_id = new_run_id()
    info = RunInfo(
        run_id=run_id,
        started_at=utc_now(),
        localagent_version=__version__,
        host=host_info(),
        models=[a for a, k in kinds.items() if k != "hosted" or a not in steps],  # a cascade is a --model
        baselines=[a for a, k in kinds.items() if k == "hosted" and a in steps],
        tasks_dir=str((config.tasks_dir or default_tasks_dir()).resolve()),
        task_ids=[t.id for t in tasks],
        trials=config.trials,
        tool_mode=config.tool_mode,
        think=config.think,
        temperature=config.temperature,
        path_constraints=config.path_constraints,
        price_table=price_table(catalog, config.baselines),
        limits=config.limits,
        argv=list(config.argv),
        watts=config.watts,
        energy_price_per_kwh=config.energy_price_per_kwh,
    )
    run = RunDir.create(config.out or settings.runs_dir() / run_id, info)
    held.enter_context(run.lock(run_id))  # a --resume of this run while it runs is refused
    db.save_run(info, run.path)
    return Plan(config, info, run, tasks, kinds)


def _resume_plan(
    config: BenchConfig, catalog: Catalog, db: ResultsDB, held: ExitStack, notify: Callable[[str], None]
) -> Plan:
    run = locate_run(config.resume or "", db)
    info = run.read_info()
    # before anything reads or repairs results.jsonl: another bench may be appending to it
    held.enter_context(run.lock(info.run_id))
    # a line that is no trial is left where it is, and its trial (if it held one) runs again
    done = {key_of(t): t for t in run.read_trials(on_problem=notify)}
    run.repair()
    limits = info.limits
    config = dataclasses.replace(
        config,
        models=tuple(info.models),
        baselines=tuple(info.baselines),
        tasks_dir=Path(info.tasks_dir),
        task_ids=tuple(info.task_ids),
        tier=None,
        quick=False,
        trials=info.trials,
        tool_mode=info.tool_mode,
        think=info.think,
        temperature=info.temperature,
        path_constraints=info.path_constraints,
        max_steps=limits.get("max_steps", config.max_steps),
        time_limit_s=limits.get("time_limit_s", config.time_limit_s),
        max_tokens=limits.get("max_tokens", config.max_tokens),
        n_ctx=limits.get("n_ctx", config.n_ctx),
        watts=info.watts,
        energy_price_per_kwh=info.energy_price_per_kwh,
    )
    kinds, steps = _plan_kinds(config, catalog)
    tasks = load_tasks(config.tasks_dir, ids=config.task_ids)
    _confine_commands(config, tasks)
    versions = {t.id: t.sha256 for t in tasks}
    for trial in done.values():
        if versions.get(trial.task_id, trial.task_sha256) != trial.task_sha256:
            raise ResultsError(
                f"task '{trial.task_id}' changed since run {info.run_id} started (its file's sha256 differs)",
                hint="results compare only on equal task versions: start a new run",
            )
    check_local_models(steps, config)
    # a kill between the results.jsonl append and the database insert leaves the database behind
    db.save_run(info, run.path)
    for trial in done.values():
        db.add_trial(trial)
    return Plan(config, info, run, tasks, kinds, done)


# --- models ---


def reach_baseline(alias: str, config: BenchConfig) -> str | None:
    """None when the hosted model answers a tiny request; else why not, in a few words."""
    from localagent.engines import open_model

    try:
        model = open_model(alias, engine_config(config, max_retries=1, timeout_s=30.0))
        try:
            model.chat([Message(role="user", content="Reply with OK.")], [], max_tokens=16)
        finally:
            model.close()
    except LocalAgentError as exc:
        return " ".join(exc.message.split())
    return None


def _fallback_notice(alias: str, reason: str, stored: list[TrialResult], n_tasks: int) -> str:
    head = f"baseline {alias} not run ({reason})"
    if not stored:
        return f"{head}; no stored results on these task versions to compare with"
    days = sorted({t.finished_at[:10] for t in stored})
    when = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    tasks = len({t.task_id for t in stored})
    return f"{head}; comparing with its stored results from {when} ({tasks} of {n_tasks} tasks)"


# --- the run ---


class _Recorder:
    """Appends each finished trial to results.jsonl and the database, then tells the CLI."""

    def __init__(self, plan: Plan, db: ResultsDB, emit: Callable[[BenchEvent], None]):
        self.plan, self.db, self.emit = plan, db, emit
        self.trials: list[TrialResult] = list(plan.done.values())

    def __call__(self, result: TrialResult) -> None:
        self.plan.run.append(result)
        self.db.add_trial(result)
        self.plan.done[key_of(result)] = result
        self.trials.append(result)
        self.emit(TrialDone(result, len(self.plan.done), self.plan.total))


def _run_local(plan: Plan, alias: str, record: _Recorder, emit: Callable[[BenchEvent], None]) -> None:
    if not plan.has_pending(alias):
        return
    pending = plan.pending(alias)
    if plan.kinds[alias] == "pseudo":
        for task, trial in pending:
            model = pseudo_model(alias, task)
            record(run_trial(plan, alias, model, ModelFacts("pseudo"), task, trial))
        return
    from localagent.engines import open_model

    emit(ModelLoading(alias))
    model = open_model(alias, engine_config(plan.config))
    try:
        plan.info.load_s[alias] = round(model.load_s, 3)
        plan.run.write_info(plan.info)
        emit(ModelLoaded(alias, model.load_s))
        facts = local_facts(model)
        for task, trial in pending:
            record(run_trial(plan, alias, model, facts, task, trial))
    finally:
        model.close()


def _run_hosted(plan: Plan, alias: str, catalog: Catalog, record: _Recorder) -> None:
    from localagent.engines import open_model

    pending = plan.pending(alias)
    entry = catalog.get(alias)
    assert isinstance(entry, HostedModel)
    model = open_model(alias, engine_config(plan.config))
    facts = ModelFacts("hosted", price=entry.price)
    pool = ThreadPoolExecutor(max_workers=plan.config.jobs, thread_name_prefix=f"bench-{alias}")
    try:
        futures: list[Future[TrialResult]] = [
            pool.submit(run_trial, plan, alias, model, facts, t, k) for t, k in pending
        ]
        for future in as_completed(futures):
            record(future.result())
    finally:
        # on Ctrl-C, drop the queued trials instead of waiting for all of them
        pool.shutdown(wait=False, cancel_futures=True)
        model.close()


def _run_cascade(
    plan: Plan, name: str, catalog: Catalog, record: _Recorder, emit: Callable[[BenchEvent], None]
) -> None:
    """Each pending trial of the cascade `name`: its steps in turn, each on a fresh workspace,
    until one answers; recorded as one trial (bench/cascade.py). Every step loads once."""
    from localagent.bench import cascade
    from localagent.engines import open_model

    parts = cascade.members(name) or (name,)
    if not plan.has_pending(name):
        return
    with ExitStack() as held:
        opened: dict[str, tuple[ChatModel | None, ModelFacts]] = {}
        for step in dict.fromkeys(parts):
            kind = model_kind(step, catalog)
            if kind == "pseudo":
                opened[step] = (None, ModelFacts("pseudo"))
                continue
            if kind == "local":
                emit(ModelLoading(step))
            model = open_model(step, engine_config(plan.config))
            held.callback(model.close)
            if kind == "local":
                emit(ModelLoaded(step, model.load_s))
                opened[step] = (model, local_facts(model))
            else:
                entry = catalog.get(step)
                opened[step] = (
                    model,
                    ModelFacts("hosted", price=entry.price if isinstance(entry, HostedModel) else None),
                )
        for task, trial in plan.pending(name):
            tries: list[TrialResult] = []
            for i, step in enumerate(parts):
                loaded, facts = opened[step]
                model = loaded or pseudo_model(step, task)
                tries.append(run_trial(plan, f"{name}#{i + 1}", model, facts, task, trial))
                if tries[-1].stop_reason == "answer":
                    break
            record(cascade.combine(name, plan.kinds[name], parts, tries))


def run_bench(config: BenchConfig, on_event: Callable[[BenchEvent], None] | None = None) -> BenchOutcome:
    """Run (or resume) a bench. Every finished trial is on disk before the next starts, so an
    interrupt loses only the trials in flight; `BenchConfig(resume=run_id)` finishes the rest."""
    emit = on_event or (lambda event: None)
    catalog = load_catalog()
    notices: list[str] = []

    def notify(text: str) -> None:
        notices.append(text)
        emit(Notice(text))

    if config.cluster and not config.resume:
        from localagent.bench import cluster

        cluster.preflight(config)
    with ResultsDB() as db, ExitStack() as held:
        db.check_writable()  # a read-only or damaged database fails here, before a run folder exists
        plan = (
            _resume_plan(config, catalog, db, held, notify) if config.resume else _new_plan(config, catalog, db, held)
        )
        try:
            return _run_plan(plan, catalog, db, emit, notify, notices)
        except ResultsWriteError as exc:
            exc.hint = "; ".join(
                filter(
                    None,
                    [
                        exc.hint,
                        f"then `localagent bench --resume {plan.info.run_id}` runs the trials left (finished ones are kept)",
                    ],
                )
            )
            raise


def _run_plan(
    plan: Plan,
    catalog: Catalog,
    db: ResultsDB,
    emit: Callable[[BenchEvent], None],
    notify: Callable[[str], None],
    notices: list[str],
) -> BenchOutcome:
    """Every pending trial of the plan, recorded as it ends, then the run marked finished."""
    emit(RunStarted(plan.info, plan.run.path))
    how = _confine_commands(plan.config, plan.tasks)
    if how:
        notify(how)
    if plan.done:
        notify(f"resuming run {plan.info.run_id}: {len(plan.done)} of {plan.total} trials already done")
    record = _Recorder(plan, db, emit)
    baseline_trials: list[TrialResult] = []
    reachable: list[str] = []
    shas = [t.sha256 for t in plan.tasks]
    for alias in plan.info.baselines:
        if not plan.has_pending(alias):
            continue
        reason = reach_baseline(alias, plan.config)
        if reason is None:
            reachable.append(alias)
            continue
        stored = [t for t in db.latest_results(alias, shas) if t.run_id != plan.info.run_id]
        baseline_trials.extend(stored)
        notify(_fallback_notice(alias, reason, stored, len(plan.tasks)))
    if plan.config.cluster:
        from localagent.bench import cluster

        cluster.run_plan(plan, catalog, record, emit, notify, reachable)
        plan.run.write_info(plan.info)  # the load times the nodes reported
    else:
        for alias in reachable:
            _run_hosted(plan, alias, catalog, record)
        for alias in plan.info.models:
            if ">" in alias:
                _run_cascade(plan, alias, catalog, record, emit)
            else:
                _run_local(plan, alias, record, emit)
    # baselines that could not run stay pending: a later --resume can still fill them in
    plan.info.finished_at = utc_now()
    plan.run.write_info(plan.info)
    db.save_run(plan.info, plan.run.path)
    return BenchOutcome(plan.info, plan.run.path, record.trials, baseline_trials, notices)
