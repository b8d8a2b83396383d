"""The capability map: every stored trial, across runs, turned into which variant of which model
succeeds at which group of tasks, at what speed and cost.

A *variant* is a model with the settings that change its result (tool mode, thinking, context,
temperature); the host it ran on is kept beside it, not in it: success pools across hosts,
speed is given per host profile. Only the latest stored version (sha256) of each task counts.
Everything here is pure except `read_store`, which reads the database and the task files.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from localagent.bench import metrics
from localagent.bench.figures import Cell, Rate
from localagent.bench.schema import HostInfo, RunInfo, TrialResult
from localagent.errors import ConfigError, LocalAgentError, ResultsError
from localagent.units import format_bytes

if TYPE_CHECKING:
    from localagent.bench.database import ResultsDB

GroupKind = Literal["all", "tier", "tag"]


@dataclass(frozen=True)
class Variant:
    """A model and the settings that change its result. Settings that do not apply to its
    kind (tool mode and thinking of a hosted or scripted model) are None."""

    model: str
    kind: str  # local, hosted or pseudo
    tool_mode: str | None
    think: bool | None
    n_ctx: int | None  # as asked with --ctx; None: the engine's default
    temperature: float
    # json mode's grammar held path arguments to the workspace (pathchoices.py); None where
    # nothing can hold them (native mode, hosted and scripted models)
    path_constraints: bool | None = None

    @property
    def label(self) -> str:
        """'qwen-small:Q8_0 json no-think ctx=8192 temp=0.7': the model, then each setting."""
        parts = [self.model]
        if self.tool_mode:
            parts.append(self.tool_mode)
        if self.think is not None:
            parts.append("think" if self.think else "no-think")
        if self.n_ctx:
            parts.append(f"ctx={self.n_ctx}")
        if self.temperature:
            parts.append(f"temp={self.temperature:g}")
        if self.path_constraints is False:
            parts.append("free-paths")
        return " ".join(parts)

    def bench_args(self) -> list[str]:
        """The `localagent bench` arguments that run this variant again."""
        # a cascade ('small>big') is a --model whatever its kind
        args = ["--baseline" if self.kind == "hosted" and ">" not in self.model else "--model", self.model]
        if self.tool_mode:
            args += ["--tool-mode", self.tool_mode]
        if self.think is not None:
            args.append("--think" if self.think else "--no-think")
        if self.n_ctx:
            args += ["--ctx", str(self.n_ctx)]
        if self.temperature:
            args += ["--temperature", f"{self.temperature:g}"]
        if self.path_constraints is False:
            args.append("--no-path-constraints")
        return args


@dataclass(frozen=True)
class Observation:
    """One stored trial with what the map needs from its run and its task file."""

    trial: TrialResult
    variant: Variant
    host: str  # host_profile of the run's machine
    run_started_at: str
    tasks_dir: str
    tags: tuple[str, ...]  # the task's tags; empty when its file is not found


def host_profile(h: HostInfo) -> str:
    """What decides a local model's speed, in one line: 'AMD EPYC 7B13 · 2 threads · 7.8 GiB'
    (and the GPU backend when one offloads)."""
    parts = [h.cpu, f"{h.logical_cores} threads", format_bytes(h.ram_bytes)]
    if h.gpu not in ("", "none"):
        parts.append(h.gpu)
    return " · ".join(parts)


def variant_of(trial: TrialResult, run: RunInfo) -> Variant:
    """The variant a trial ran: the tool mode the engine used (auto resolved), the run's
    --think, --ctx and (json mode) path constraints for local models, the trial's temperature."""
    if trial.model_kind != "local":
        return Variant(trial.model, trial.model_kind, None, None, None, trial.temperature)
    mode = trial.engine.get("tool_mode") or run.tool_mode
    n_ctx = run.limits.get("n_ctx")
    paths = run.path_constraints if mode == "json" else None
    return Variant(trial.model, "local", str(mode), run.think, int(n_ctx) if n_ctx else None, trial.temperature, paths)


