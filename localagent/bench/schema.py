"""The bench's records at the edge: one RunInfo per run, one TrialResult per (model, task,
trial). They are written to the run's results.jsonl, to SQLite, to exports and to --json, so
every field is documented and the layout is versioned."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from localagent.engines.base import ToolMode
from localagent.records import StopReason

SCHEMA_VERSION = 1

FailureMode = Literal[
    "wrong_answer",  # the answer checks failed, the workspace checks held
    "wrong_state",  # a file check failed (missing, different content, command failed)
    "collateral_change",  # an unchanged / no_extra_files check failed
    "malformed_tool_call",  # the run ended on repeated invalid tool calls
    "max_steps",
    "timeout",
    "context_overflow",
    "runtime_error",  # the engine or harness failed
    "api_error",  # a hosted API failed after retries
    "unfinished_thinking",  # the model thought until max_tokens (or its end) and never answered
    "repetition",  # the model's reply looped and the engine stopped it (engines/loops.py)
]

# How a trial ended: the agent's own stop reason, or runtime_error when the harness failed
# before the agent stopped (no final step, or the checks raised).
TrialStopReason = StopReason | Literal["runtime_error"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckResult(_Record):
    """One check of a trial, judged: what bench.checks' judges return and what is stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(description="the check's kind, as in the task file (answer_contains, file_equals, ...)")
    passed: bool = Field(description="whether the check held")
    detail: str = Field(default="", description="expected vs found, shortened; empty when passed")


class HostInfo(_Record):
    cpu: str = Field(description="the CPU's model name")
    physical_cores: int = Field(description="physical CPU cores; 0 when the platform does not say")
    logical_cores: int = Field(description="logical CPU cores (hardware threads); 0 when the platform does not say")
    ram_bytes: int = Field(description="total RAM")
    gpu: str = Field(description="GPU offload backend seen by llama.cpp, or 'none'")
    os: str = Field(description="operating system, release and machine, e.g. Linux 6.8.0 (x86_64)")
    python: str = Field(description="Python version")


