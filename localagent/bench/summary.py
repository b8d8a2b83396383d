"""`summarize`: a run's trial records (and stored baselines') turned into the report's
figures. Pure: records in, frozen figures out; nothing read, printed or stored."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from localagent.bench import metrics
from localagent.bench.figures import (
    BaselineComparison,
    Cell,
    GridRow,
    ModelSummary,
    Rate,
    Summary,
    TierSummary,
    TrialRef,
)
from localagent.bench.formatting import DASH
from localagent.bench.schema import RunInfo, TrialResult
from localagent.bench.verdicts import verdicts
from localagent.units import format_bytes


def summarize(run_info: RunInfo, trials: Iterable[TrialResult], baseline_trials: Iterable[TrialResult] = ()) -> Summary:
    """The report's figures. `baseline_trials` are stored results of baselines that did not
    run in this run; only those on this run's task versions are compared."""
    own = list(trials)
    by_model = _group(own, lambda t: t.model)
    versions = {t.task_id: t.task_sha256 for t in own}
    stored = [
        t
        for t in baseline_trials
        if t.model not in by_model
        and t.task_id in run_info.task_ids
        and versions.get(t.task_id, t.task_sha256) == t.task_sha256
    ]
    by_model.update(_group(stored, lambda t: t.model))

    names = _ordered([*run_info.models, *run_info.baselines, *by_model])
    present = [n for n in names if by_model.get(n)]
    notes = tuple(f"{n}: no results" for n in names if not by_model.get(n))
    models = tuple(_model_summary(n, by_model[n], run_info) for n in present)
    tiers = tuple(
        TierSummary(n, tier, _rate(rows))
        for n in present
        for tier, rows in sorted(_group(by_model[n], lambda t: t.tier).items())
    )
    task_order = _ordered([*run_info.task_ids, *(t.task_id for n in present for t in by_model[n])])
    tier_of = {t.task_id: t.tier for n in present for t in by_model[n]}
    grid = tuple(
        GridRow(task, tier_of[task], tuple(_cell(by_model[n], task) for n in present))
        for task in sorted((t for t in task_order if t in tier_of), key=lambda t: tier_of[t])
    )
    hosted = [m.name for m in models if m.kind == "hosted"]
    others = [m.name for m in models if m.kind != "hosted"]
    paired = tuple(_versus_baseline(n, by_model[n], b, by_model[b]) for n in others for b in hosted)
    summary = Summary(
        run_id=run_info.run_id,
        started_at=run_info.started_at,
        finished_at=run_info.finished_at,
        host=_host_line(run_info),
        localagent_version=run_info.localagent_version,
        k=run_info.trials,
        temperature=run_info.temperature,
        tool_mode=run_info.tool_mode,
        price_table=run_info.price_table,
        models=models,
        tiers=tiers,
        grid=grid,
        paired=paired,
        verdicts=(),
        trials=tuple(_ref(t) for n in present for t in sorted(by_model[n], key=_trial_key(task_order))),
        notes=notes,
    )
    return dataclasses.replace(summary, verdicts=verdicts(summary))


