"""The bench's records at the edge: one RunInfo per run, one TrialResult per (model, task,
trial). They are written to the run's results.jsonl, to SQLite, to exports and to --json, so
every field is documented and the layout is versioned."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckResult(_Record):
    kind: str
    passed: bool
    detail: str = Field(default="", description="expected vs found, shortened")


class HostInfo(_Record):
    cpu: str
    physical_cores: int
    logical_cores: int
    ram_bytes: int
    gpu: str = Field(description="GPU offload backend seen by llama.cpp, or 'none'")
    os: str
    python: str


class RunInfo(_Record):
    """One `localagent bench` invocation."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    started_at: str = Field(description="UTC, ISO 8601")
    finished_at: str | None = None
    localagent_version: str
    host: HostInfo
    models: list[str] = Field(description="local models, in the order asked")
    baselines: list[str] = Field(default_factory=list, description="hosted aliases")
    tasks_dir: str
    task_ids: list[str]
    trials: int
    tool_mode: str
    think: bool | None = Field(
        default=None, description="--think / --no-think for local models; None: each model's own default"
    )
    temperature: float
    price_table: str = Field(description="the catalog files and the as_of dates of their prices")
    load_s: dict[str, float] = Field(default_factory=dict, description="model alias -> load seconds")
    limits: dict[str, Any] = Field(
        default_factory=dict,
        description="the agent's limits: max_steps (for tasks that set none), time_limit_s, max_tokens per call, n_ctx",
    )
    argv: list[str] = Field(default_factory=list)


class TrialResult(_Record):
    """One (model, task, trial): appended the moment the trial ends."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    model: str
    model_kind: Literal["local", "hosted", "pseudo"]
    task_id: str
    task_sha256: str = Field(description="sha256 of the task file: results compare only on equal task versions")
    tier: int
    trial: int = Field(description="0-based trial index")
    seed: int | None
    temperature: float
    finished_at: str

    success: bool
    failure_mode: FailureMode | None = None
    checks: list[CheckResult] = Field(default_factory=list)
    stop_reason: str
    answer: str = ""
    error: str | None = None

    steps: int
    tool_calls: int
    invalid_tool_calls: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int = 0
    prompt_tokens_evaluated: int

    wall_s: float
    model_s: float
    tool_s: float
    ttft_s_mean: float | None = None
    prefill_tokens_per_s: float | None = None
    decode_tokens_per_s: float | None = None

    peak_rss_bytes: int | None = None
    peak_anon_bytes: int | None = None
    peak_file_bytes: int | None = None
    model_file_bytes: int | None = None
    kv_cache_bytes: int | None = None

    cost_usd: float = 0.0
    price_as_of: str | None = None

    engine: dict[str, Any] = Field(default_factory=dict, description="the engine's describe()")
    trace_path: str | None = Field(default=None, description="relative to the run directory")