def observations(
    runs: Sequence[RunInfo], trials: Iterable[TrialResult], tags: Mapping[str, tuple[str, ...]]
) -> tuple[list[Observation], int]:
    """The trials of the latest stored version of each task (the version of the newest run
    that ran the task id), each with its variant, host and tags (`tags`: task sha256 ->
    tags); and how many trials of older versions were left out."""
    by_run = {r.run_id: r for r in runs}
    known = [(t, by_run[t.run_id]) for t in trials if t.run_id in by_run]
    latest: dict[str, tuple[str, str, str]] = {}
    for t, run in known:
        latest[t.task_id] = max(latest.get(t.task_id, ("", "", "")), (run.started_at, t.finished_at, t.task_sha256))
    out = [
        Observation(
            trial=t,
            variant=variant_of(t, run),
            host=host_profile(t.host or run.host),  # a trial on a cluster node records its own
            run_started_at=run.started_at,
            tasks_dir=run.tasks_dir,
            tags=tags.get(t.task_sha256, ()),
        )
        for t, run in known
        if latest[t.task_id][2] == t.task_sha256
    ]
    return out, len(known) - len(out)


# --- filters ---


@dataclass(frozen=True)
class MapFilter:
    tags: tuple[str, ...] = ()  # tasks with any of these tags
    tier: int | None = None
    models: tuple[str, ...] = ()  # model names as stored (alias, alias:QUANT, path)
    since: str | None = None  # YYYY-MM-DD: runs started that day or later
    host: str | None = None  # a part of a host profile, any case
    include_pseudo: bool = False  # oracle and noop (always, when named in models)


def select(obs: Sequence[Observation], f: MapFilter) -> list[Observation]:
    """The observations the filter keeps. A tag, model or host that no stored trial has is
    a ConfigError that names the known ones."""
    _known("tag", f.tags, {tag for o in obs for tag in o.tags})
    _known("model", f.models, {o.variant.model for o in obs})
    if f.tier is not None and f.tier not in {o.trial.tier for o in obs}:
        tiers = ", ".join(str(t) for t in sorted({o.trial.tier for o in obs}))
        raise ConfigError(f"no stored trial is of a tier {f.tier} task", hint=f"stored tiers: {tiers}")
    hosts = {o.host for o in obs}
    if f.host is not None and not any(f.host.lower() in h.lower() for h in hosts):
        raise ConfigError(
            f"no stored run was made on a host matching '{f.host}'", hint=f"hosts: {'; '.join(sorted(hosts))}"
        )
    since = _since(f.since)
    return [
        o
        for o in obs
        if (not f.tags or set(f.tags) & set(o.tags))
        and (f.tier is None or o.trial.tier == f.tier)
        and (o.variant.model in f.models if f.models else f.include_pseudo or o.variant.kind != "pseudo")
        and (since is None or o.run_started_at[:10] >= since)
        and (f.host is None or f.host.lower() in o.host.lower())
    ]


