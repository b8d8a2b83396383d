"""A bench over a matrix of variants: `--model qwen-small:Q4_K_M --model qwen-small:Q8_0
--tool-mode json,native` runs every combination. Each tool mode is a run of its own (the
engine opens a model in one tool mode), so every record names its variant: the model as asked
(with its quant) in TrialResult.model, the tool mode in RunInfo.tool_mode and the engine's
description. A matrix that contradicts itself is refused here, before any model loads."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import get_args

from localagent.bench.runner import BenchConfig, model_kind
from localagent.catalog import Catalog
from localagent.engines.base import ToolMode
from localagent.errors import ConfigError

TOOL_MODES: tuple[ToolMode, ...] = get_args(ToolMode)


def parse_tool_modes(text: str) -> tuple[ToolMode, ...]:
    """'json,native' -> ('json', 'native'); an unknown or repeated mode is a ConfigError."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes:
        raise ConfigError("--tool-mode needs a mode", hint=f"one of {', '.join(TOOL_MODES)}, or several: json,native")
    chosen: list[ToolMode] = []
    for mode in modes:
        if mode not in TOOL_MODES:
            raise ConfigError(
                f"--tool-mode '{mode}' is not a tool mode",
                hint=f"one of {', '.join(TOOL_MODES)}, or several: json,native",
            )
        if mode in chosen:
            raise ConfigError(f"--tool-mode names '{mode}' twice", hint="give each mode once")
        chosen.append(mode)
    if "auto" in chosen and len(chosen) > 1:
        raise ConfigError(
            "--tool-mode auto is one of json or native already: it cannot be compared with them",
            hint="give the modes to compare, e.g. --tool-mode json,native",
        )
    return tuple(chosen)


def same_variants(models: Sequence[str], catalog: Catalog) -> tuple[str, str] | None:
    """Two --model names for one variant (an alias and its target, a quant in another case),
    or None. A quant left out is not the catalog's quant: an installed one may stand in."""
    from localagent.store.resolve import split_quant

    seen: dict[tuple[str, str | None], str] = {}
    for name in dict.fromkeys(models):
        alias, quant = split_quant(name)
        key = (catalog.canonical(alias), quant.upper() if quant else None)
        if key in seen:
            return seen[key], name
        seen[key] = name
    return None


def variant_matrix(config: BenchConfig, tool_modes: Sequence[ToolMode], catalog: Catalog) -> list[BenchConfig]:
    """One BenchConfig per tool mode: the first runs every model and baseline, the others
    only the local models (the tool mode changes nothing else). Refused: a variant named
    twice; several modes with no local model, with --out (one folder, several runs) or with
    --resume."""
    pair = same_variants(config.models, catalog)
    if pair is not None:
        raise ConfigError(
            f"--model '{pair[0]}' and --model '{pair[1]}' are the same variant", hint=f"drop --model {pair[1]}"
        )
    if len(tool_modes) < 2:
        return [dataclasses.replace(config, tool_mode=tool_modes[0] if tool_modes else config.tool_mode)]
    local = tuple(m for m in dict.fromkeys(config.models or (catalog.default,)) if model_kind(m, catalog) == "local")
    modes = ",".join(tool_modes)
    if not local:
        raise ConfigError(
            f"--tool-mode {modes} changes only local models, and none is asked for",
            hint="add a local model with --model, or give one tool mode",
        )
    if config.out is not None:
        raise ConfigError(
            f"--tool-mode {modes} makes {len(tool_modes)} runs, and --out names one folder",
            hint="drop --out: each run gets its own folder under $LOCALAGENT_HOME/runs",
        )
    if config.resume is not None:
        raise ConfigError("--resume continues one run", hint="drop --tool-mode")
    first = dataclasses.replace(config, tool_mode=tool_modes[0])
    return [first, *(dataclasses.replace(config, tool_mode=m, models=local, baselines=()) for m in tool_modes[1:])]
