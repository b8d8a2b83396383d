"""`localagent mcp`: serve the agent to MCP clients over stdio."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from localagent import settings
from localagent.agent import AgentConfig
from localagent.cli.app import app
from localagent.errors import ConfigError

# longest --keep-alive and --time-limit: a week. click's min= lets `inf` through and `nan`
# compares false with everything; a threading.Timer past threading.TIMEOUT_MAX (292 years)
# dies with OverflowError in its own thread, and nan never unloads the model
MAX_SECONDS = 7 * 24 * 3600.0


@app.command("mcp")
def mcp_command(
    root: Path = typer.Option(
        Path("."), "--root", help="The folder run_agent may work in (its subfolders too); nothing outside it."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Default model alias for run_agent; default: the catalog's default."
    ),
    keep_alive: float = typer.Option(
        300.0,
        "--keep-alive",
        help="Seconds a loaded model stays loaded after a call, at most a week (0: unload at once, -1: until the server stops).",
    ),
    log_file: Optional[Path] = typer.Option(
        None, "--log-file", help="Append the server's log (and llama.cpp's) here instead of stderr."
    ),
    max_tokens: int = typer.Option(AgentConfig.max_tokens, "--max-tokens", min=1, help="Most tokens per model reply."),
    time_limit: float = typer.Option(
        AgentConfig.time_limit_s,
        "--time-limit",
        help="Wall-clock limit of one run_agent call, in seconds (1 to a week).",
    ),
    n_ctx: Optional[int] = typer.Option(
        None, "--n-ctx", min=256, help="Context length to load local models with; default: the engine's."
    ),
    offline: bool = typer.Option(False, "--offline", help="Never touch the network (no pulls)."),
    allow_model_paths: bool = typer.Option(
        False,
        "--allow-model-paths",
        help="Let clients give run_agent a path to a .gguf file as its model; without it, only catalog aliases and installed models.",
    ),
) -> None:
    """Serve the agent to MCP clients (Claude Code, Claude Desktop, Cursor) over stdio.

    The client starts this command itself; stdout carries only the protocol."""
    if not (keep_alive == -1 or (math.isfinite(keep_alive) and 0 <= keep_alive <= MAX_SECONDS)):
        raise ConfigError(
            f"--keep-alive {keep_alive:g} is not -1, 0 or a number of seconds up to {MAX_SECONDS:g} (a week)",
            hint="give e.g. --keep-alive 300; -1 keeps the model loaded until the server stops",
        )
    if not (math.isfinite(time_limit) and 1 <= time_limit <= MAX_SECONDS):
        raise ConfigError(
            f"--time-limit {time_limit:g} is not a number of seconds from 1 to {MAX_SECONDS:g} (a week)",
            hint="give e.g. --time-limit 600; an MCP client usually gives up on a call long before",
        )
    from localagent.mcp_server import ServerConfig, serve, server_root

    config = ServerConfig(
        root=server_root(root),
        default_model=model,
        keep_alive_s=keep_alive,
        max_tokens=max_tokens,
        time_limit_s=time_limit,
        n_ctx=n_ctx,
        offline=offline or settings.offline(),
        allow_model_paths=allow_model_paths,
    )
    serve(config, log_file)