def _since(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise ConfigError(f"--since takes a date as YYYY-MM-DD, got '{text}'", hint="e.g. --since 2026-11-01") from None


def _known(what: str, asked: Iterable[str], known: set[str]) -> None:
    for name in asked:
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
        hint = ("did you mean " + " or ".join(f"'{c}'" for c in close) + "? " if close else "") + (
            f"known {what}s: {', '.join(sorted(known))}" if known else f"no stored trial has a {what}"
        )
        raise ConfigError(f"no stored trial has the {what} '{name}'", hint=hint)


# --- the figures ---


@dataclass(frozen=True)
class HostSpeed:
    """A variant's speed on one host profile."""

    host: str
    trials: int
    median_wall_s: float | None
    median_decode_tokens_per_s: float | None


@dataclass(frozen=True)
class VariantStats:
    """One variant on one group of tasks."""

    label: str
    variant: Variant
    tasks: int
    passed: Rate  # every trial, pooled across hosts and runs, with its Wilson interval
    k: int  # the fewest trials any of its tasks got: pass^k counts every task
    pass_hat_k: float | None  # None when k == 1
    median_wall_s: float | None  # pooled across hosts; per host in `speeds`
    speeds: tuple[HostSpeed, ...]  # most trials first
    tokens_per_solved: float | None  # all trials' tokens over the trials solved
    cost_per_solved: float | None  # all trials' API dollars over the trials solved
    total_cost_usd: float
    peak_rss_bytes: int | None
    runs: int
    last_date: str  # the day of its newest trial
    # the median energy of its measured trials (local ones): an estimate, apart from the dollars
    median_energy_j: float | None = None

    def wall_on(self, host: str) -> float | None:
        """The median wall time on `host`, or pooled when it has no trial there."""
        for s in self.speeds:
            if s.host == host:
                return s.median_wall_s
        return self.median_wall_s


@dataclass(frozen=True)
class Group:
    kind: GroupKind
    name: str  # '' for all, '2' for tier 2, the tag
    title: str  # 'all tasks', 'tier 2', 'tag read'
    task_ids: tuple[str, ...]
    variants: tuple[VariantStats, ...]  # highest lower bound first
    reference_host: str  # the host with the most trials: what speed is compared on


@dataclass(frozen=True)
class TaskRow:
    task_id: str
    tier: int
    tags: tuple[str, ...]
    task_sha256: str
    cells: tuple[Cell | None, ...]  # one per variant, in CapabilityMap.variants order; None: not run


@dataclass(frozen=True)
class CapabilityMap:
    variants: tuple[str, ...]  # labels, in the order of the all-tasks group
    hosts: tuple[str, ...]
    groups: tuple[Group, ...]  # all tasks, each tier, each tag
    tasks: tuple[TaskRow, ...]
    trials: int
    runs: int
    first_date: str
    last_date: str
    tasks_dirs: tuple[str, ...]  # the task folders the trials came from
    notes: tuple[str, ...]


def variant_stats(obs: Sequence[Observation]) -> VariantStats:
    """The figures of one variant's observations (at least one)."""
    rows = [o.trial for o in obs]
    by_task: dict[str, list[TrialResult]] = defaultdict(list)
    for t in rows:
        by_task[t.task_id].append(t)
    solved = sum(t.success for t in rows)
    lo, hi = metrics.wilson_interval(solved, len(rows))
    k = min(len(v) for v in by_task.values())
    by_host: dict[str, list[TrialResult]] = defaultdict(list)
    for o in obs:
        by_host[o.host].append(o.trial)
    total_cost = sum(t.cost_usd for t in rows)
    rss = [t.peak_rss_bytes for t in rows if t.peak_rss_bytes is not None]
    return VariantStats(
        label=obs[0].variant.label,
        variant=obs[0].variant,
        tasks=len(by_task),
        passed=Rate(solved, len(rows), solved / len(rows), lo, hi),
        k=k,
        pass_hat_k=metrics.pass_hat_k([(len(v), sum(t.success for t in v)) for v in by_task.values()], k)
        if k > 1
        else None,
        median_wall_s=metrics.median(t.wall_s for t in rows),
        speeds=tuple(
            HostSpeed(
                host,
                len(ts),
                metrics.median(t.wall_s for t in ts),
                metrics.median(t.decode_tokens_per_s for t in ts),
            )
            for host, ts in sorted(by_host.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ),
        tokens_per_solved=metrics.per_solved(sum(t.input_tokens + t.output_tokens for t in rows), solved),
        cost_per_solved=metrics.per_solved(total_cost, solved),
        total_cost_usd=total_cost,
        peak_rss_bytes=max(rss) if rss else None,
        runs=len({t.run_id for t in rows}),
        last_date=max(t.finished_at for t in rows)[:10],
        median_energy_j=metrics.median(t.energy_joules for t in rows),
    )


def _group(kind: GroupKind, name: str, title: str, obs: Sequence[Observation]) -> Group:
    by_variant: dict[Variant, list[Observation]] = defaultdict(list)
    for o in obs:
        by_variant[o.variant].append(o)
    stats = sorted(
        (variant_stats(v) for v in by_variant.values()), key=lambda s: (-s.passed.lo, -s.passed.rate, s.label)
    )
    hosts: dict[str, int] = defaultdict(int)
    for o in obs:
        hosts[o.host] += 1
    return Group(
        kind=kind,
        name=name,
        title=title,
        task_ids=tuple(sorted({o.trial.task_id for o in obs})),
        variants=tuple(stats),
        reference_host=min(hosts, key=lambda h: (-hosts[h], h)),
    )


def build_map(obs: Sequence[Observation], notes: Sequence[str] = ()) -> CapabilityMap:
    """The map of the observations: every variant on all tasks, on each tier, on each tag,
    and the task x variant grid. ResultsError when there is nothing to map."""
    if not obs:
        raise ResultsError("no stored trial matches", hint="drop a filter, or run `localagent bench` first")
    groups = [_group("all", "", "all tasks", obs)]
    for tier in sorted({o.trial.tier for o in obs}):
        groups.append(_group("tier", str(tier), f"tier {tier}", [o for o in obs if o.trial.tier == tier]))
    for tag in sorted({tag for o in obs for tag in o.tags}):
        groups.append(_group("tag", tag, f"tag {tag}", [o for o in obs if tag in o.tags]))
    order = [s.variant for s in groups[0].variants]
    cells: dict[tuple[str, Variant], list[bool]] = defaultdict(list)
    first: dict[str, Observation] = {}
    for o in obs:
        cells[(o.trial.task_id, o.variant)].append(o.trial.success)
        first.setdefault(o.trial.task_id, o)
    tasks = tuple(
        TaskRow(
            task_id,
            o.trial.tier,
            o.tags,
            o.trial.task_sha256,
            tuple(
                Cell(sum(cells[(task_id, v)]), len(cells[(task_id, v)])) if (task_id, v) in cells else None
                for v in order
            ),
        )
        for task_id, o in sorted(first.items(), key=lambda kv: (kv[1].trial.tier, kv[0]))
    )
    days = sorted(o.trial.finished_at[:10] for o in obs)
    return CapabilityMap(
        variants=tuple(v.label for v in order),
        hosts=tuple(sorted({o.host for o in obs})),
        groups=tuple(groups),
        tasks=tasks,
        trials=len(obs),
        runs=len({o.trial.run_id for o in obs}),
        first_date=days[0],
        last_date=days[-1],
        tasks_dirs=tuple(sorted({o.tasks_dir for o in obs})),
        notes=tuple(notes),
    )


# --- reading the store ---


@dataclass(frozen=True)
class Store:
    """What the database holds, read once: the latest task versions' observations."""

    observations: list[Observation]
    superseded: int  # trials of older task versions, left out
    runs: int


def read_store(db: ResultsDB) -> Store:
    """Every stored run and trial, with each task's tags read from the task files of the
    folders the runs used (and the shipped suite), matched by sha256. ResultsError when the
    store is empty."""
    runs = [r.info for r in db.runs()]
    trials = db.trials()
    if not trials:
        raise ResultsError(
            "no bench results are stored yet",
            hint="run `localagent bench --quick` (or `localagent results import FILE` for results from another machine)",
        )
    obs, superseded = observations(runs, trials, task_tags(r.tasks_dir for r in runs))
    return Store(obs, superseded, len(runs))


def map_of(store: Store, flt: MapFilter) -> CapabilityMap:
    """The map of the stored trials the filter keeps, with notes on what was left out.
    ResultsError when only the scripted pseudo-models have results and they are left out."""
    notes = []
    if store.superseded:
        n = store.superseded
        notes.append(f"{n} trial{'s' if n != 1 else ''} of older task versions left out")
    pseudo = sorted({o.variant.model for o in store.observations if o.variant.kind == "pseudo"})
    if pseudo and not flt.include_pseudo and not flt.models:
        if all(o.variant.kind == "pseudo" for o in store.observations):
            raise ResultsError(
                f"only the pseudo-models {' and '.join(pseudo)} have stored results: nothing to recommend",
                hint="bench a real model (`localagent bench --model ALIAS`), or name them: --model "
                + ("oracle" if "oracle" in pseudo else pseudo[0]),
            )
        notes.append(f"left out: {', '.join(pseudo)} (pseudo-models; name them with --model to include them)")
    return build_map(select(store.observations, flt), notes)


def task_tags(folders: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Task sha256 -> tags, for every readable task file in the folders and the shipped
    suite. A file that does not load is skipped: the map only needs its tags."""
    from localagent.bench.tasks import default_tasks_dir, load_task_file

    roots = [Path(f) for f in dict.fromkeys(folders)]
    try:
        roots.append(default_tasks_dir())
    except LocalAgentError:
        pass
    tags: dict[str, tuple[str, ...]] = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.toml")) if root.is_dir() else []
        for file in files:
            try:
                task = load_task_file(file)
            except LocalAgentError:
                continue
            tags[task.sha256] = tuple(task.tags)
    return tags


def load_map(flt: MapFilter) -> tuple[CapabilityMap, str | None]:
    """The map of the stored trials the filter keeps, and the task folder to name in bench
    commands (None: the shipped suite, or several folders)."""
    from localagent.bench.database import ResultsDB
    from localagent.bench.tasks import default_tasks_dir

    with ResultsDB() as db:
        cmap = map_of(read_store(db), flt)
    dirs = [d for d in cmap.tasks_dirs if Path(d) != default_tasks_dir().resolve()]
    return cmap, dirs[0] if len(cmap.tasks_dirs) == 1 and dirs else None