class RunInfo(_Record):
    """One `localagent bench` invocation."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="the layout of this record")
    run_id: str = Field(
        description="UTC start time and a random suffix, e.g. 20261120-100000-beef: sortable, unique across machines"
    )
    started_at: str = Field(description="UTC, ISO 8601")
    finished_at: str | None = Field(
        default=None, description="UTC, ISO 8601; None while the run goes on or if it was cut short"
    )
    localagent_version: str = Field(description="the localagent that ran the bench")
    host: HostInfo = Field(description="the machine the run was made on")
    models: list[str] = Field(description="local models, in the order asked")
    baselines: list[str] = Field(default_factory=list, description="hosted aliases")
    tasks_dir: str = Field(description="the task folder or file, resolved")
    task_ids: list[str] = Field(description="the tasks selected, in the order run")
    trials: int = Field(description="trials of each (model, task)")
    tool_mode: ToolMode = Field(description="how local models were asked for tool calls: auto, json or native")
    think: bool | None = Field(
        default=None, description="--think / --no-think for local models; None: each model's own default"
    )
    temperature: float = Field(description="sampling temperature of every model call")
    path_constraints: bool = Field(
        default=False,
        description="json mode's grammar let path arguments name only the workspace's paths "
        "(--no-path-constraints: off); False in runs made before it existed",
    )
    price_table: str = Field(description="the catalog files and the as_of dates of their prices")
    load_s: dict[str, float] = Field(default_factory=dict, description="model alias -> load seconds")
    limits: dict[str, Any] = Field(
        default_factory=dict,
        description="the agent's limits: max_steps (for tasks that set none), time_limit_s, max_tokens per call, n_ctx",
    )
    argv: list[str] = Field(default_factory=list, description="the command line's arguments, as given")
    watts: float | None = Field(
        default=None, description="the power draw assumed for local trials where RAPL cannot be read; None: none given"
    )
    energy_price_per_kwh: float | None = Field(
        default=None,
        description="$ per kWh to price the energy estimate at (never added to API dollars); None: unpriced",
    )


class CascadeAttempt(_Record):
    """One model's try inside a cascade's trial (`--model 'small>big'`)."""

    model: str = Field(description="the model that tried, as named in the cascade")
    stop_reason: TrialStopReason = Field(description="how its run ended; the next model tries unless it answered")
    steps: int = Field(description="model calls made")
    input_tokens: int = Field(description="prompt tokens over its calls")
    output_tokens: int = Field(description="generated tokens over its calls")
    wall_s: float = Field(description="its run, model and tools")
    cost_usd: float = Field(description="its tokens at the catalog's price; 0 for local and pseudo models")


class TrialResult(_Record):
    """One (model, task, trial): appended the moment the trial ends."""

    schema_version: int = Field(default=SCHEMA_VERSION, description="the layout of this record")
    run_id: str = Field(description="the run this trial belongs to (RunInfo.run_id)")
    model: str = Field(description="the model's alias or path, as asked")
    model_kind: Literal["local", "hosted", "pseudo"] = Field(description="pseudo: the scripted oracle and noop")
    task_id: str = Field(description="the task's id")
    task_sha256: str = Field(description="sha256 of the task file: results compare only on equal task versions")
    tier: int = Field(description="the task's tier, 1 (easiest) to 4")
    trial: int = Field(description="0-based trial index")
    seed: int | None = Field(
        description="the sampling seed of every model call (the trial index); None: no seed was given"
    )
    temperature: float = Field(description="sampling temperature of every model call")
    finished_at: str = Field(description="UTC, ISO 8601")

    success: bool = Field(description="the agent answered and every check held")
    failure_mode: FailureMode | None = Field(default=None, description="why the trial failed; None when it succeeded")
    checks: list[CheckResult] = Field(
        default_factory=list, description="the task's checks, in its order; empty when they did not run (runtime_error)"
    )
    stop_reason: TrialStopReason = Field(description="how the agent's run ended; runtime_error: the harness failed")
    answer: str = Field(default="", description="the final answer; empty unless stop_reason is answer")
    error: str | None = Field(
        default=None,
        description="the harness's exception, or the error the run stopped on (engine, API, a repeated failing call)",
    )

    steps: int = Field(description="model calls made")
    tool_calls: int = Field(description="tool calls run, invalid ones included")
    invalid_tool_calls: int = Field(description="tool calls refused before running (unknown tool, bad arguments)")
    input_tokens: int = Field(description="prompt tokens over every call, cached ones included")
    cached_input_tokens: int = Field(description="the part of input_tokens read from a prompt cache")
    output_tokens: int = Field(description="generated tokens over every call, reasoning included")
    reasoning_tokens: int = Field(default=0, description="the part of output_tokens spent thinking")
    prompt_tokens_evaluated: int = Field(
        description="prompt tokens the engine actually ran through the model (the cached prefix excluded)"
    )

    wall_s: float = Field(description="the whole run, model and tools")
    model_s: float = Field(description="seconds spent in model calls")
    tool_s: float = Field(description="seconds spent running tools")
    ttft_s_mean: float | None = Field(
        default=None,
        description="mean over calls of the seconds from request to first generated token; None: not measured",
    )
    prefill_tokens_per_s: float | None = Field(
        default=None, description="prompt tokens evaluated per second over every call"
    )
    decode_tokens_per_s: float | None = Field(
        default=None, description="tokens generated per second after each call's first, over every call"
    )

    peak_rss_bytes: int | None = Field(
        default=None, description="peak resident memory of the process during the trial; None for hosted models"
    )
    peak_anon_bytes: int | None = Field(
        default=None, description="peak anonymous memory (heap, KV cache): what the OS cannot drop"
    )
    peak_file_bytes: int | None = Field(
        default=None,
        description="peak file-backed memory (mapped weights, libraries): what the OS can drop and re-read",
    )
    model_file_bytes: int | None = Field(default=None, description="size of the model's GGUF file; local models only")
    kv_cache_bytes: int | None = Field(
        default=None,
        description="the KV cache at the context the engine opened, from the GGUF header; local models only",
    )

    cost_usd: float = Field(
        default=0.0,
        description="the trial's tokens at the catalog's price; 0 without a price (local and pseudo models)",
    )
    price_as_of: str | None = Field(
        default=None, description="the date the price was copied; None when no price applied"
    )

    engine: dict[str, Any] = Field(
        default_factory=dict,
        description="the engine's describe(), as EngineInfo.as_dict() writes it; {} when no engine ran the trial",
    )
    trace_path: str | None = Field(default=None, description="relative to the run directory")

    # where the trial ran, when that is not the run's own host (RunInfo.host): a cluster node
    host: HostInfo | None = Field(
        default=None, description="the machine the trial ran on; None: the run's host (RunInfo.host)"
    )
    node: str | None = Field(
        default=None,
        description="the cluster node that ran the trial (its localagent-host label, else its address); None: not on a cluster",
    )
    energy_joules: float | None = Field(
        default=None,
        description="an estimate of the energy the machine drew during a local trial (whole CPU packages, not the "
        "process alone); never part of cost_usd; None: not measured (hosted and pseudo models, no RAPL and no --watts)",
    )
    energy_method: Literal["rapl", "estimate"] | None = Field(
        default=None,
        description="rapl: the CPU packages' RAPL counters; estimate: the configured watts x the wall time",
    )
    attempts: list[CascadeAttempt] | None = Field(
        default=None,
        description="a cascade's tries in order, each model after one that stopped without an answer; tokens, "
        "times and cost above are their sums and the checks judge the last; None: one model ran",
    )
