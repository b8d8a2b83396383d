"""Engines: every kind of model behind the one ChatModel protocol (engines/base.py).

`open_model` turns a name into a model by what localagent.modelref says the name is, so the
CLI, the bench and the MCP server never branch on the kind. Engine modules are imported only
when used: llama_cpp and openai load in the command that needs them, not in `localagent --help`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from localagent.engines.base import ChatModel, EngineConfig
from localagent.errors import ConfigError


def open_model(alias: str, config: EngineConfig = EngineConfig()) -> ChatModel:
    """ "noop" -> the scripted model that answers at once; a hosted catalog alias -> the
    OpenAI-compatible engine; anything else (a local alias, `alias:QUANT`, a hub name, a
    .gguf path) -> llama.cpp, through the model store (which may download it unless offline),
    after refusing a model too big for the RAM available with nothing downloaded."""
    from localagent import modelref

    offline = True if config.offline else None
    ref = modelref.refer(alias, offline=offline)
    if ref.kind == "pseudo":
        return open_pseudo(alias)
    if ref.kind == "hosted":
        from localagent.engines.openai_compat import OpenAICompatModel

        return OpenAICompatModel(ref.hosted, config)
    resolved = modelref.ready(ref, n_ctx=config.n_ctx, offline=offline, flag=None).installed
    assert resolved is not None
    from localagent.engines.llamacpp import LlamaCppModel

    return LlamaCppModel.from_resolved(resolved, config, alias)


def open_pseudo(alias: str, solution: Sequence[Any | Mapping[str, Any]] | None = None) -> ChatModel:
    """The scripted pseudo models: "noop" answers at once; "oracle" replays a task's
    reference `solution`, so only a bench (which has the task) can open it."""
    from localagent.engines.scripted import NoopModel, OracleModel

    if alias == "oracle":
        if solution is None:
            raise ConfigError(
                "'oracle' replays a benchmark task's reference solution, so it only runs inside a bench",
                hint="use it as `localagent bench --model oracle`",
            )
        return OracleModel(solution)
    return NoopModel()


__all__ = ["ChatModel", "EngineConfig", "open_model", "open_pseudo"]
