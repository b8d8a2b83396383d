"""The bench on a Ray cluster (`bench --cluster ADDRESS`): the driver plans the trials, Ray runs
them on the cluster's nodes, and the driver alone writes results.jsonl, the traces and
results.db as the results come back, so resume, report and export work as for a run made on
one machine.

- A local model runs where the hardware is. On each node that may run it (`--hosts`, `--pin`),
  an actor loads it once and runs its trials one after another, and a node runs one trial at a
  time (two trials on one node share its cores and distort each other's timings, as they
  would on one machine). A node that lacks the model pulls it into its own store, verified as
  `models pull` does; an offline node refuses, named in the notice, and the others go on.
- Pseudo models and hosted baselines run as Ray tasks, at most --jobs at once per provider.
- A trial whose worker or node died runs again elsewhere (MAX_ATTEMPTS in all) and is
  recorded once; a trial that raised on its node is recorded as a runtime error; Ctrl-C
  cancels the cluster's work and `bench --resume` runs what is left.

Every node needs localagent installed (with the same Python as the driver: Ray requires it),
and each trial records the machine it ran on (TrialResult.host, .node).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from localagent import settings
from localagent.bench import runner
from localagent.bench.results_errors import write_error
from localagent.bench.rundir import RunDir
from localagent.bench.schema import TrialResult
from localagent.bench.trial import (
    ModelFacts,
    ModelKind,
    Plan,
    engine_config,
    failed_result,
    local_facts,
    pseudo_model,
    run_trial,
)
from localagent.errors import ConfigError, LocalAgentError
from localagent.files import atomic_write

if TYPE_CHECKING:
    from localagent.bench.schema import RunInfo
    from localagent.bench.tasks import Task
    from localagent.catalog import Catalog, HostedModel

# the node label (`ray start --labels localagent-host=NAME`) that names a machine for --hosts
# and --pin; a node without it is named by its address and the start of its id
HOST_LABEL = "localagent-host"
# a trial is run again when its worker or node dies under it, up to this many attempts in all:
# a trial that kills every worker it lands on (one that runs the node out of memory) must end
MAX_ATTEMPTS = 3
NAMESPACE = "localagent"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Which nodes may run local models: `hosts` for every model (empty: any node with CPUs),
    `pins` for one model each (model -> node names), both checked against the cluster."""

    hosts: tuple[str, ...] = ()
    pins: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def allows(self, alias: str, node: str) -> bool:
        pinned = dict(self.pins).get(alias)
        if pinned is not None:
            return node in pinned
        return not self.hosts or node in self.hosts


