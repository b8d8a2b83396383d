"""A cascade as a variant of its own: `--model 'smollm2-135m>gpt-5-mini'` runs the first model
on each trial and, when it stops without an answer, the next one on a fresh copy of the
task's workspace. The task's checks judge only the last try (in the bench they decide after
the run, so a cascade escalates on no answer); success, tokens, time and cost are summed over
the tries, so the cascade sits in every table next to each model alone."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from localagent.bench.schema import CascadeAttempt, TrialResult
from localagent.catalog import Catalog
from localagent.errors import ConfigError

if TYPE_CHECKING:
    from localagent.bench.runner import BenchConfig

SEP = ">"


def members(name: str) -> tuple[str, ...] | None:
    """'a>b' -> ('a', 'b'); None for a single model. A cascade with an empty member, one model
    twice in a row, or a single member is a ConfigError."""
    if SEP not in name:
        return None
    parts = tuple(p.strip() for p in name.split(SEP))
    if any(not p for p in parts):
        raise ConfigError(f"--model '{name}' has an empty step", hint="name a model on each side of >: 'small>big'")
    if any(a == b for a, b in zip(parts, parts[1:], strict=False)):
        raise ConfigError(f"--model '{name}' names one model twice in a row", hint="escalate to a different model")
    return parts


def expand(config: BenchConfig, catalog: Catalog) -> tuple[BenchConfig, dict[str, tuple[str, ...]]]:
    """The config with each cascade replaced by its steps (hosted ones as baselines), for the
    runner's checks of names and local models; and the cascades, name -> steps."""
    from localagent.bench.runner import model_kind

    cascades = {m: parts for m in config.models if (parts := members(m))}
    if not cascades:
        return config, {}
    steps = list(dict.fromkeys(s for parts in cascades.values() for s in parts))
    hosted = [s for s in steps if model_kind(s, catalog) == "hosted"]
    models = [m for m in config.models if m not in cascades] + [s for s in steps if s not in hosted]
    baselines = [*config.baselines, *(s for s in hosted if s not in config.baselines)]
    return dataclasses.replace(config, models=tuple(dict.fromkeys(models)), baselines=tuple(baselines)), cascades


def kind(parts: Sequence[str], catalog: Catalog) -> Literal["local", "hosted", "pseudo"]:
    """The cascade's kind as the records name it: hosted when any step is (it may spend API
    dollars), else local when any step is, else pseudo."""
    from localagent.bench.runner import model_kind

    kinds = {model_kind(p, catalog) for p in parts}
    return "hosted" if "hosted" in kinds else "local" if "local" in kinds else "pseudo"


def combine(
    name: str, cascade_kind: Literal["local", "hosted", "pseudo"], parts: Sequence[str], tries: Sequence[TrialResult]
) -> TrialResult:
    """One trial of the cascade from its tries (each a trial of one step's model): the last
    try's verdict, checks and answer; tokens, steps, times and dollars summed; memory at its peak."""
    last = tries[-1]

    def total(field: str) -> float:
        return sum(getattr(t, field) for t in tries)

    def peak(field: str) -> int | None:
        seen = [getattr(t, field) for t in tries if getattr(t, field) is not None]
        return max(seen) if seen else None

    summed = (
        "steps tool_calls invalid_tool_calls input_tokens cached_input_tokens output_tokens reasoning_tokens "
        "prompt_tokens_evaluated"
    ).split()
    return last.model_copy(
        update={
            "model": name,
            "model_kind": cascade_kind,
            **{f: int(total(f)) for f in summed},
            **{f: total(f) for f in ("wall_s", "model_s", "tool_s", "cost_usd")},
            **{f: peak(f) for f in ("peak_rss_bytes", "peak_anon_bytes", "peak_file_bytes")},
            **_energy(tries),
            "price_as_of": next((t.price_as_of for t in reversed(tries) if t.price_as_of), None),
            "attempts": [
                CascadeAttempt(
                    model=step,
                    stop_reason=t.stop_reason,
                    steps=t.steps,
                    input_tokens=t.input_tokens,
                    output_tokens=t.output_tokens,
                    wall_s=t.wall_s,
                    cost_usd=t.cost_usd,
                )
                for step, t in zip(parts, tries, strict=False)  # the steps after the one that answered did not run
            ],
        }
    )


def _energy(tries: Sequence[TrialResult]) -> dict[str, object]:
    """The energy of the tries that measured it, summed; measured by RAPL only if all were."""
    measured = [t for t in tries if t.energy_joules is not None]
    if not measured:
        return {"energy_joules": None, "energy_method": None}
    methods = {t.energy_method for t in measured}
    return {
        "energy_joules": sum(t.energy_joules or 0.0 for t in measured),
        "energy_method": "rapl" if methods == {"rapl"} else "estimate",
    }