def _group(rows: Iterable[TrialResult], key) -> dict[Any, list[TrialResult]]:
    groups: dict[Any, list[TrialResult]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return dict(groups)


def _ordered(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _trial_key(task_order: list[str]):
    position = {task: i for i, task in enumerate(task_order)}
    return lambda t: (t.tier, position.get(t.task_id, len(position)), t.task_id, t.trial)


def _rate(rows: Sequence[TrialResult]) -> Rate:
    successes = sum(t.success for t in rows)
    lo, hi = metrics.wilson_interval(successes, len(rows))
    return Rate(successes, len(rows), successes / len(rows) if rows else 0.0, lo, hi)


def _max(values: Iterable[Any]) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _model_summary(name: str, rows: list[TrialResult], run_info: RunInfo) -> ModelSummary:
    by_task = _group(rows, lambda t: t.task_id)
    k = max(len(v) for v in by_task.values())
    solved = sum(t.success for t in rows)
    total_cost = sum(t.cost_usd for t in rows)
    from_here = rows[0].run_id == run_info.run_id
    return ModelSummary(
        name=name,
        kind=rows[0].model_kind,
        tasks=len(by_task),
        trials=len(rows),
        k=k,
        passed=_rate(rows),
        pass_hat_k=(
            metrics.pass_hat_k([(len(v), sum(t.success for t in v)) for v in by_task.values()], k) if k > 1 else None
        ),
        median_wall_s=metrics.median(t.wall_s for t in rows),
        tokens_per_solved=metrics.per_solved(sum(t.input_tokens + t.output_tokens for t in rows), solved),
        cost_per_solved=metrics.per_solved(total_cost, solved),
        total_cost_usd=total_cost,
        suite_cost_usd=total_cost / len(rows) * len(by_task),
        peak_rss_bytes=_max(t.peak_rss_bytes for t in rows),
        peak_anon_bytes=_max(t.peak_anon_bytes for t in rows),
        peak_file_bytes=_max(t.peak_file_bytes for t in rows),
        model_file_bytes=_max(t.model_file_bytes for t in rows),
        median_decode_tokens_per_s=metrics.median(t.decode_tokens_per_s for t in rows),
        median_ttft_s=metrics.median(t.ttft_s_mean for t in rows),
        load_s=run_info.load_s.get(name) if from_here else None,
        price_as_of=_max(t.price_as_of for t in rows),
        failures=tuple(
            sorted(
                Counter(t.failure_mode or "unclassified" for t in rows if not t.success).items(),
                key=lambda kv: (-kv[1], kv[0]),
            )
        ),
        source_run_id=rows[0].run_id,
        source_date=None if from_here else max(t.finished_at for t in rows)[:10],
        **_energy(rows, len(by_task), run_info.energy_price_per_kwh),
    )


def _energy(rows: list[TrialResult], tasks: int, price_per_kwh: float | None) -> dict[str, Any]:
    """The energy figures of ModelSummary, from the trials that measured it."""
    from localagent.energy import energy_usd

    measured = [t for t in rows if t.energy_joules is not None]
    if not measured:
        return {}
    methods = {t.energy_method for t in measured}
    mean_j = sum(t.energy_joules or 0.0 for t in measured) / len(measured)
    return {
        "median_energy_j": metrics.median(t.energy_joules for t in measured),
        "energy_method": methods.pop() if len(methods) == 1 else "mixed",
        "suite_energy_usd": energy_usd(mean_j * tasks, price_per_kwh) if price_per_kwh is not None else None,
    }


def _cell(rows: list[TrialResult], task_id: str) -> Cell | None:
    mine = [t for t in rows if t.task_id == task_id]
    return Cell(sum(t.success for t in mine), len(mine)) if mine else None


def _versus_baseline(
    name: str, rows: list[TrialResult], baseline: str, base_rows: list[TrialResult]
) -> BaselineComparison:
    def outcomes(trials: list[TrialResult]) -> dict[tuple[str, str], list[bool]]:
        groups = _group(trials, lambda t: (t.task_id, t.task_sha256))
        return {key: [t.success for t in v] for key, v in groups.items()}

    p = metrics.paired(outcomes(rows), outcomes(base_rows))
    return BaselineComparison(name, baseline, p.common, p.wins, p.losses, p.ties, p.p_value)


def _ref(t: TrialResult) -> TrialRef:
    return TrialRef(
        t.model, t.task_id, t.tier, t.trial, t.success, t.failure_mode, t.wall_s, t.cost_usd, t.run_id, t.trace_path
    )


def _host_line(run_info: RunInfo) -> str:
    h = run_info.host
    gpu = "" if h.gpu in ("", "none") else f", GPU {h.gpu}"
    return (
        f"{h.cpu}, {h.physical_cores} cores / {h.logical_cores} threads, "
        f"{format_bytes(h.ram_bytes, DASH)} RAM{gpu}, {h.os}, Python {h.python}"
    )