def parse_pins(values: list[str] | tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`--pin MODEL=HOST[,HOST]` values; the model part may itself hold '=' only if quoted
    away, so the last '=' splits."""
    pins: dict[str, tuple[str, ...]] = {}
    for value in values:
        model, sep, hosts = value.rpartition("=")
        names = tuple(h.strip() for h in hosts.split(",") if h.strip())
        if not sep or not model.strip() or not names:
            raise ConfigError(f"--pin {value!r} is not MODEL=HOST[,HOST]", hint="e.g. --pin qwen-small=gpu-box")
        if model.strip() in pins:
            raise ConfigError(
                f"--pin names {model.strip()!r} twice", hint="give its hosts in one --pin, comma-separated"
            )
        pins[model.strip()] = names
    return tuple(pins.items())


# --- the cluster, as the driver sees it ----------------------------------------------------


@dataclass
class Node:
    """One alive node, and what the driver has it doing."""

    id: str
    name: str
    cpus: float
    actor: Any = None  # the actor holding a local model on this node
    alias: str | None = None  # the model that actor holds
    busy: bool = False  # loading the model or running a trial
    refused: set[str] = field(default_factory=set)  # models it could not load


def node_name(info: dict[str, Any]) -> str:
    labels = info.get("Labels") or {}
    return str(labels.get(HOST_LABEL) or f"{info.get('NodeManagerAddress', '?')}/{str(info.get('NodeID', ''))[:8]}")


def alive_nodes() -> list[Node]:
    import ray

    return [
        Node(id=n["NodeID"], name=node_name(n), cpus=float((n.get("Resources") or {}).get("CPU", 0)))
        for n in ray.nodes()
        if n.get("Alive")
    ]


@contextmanager
def connect(address: str) -> Iterator[list[Node]]:
    """Joins the Ray cluster at `address` for the block; yields its alive nodes."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--cluster needs the 'ray' package", hint="install the extra: pip install 'localagent[cluster]'"
        ) from None
    _check_reachable(address)
    # Ray's driver prints the cluster's error messages (a node that died, a worker killed) to
    # stdout from a thread of its own, even with log_to_driver off, where they would corrupt
    # `bench --json`; the bench tells of those events itself, in its notices
    from ray._private import worker as ray_worker

    printer = ray_worker.print_to_stdstream
    ray_worker.print_to_stdstream = _to_log
    try:
        ray.init(
            address=address,
            namespace=NAMESPACE,
            log_to_driver=False,  # a node's own logging stays in its session logs, not the bench's output
            logging_level=logging.ERROR,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        ray_worker.print_to_stdstream = printer
        raise ConfigError(
            f"cannot join the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}",
            hint="start it with `ray start --head` (see the README's cluster section), check the address and that the "
            "nodes run the same Python and ray version",
        ) from None
    try:
        yield alive_nodes()
    finally:
        ray.shutdown()
        ray_worker.print_to_stdstream = printer


def _to_log(data: dict[str, Any], ignore_prefix: bool = False) -> None:
    for line in data.get("lines", []):
        _log.info("ray (%s): %s", data.get("pid"), line)


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Ray retries an address that does not answer for minutes; a TCP connection says at once
    whether anything listens there. `auto` (Ray's own lookup of a cluster started on this
    machine) is left to Ray."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return
    except ValueError:
        why = "it is not HOST:PORT"
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
    raise ConfigError(
        f"cannot join the Ray cluster at {address}: {why}",
        hint="start it with `ray start --head` (see the README's cluster section) and pass the address it prints",
    )


def check_placement(placement: Placement, nodes: list[Node], models: list[str]) -> None:
    """Refuses host names no node with CPUs has (a head started with --num-cpus 0 runs no
    trials) and pins of models not in the run, before any trial."""
    names = sorted({n.name for n in nodes if n.cpus > 0})
    for alias, _ in placement.pins:
        if alias not in models:
            raise ConfigError(f"--pin names {alias!r}, which is not a --model of this run", hint=f"models: {models}")
    for name in [*placement.hosts, *(h for _, hosts in placement.pins for h in hosts)]:
        if name not in names:
            raise ConfigError(
                f"no node of the cluster is named {name!r}",
                hint=f"nodes: {', '.join(names) or 'none'} (a node is named by `ray start --labels {HOST_LABEL}=NAME`)",
            )


# --- the work, as it runs on a node --------------------------------------------------------


def _worker_plan(config: runner.BenchConfig, info: RunInfo, alias: str, kind: ModelKind) -> Plan:
    """The runner's plan as a node needs it to run one trial: the run's settings, and a run
    folder of its own in a temporary directory for the trace, which goes back to the driver."""
    folder = Path(tempfile.mkdtemp(prefix="localagent-cluster-"))
    here = replace(config, download_progress=False, cluster=None, hosts=(), pins=())  # on this node, as on one machine
    return Plan(here, info, RunDir(folder), [], {alias: kind})


def _sent_back(plan: Plan, result: TrialResult, host: Any) -> tuple[dict[str, Any], bytes]:
    """The result as JSON (validated again on the driver) and its trace's bytes."""
    import ray

    data = b""
    if result.trace_path:
        path = plan.run.path / result.trace_path
        with suppress(FileNotFoundError):
            data = path.read_bytes()
            path.unlink()
    node_id = ray.get_runtime_context().get_node_id()
    record = result.model_copy(update={"host": host, "node": node_id}).model_dump(mode="json")
    return record, data


class ModelWorker:
    """A local model loaded once on one node; Ray runs its methods one at a time."""

    def __init__(self, alias: str, config: runner.BenchConfig, info: RunInfo, cpus: float = 0.0):
        self.alias = alias
        self.error: tuple[str, str | None] | None = None
        self.load_s = 0.0
        try:
            self.plan = _worker_plan(config, info, alias, "local")
            # as on one machine: pulled into this node's store when missing, --ctx checked
            # against this node's RAM, refused when this node is offline and lacks it
            runner.check_local_models({alias: "local"}, self.plan.config)
            from localagent.engines import open_model

            self.model = open_model(alias, engine_config(self.plan.config, n_threads=_threads(cpus)))
        except LocalAgentError as exc:
            self.error = (exc.message, exc.hint)
            return
        self.load_s = self.model.load_s
        self.facts = local_facts(self.model)
        self.host = runner.host_info()

    def ready(self) -> dict[str, Any]:
        return {"error": self.error, "load_s": self.load_s}

    def run(self, task: Task, trial: int) -> tuple[dict[str, Any], bytes]:
        result = run_trial(self.plan, self.alias, self.model, self.facts, task, trial)
        return _sent_back(self.plan, result, self.host)


def _threads(cpus: float) -> int | None:
    """llama.cpp's threads on a node: the CPUs the node gave Ray (`ray start --num-cpus`), at
    most its physical cores. Several nodes can share one machine, and each taking every core
    (the engine's default) oversubscribes it: two 1-CPU nodes on this 2-core VM decoded at a
    seventh of one machine's speed with 2 threads each. None: the node did not say."""
    from localagent.engines.loading import physical_cores

    if cpus < 1:
        return None
    return min(int(cpus), physical_cores())


def pseudo_trial(
    alias: str, config: runner.BenchConfig, info: RunInfo, task: Task, trial: int
) -> tuple[dict[str, Any], bytes]:
    plan = _worker_plan(config, info, alias, "pseudo")
    try:
        model = pseudo_model(alias, task)
        result = run_trial(plan, alias, model, ModelFacts("pseudo"), task, trial)
        return _sent_back(plan, result, runner.host_info())
    finally:
        shutil.rmtree(plan.run.path, ignore_errors=True)


def hosted_trial(
    entry: HostedModel, config: runner.BenchConfig, info: RunInfo, task: Task, trial: int
) -> tuple[dict[str, Any], bytes]:
    from localagent.engines.openai_compat import OpenAICompatModel

    plan = _worker_plan(config, info, entry.alias, "hosted")
    model = OpenAICompatModel(entry, engine_config(plan.config))
    try:
        result = run_trial(plan, entry.alias, model, ModelFacts("hosted", price=entry.price), task, trial)
        return _sent_back(plan, result, runner.host_info())
    finally:
        model.close()
        shutil.rmtree(plan.run.path, ignore_errors=True)


# --- the driver ----------------------------------------------------------------------------


@dataclass
class _Work:
    alias: str
    task: Task
    trial: int
    attempts: int = 0


@dataclass
class _InFlight:
    kind: Literal["load", "trial", "task"]
    node: Node | None
    work: _Work | None
    group: str | None = None  # the concurrency group of a task (a provider, or "pseudo")
    node_id: str | None = None  # the node a task was sent to


class ClusterRun:
    """Runs a plan's pending trials on the cluster; records each result as it comes back."""

    def __init__(
        self,
        plan: Plan,
        catalog: Catalog,
        record: Callable[[TrialResult], None],
        emit: Callable[[runner.BenchEvent], None],
        notify: Callable[[str], None],
        nodes: list[Node],
        placement: Placement,
    ):
        import ray

        self.ray = ray
        self.plan, self.catalog, self.record, self.emit, self.notify = plan, catalog, record, emit, notify
        self.nodes = {n.id: n for n in nodes}
        self.placement = placement
        self.queues: dict[str, deque[_Work]] = {}
        self.in_flight: dict[Any, _InFlight] = {}
        self.running: Counter[str] = Counter()  # tasks in flight per concurrency group
        self.per_node: Counter[str] = Counter()
        self.tasks_on: Counter[str] = Counter()  # tasks in flight per node id
        # no CPU reserved: the driver itself keeps each node to one trial at a time, and a
        # reservation would keep tasks waiting behind actors that hold their model to the end
        self._worker_class = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(ModelWorker)
        self._pseudo = ray.remote(num_cpus=0, max_retries=0)(pseudo_trial)
        self._hosted = ray.remote(num_cpus=0, max_retries=0)(hosted_trial)

    # the plan's trials, by model

    def run(self, aliases: list[str]) -> None:
        for alias in aliases:
            self.queues[alias] = deque(_Work(alias, t, k) for t, k in self.plan.pending(alias))
        try:
            while True:
                self._dispatch()
                if not self.in_flight:
                    break
                ready, _ = self.ray.wait(list(self.in_flight), num_returns=1)
                for ref in ready:
                    self._collect(ref, self.in_flight.pop(ref))
        finally:
            self._stop()
        left = {a: len(q) for a, q in self.queues.items() if q}
        for alias, n in left.items():
            self.notify(
                f"{n} trial(s) of {alias} not run: no node of the cluster could run it; "
                f"`localagent bench --resume {self.plan.info.run_id}` runs them later"
            )

    def _kind(self, alias: str) -> ModelKind:
        return self.plan.kinds[alias]

    def _dispatch(self) -> None:
        for alias, queue in self.queues.items():
            if self._kind(alias) != "local":
                self._submit_tasks(alias, queue)
        for node in list(self.nodes.values()):
            if node.busy or node.cpus <= 0:
                continue
            if node.actor is not None and self.queues.get(node.alias or "", None):
                self._submit_trial(node)
                continue
            following = self._next_model(node)
            if following is not None:
                self._load(node, following)

    def _next_model(self, node: Node) -> str | None:
        """The model this node should load next: one that may run here and has trials left,
        held by the fewest nodes (so models spread over the cluster), then with the most left."""
        held = Counter(n.alias for n in self.nodes.values() if n.actor is not None)
        choices = [
            a
            for a, q in self.queues.items()
            if q and self._kind(a) == "local" and a not in node.refused and self.placement.allows(a, node.name)
        ]
        if not choices:
            return None
        return min(choices, key=lambda a: (held[a], -len(self.queues[a])))

    def _load(self, node: Node, alias: str) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._release(node)
        self.emit(runner.ModelLoading(f"{alias} on {node.name}"))
        node.actor = self._worker_class.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False)
        ).remote(alias, self.plan.config, self.plan.info, node.cpus)
        node.alias, node.busy = alias, True
        self.in_flight[node.actor.ready.remote()] = _InFlight("load", node, None)

    def _submit_trial(self, node: Node) -> None:
        work = self.queues[node.alias or ""].popleft()
        work.attempts += 1
        node.busy = True
        self.in_flight[node.actor.run.remote(work.task, work.trial)] = _InFlight("trial", node, work)

    def _submit_tasks(self, alias: str, queue: deque[_Work]) -> None:
        entry = self.catalog.hosted.get(alias) if self._kind(alias) == "hosted" else None
        group = entry.provider if entry is not None else "pseudo"
        while queue and self.running[group] < self.plan.config.jobs:
            work = queue.popleft()
            work.attempts += 1
            where = self._task_placement()
            if entry is not None:
                env = {entry.api_key_env: key} if entry.api_key_env and (key := settings.env(entry.api_key_env)) else {}
                options: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
                ref = self._hosted.options(scheduling_strategy=where, **options).remote(
                    entry, self.plan.config, self.plan.info, work.task, work.trial
                )
            else:
                ref = self._pseudo.options(scheduling_strategy=where).remote(
                    alias, self.plan.config, self.plan.info, work.task, work.trial
                )
            self.running[group] += 1
            self.tasks_on[where.node_id] += 1
            self.in_flight[ref] = _InFlight("task", None, work, group, where.node_id)

    def _task_placement(self) -> Any:
        """A task goes to the worker node with the fewest tasks in flight (soft: elsewhere if
        that node is gone). Tasks reserve no CPU, so that they never wait behind the model
        actors; a node without CPUs (a head started with --num-cpus 0) is kept for the
        cluster's own work while there are others."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in self.nodes.values() if n.cpus > 0] or list(self.nodes.values())
        node = min(nodes, key=lambda n: self.tasks_on[n.id])
        return NodeAffinitySchedulingStrategy(node.id, soft=True)

    # what comes back

    def _collect(self, ref: Any, job: _InFlight) -> None:
        from ray.exceptions import RayTaskError

        if job.group is not None:
            self.running[job.group] -= 1
        if job.node_id is not None:
            self.tasks_on[job.node_id] -= 1
        if job.node is not None:
            job.node.busy = False
        try:
            value = self.ray.get(ref)
        except RayTaskError as exc:  # the work raised on its node: its own failure, not the node's
            if job.kind == "load":
                self._refused(job.node, f"{type(exc.cause).__name__}: {exc.cause}")
            elif job.work is not None:
                self._record_error(job.work, f"{type(exc.cause).__name__}: {exc.cause}")
            return
        except self.ray.exceptions.RayError as exc:  # the worker, its node or its result was lost
            self._lost(job, exc)
            return
        if job.kind == "load":
            assert job.node is not None
            if value["error"] is not None:
                message, hint = value["error"]
                self._refused(job.node, message + (f" ({hint})" if hint else ""))
            else:
                self.plan.info.load_s.setdefault(job.node.alias or "?", round(value["load_s"], 3))
                self.emit(runner.ModelLoaded(f"{job.node.alias} on {job.node.name}", value["load_s"]))
            return
        assert job.work is not None
        record, trace = value
        self._record(job.work, record, trace)

    def _record(self, work: _Work, record: dict[str, Any], trace: bytes) -> None:
        result = TrialResult.model_validate(record)
        key = (result.model, result.task_id, result.trial)
        if key != (work.alias, work.task.id, work.trial) or key in self.plan.done:
            return  # not the trial asked for, or one already recorded: kept once
        node = self.nodes.get(result.node or "")
        name = node.name if node is not None else _name_of(result.node)
        rel = self.plan.run.trace_path(work.alias, work.task.id, work.trial)
        if trace:
            path = self.plan.run.path / rel
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, trace)
            except OSError as exc:
                raise write_error(path, exc) from None
        self.per_node[name] += 1
        self.record(result.model_copy(update={"node": name, "trace_path": rel if trace else None}))

    def _record_error(self, work: _Work, error: str) -> None:
        """A trial that raised on its node, or lost its worker MAX_ATTEMPTS times: a
        runtime_error result, as a trial that raised on one machine is."""
        result = failed_result(self.plan, work.alias, self._kind(work.alias), work.task, work.trial, error)
        if (work.alias, work.task.id, work.trial) not in self.plan.done:
            self.record(result)

    def _refused(self, node: Node | None, why: str) -> None:
        assert node is not None
        alias = node.alias or "?"
        node.refused.add(alias)
        self.notify(f"node {node.name} cannot run {alias}: {why}")
        self._release(node)

    def _lost(self, job: _InFlight, exc: Exception) -> None:
        """The worker or its node died: the trial goes back to its queue to run elsewhere."""
        what = type(exc).__name__
        if job.node is not None:
            job.node.actor, job.node.alias = None, None
            gone = job.node.id not in {n.id for n in alive_nodes()}
            if gone:
                self.nodes.pop(job.node.id, None)
                self.notify(f"node {job.node.name} left the cluster ({what}); its trials run elsewhere")
            else:
                self.notify(f"the worker on node {job.node.name} died ({what}); its trial runs again")
        work = job.work
        if work is None:
            return
        if work.attempts >= MAX_ATTEMPTS:
            self._record_error(work, f"the trial lost its worker {work.attempts} times (last: {what})")
        else:
            self.queues[work.alias].appendleft(work)

    # the end

    def _release(self, node: Node) -> None:
        if node.actor is not None:
            with suppress(Exception):
                self.ray.kill(node.actor)
        node.actor, node.alias = None, None

    def _stop(self) -> None:
        """Every actor killed and every task cancelled: on Ctrl-C nothing goes on running."""
        for ref, job in list(self.in_flight.items()):
            if job.kind == "task":
                with suppress(Exception):
                    self.ray.cancel(ref, force=True)
        self.in_flight.clear()
        for node in self.nodes.values():
            self._release(node)


def _name_of(node_id: str | None) -> str:
    """A node's name for a result from a node no longer listed (it left the cluster)."""
    if node_id is None:
        return "?"
    with suppress(Exception):
        import ray

        for info in ray.nodes():
            if info.get("NodeID") == node_id:
                return node_name(info)
    return node_id[:8]


