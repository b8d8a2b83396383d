"""The figures of a bench report: frozen records, built by `summary.summarize` and read by
every renderer. Plain dataclasses, so `dataclasses.asdict` gives the `--json` document."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """successes out of n, with its Wilson 95% interval."""

    successes: int
    n: int
    rate: float
    lo: float
    hi: float


@dataclass(frozen=True)
class ModelSummary:
    name: str
    kind: str  # local, hosted or pseudo
    tasks: int
    trials: int
    k: int  # trials per task (the most any task got)
    passed: Rate
    pass_hat_k: float | None  # all k trials pass, averaged over tasks; None when k == 1
    median_wall_s: float | None
    # all trials' tokens (input + output) and cost over the trials solved: the price of a success
    tokens_per_solved: float | None
    cost_per_solved: float | None
    total_cost_usd: float
    suite_cost_usd: float  # one pass over the tasks: mean cost per trial x tasks
    peak_rss_bytes: int | None
    peak_anon_bytes: int | None
    peak_file_bytes: int | None
    model_file_bytes: int | None
    median_decode_tokens_per_s: float | None
    median_ttft_s: float | None
    load_s: float | None
    price_as_of: str | None
    failures: tuple[tuple[str, int], ...]  # (failure mode, trials), most frequent first
    source_run_id: str  # the run these results come from
    source_date: str | None  # set when they come from an earlier stored run
    # energy, an estimate kept apart from the API dollars: the median joules of a measured
    # trial; how they were measured (rapl, estimate, or mixed); one pass over the tasks at the
    # run's $/kWh (None: unpriced or not measured)
    median_energy_j: float | None = None
    energy_method: str | None = None
    suite_energy_usd: float | None = None


@dataclass(frozen=True)
class TierSummary:
    model: str
    tier: int
    passed: Rate


@dataclass(frozen=True)
class Cell:
    passes: int
    trials: int


@dataclass(frozen=True)
class GridRow:
    task_id: str
    tier: int
    cells: tuple[Cell | None, ...]  # one per model, in Summary.models order; None: not run


@dataclass(frozen=True)
class BaselineComparison:
    """A model against a baseline on the tasks both ran (same task version): a win is a task
    the model passed more often than the baseline did. metrics.paired's counts with the two
    names beside them; flat, not a metrics.Paired inside, so `--json`'s `paired` entries keep
    their shape."""

    model: str
    baseline: str
    common: int
    wins: int
    losses: int
    ties: int
    p_value: float  # exact sign test on wins against losses


@dataclass(frozen=True)
class TrialRef:
    model: str
    task_id: str
    tier: int
    trial: int
    success: bool
    failure_mode: str | None
    wall_s: float
    cost_usd: float
    run_id: str
    trace_path: str | None  # relative to the directory of run `run_id`


@dataclass(frozen=True)
class Verdict:
    model: str
    text: str


@dataclass(frozen=True)
class Summary:
    run_id: str
    started_at: str
    finished_at: str | None
    host: str
    localagent_version: str
    k: int
    temperature: float
    tool_mode: str
    price_table: str
    models: tuple[ModelSummary, ...]
    tiers: tuple[TierSummary, ...]
    grid: tuple[GridRow, ...]
    paired: tuple[BaselineComparison, ...]
    verdicts: tuple[Verdict, ...]
    trials: tuple[TrialRef, ...]
    notes: tuple[str, ...]
