"""Engines: every kind of model behind the one ChatModel protocol (engines/base.py).

`open_model` is the one place that turns an alias into a model, so the CLI, the bench and the
MCP server never branch on the kind. Engine modules are imported only when used: llama_cpp
and openai load in the command that needs them, not in `localagent --help`.
"""

from __future__ import annotations

from localagent.engines.base import ChatModel, EngineConfig
from localagent.errors import ConfigError


def open_model(alias: str, config: EngineConfig = EngineConfig()) -> ChatModel:
    """ "noop" -> the scripted model that answers at once; a hosted catalog alias -> the
    OpenAI-compatible engine; anything else (a local alias, `alias:QUANT`, a .gguf path) ->
    llama.cpp, through the model store (which may download it unless offline)."""
    if alias == "noop":
        from localagent.engines.scripted import NoopModel

        return NoopModel()
    if alias == "oracle":
        raise ConfigError(
            "'oracle' replays a benchmark task's reference solution, so it only runs inside a bench",
            hint="use it as `localagent bench --model oracle`",
        )
    from localagent.catalog import load_catalog

    hosted = load_catalog().hosted.get(alias)
    if hosted is not None:
        from localagent.engines.openai_compat import OpenAICompatModel

        return OpenAICompatModel(hosted, config)
    from localagent.engines.llamacpp import LlamaCppModel

    return LlamaCppModel.from_alias(alias, config)


__all__ = ["ChatModel", "EngineConfig", "open_model"]