def preflight(config: runner.BenchConfig) -> None:
    """The cluster reachable and --hosts/--pin naming its nodes, checked before a run folder
    is made (a run that cannot start leaves nothing behind)."""
    assert config.cluster is not None
    with connect(config.cluster) as nodes:
        check_placement(Placement(config.hosts, config.pins), nodes, list(config.models))


def run_plan(
    plan: Plan,
    catalog: Catalog,
    record: Callable[[TrialResult], None],
    emit: Callable[[runner.BenchEvent], None],
    notify: Callable[[str], None],
    baselines: list[str],
) -> Counter[str]:
    """Every pending trial of the plan's models and of the reachable `baselines`, on the
    cluster at the plan's --cluster address; the trials each node ran."""
    config = plan.config
    assert config.cluster is not None
    placement = Placement(config.hosts, config.pins)
    with connect(config.cluster) as nodes:
        check_placement(placement, nodes, list(plan.info.models))
        workers = [n for n in nodes if n.cpus > 0]
        notify(
            f"cluster at {config.cluster}: {len(workers)} node(s) with CPUs ({', '.join(sorted(n.name for n in workers))})"
        )
        run = ClusterRun(plan, catalog, record, emit, notify, nodes, placement)
        run.run([*baselines, *plan.info.models])
        if run.per_node:
            notify("trials per node: " + ", ".join(f"{name} {n}" for name, n in sorted(run.per_node.items())))
        return run.per_node
