"""The agent as an MCP server over stdio: `localagent mcp`.

An MCP client (Claude Code, Claude Desktop, Cursor) spawns this process and hands work to
the local agent the way it would to a sub-agent. Three tools: `run_agent`, `list_models`,
`pull_model`.

- stdout carries nothing but JSON-RPC. The SDK's stdio transport (mcp >= 2.0) claims fd 1
  while it serves: it writes the protocol to a private duplicate of fd 1 and points fd 1 at
  stderr, so print() and llama.cpp's C-level writes land on stderr. It finds the wire
  through `sys.stdout`, so sys.stdout must be left alone until then (replacing it would send
  the protocol to stderr). `--log-file` moves fd 2 itself, so everything not protocol goes
  to the file.
- One model stays loaded between calls and is unloaded after `keep_alive_s` idle seconds
  (Ollama's keep_alive), or when a call asks for another model.
- Workspaces are folders inside the root fixed at start-up; no argument can widen it.
- A client names models, not files: catalog aliases, [aliases] names, oracle/noop and models
  installed in the store; hub names (`hf.co/...`) and other tools' models (`ollama:...`) only
  once installed: a client cannot make the server download them, the operator's --model can. Paths to .gguf files only with `--allow-model-paths`, and even then
  a path outside the root gets one error whatever is (or is not) there.
- A bad request is a tool error (isError) carrying the message and hint a CLI user would
  see; the server keeps serving. A failure nothing translated is a tool error too ("internal
  error: ..."), with its traceback in the log. A line that is not a JSON-RPC message gets a
  JSON-RPC error (-32700 / -32600), which the SDK's transport does not send.
"""

# No `from __future__ import annotations`: the SDK reads the tools' annotations with
# typing.get_type_hints, which cannot see names local to build_server.

import inspect
import json
import logging
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError

from localagent import __version__, modelref, settings, store
from localagent.agent import Agent, AgentConfig
from localagent.catalog import PSEUDO_MODELS, Price, cost_usd, load_catalog, suggest
from localagent.engines.base import ChatModel, ToolMode
from localagent.errors import ConfigError, LocalAgentError, MissingExtraError, ModelNotFoundError
from localagent.memory import PeakMemory
from localagent.records import FinalStep, ModelStep, Step, safe_text
from localagent.sandbox import Workspace
from localagent.store import hubnames

try:
    import anyio
    import anyio.from_thread
    import anyio.to_thread
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.server.stdio import stdio_server
    from mcp.shared.message import SessionMessage
    from mcp.types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError, ToolAnnotations
except ImportError as exc:  # mcp 1.x lacks mcp.server.mcpserver too
    raise MissingExtraError("mcp>=2", "mcp", "`localagent mcp`") from exc

log = logging.getLogger("localagent.mcp")

Report = Callable[[float, float | None, str], None]  # progress, total, message

INSTRUCTIONS = (
    "A local AI agent running on this machine with a local GGUF model: private, offline, no API "
    "cost. Hand it self-contained file tasks inside the server's root folder: reading, searching, "
    "summarising, creating or editing files. Its file tools (read, list, search, write, edit) are "
    "confined to the workspace folder. Small local models are much weaker than you: give short, "
    "explicit instructions and check the answer. list_models shows what can run here."
)
PULL_REPORT_EVERY_S = 0.25


@dataclass(frozen=True)
class ServerConfig:
    """What `localagent mcp` was started with. Nothing here can be changed by a client."""

    root: Path
    default_model: str | None = None  # None: the catalog's default
    keep_alive_s: float = 300.0  # idle seconds before the model is unloaded; 0: at once; < 0: never
    max_tokens: int = AgentConfig.max_tokens  # per model reply
    time_limit_s: float = AgentConfig.time_limit_s  # per run_agent call
    n_ctx: int | None = None  # None: the engine's default for the model
    offline: bool = False
    allow_model_paths: bool = False  # run_agent may load a .gguf by path (`--allow-model-paths`)


class RunResult(BaseModel):
    """What one run_agent call did and what it cost."""

    success: bool = Field(description="True when the agent finished with an answer.")
    answer: str = Field(description="The agent's final answer; empty when it did not finish.")
    stop_reason: str = Field(description="answer, max_steps, timeout, context_overflow, repeated_invalid_call, ...")
    error: str | None = Field(description="Why the run stopped without an answer; null after an answer.")
    hint: str | None = Field(description="What can be done about `error`, when something can.")
    steps: int = Field(description="Model calls made.")
    tool_calls: int = Field(description="File-tool calls the agent made, invalid ones included.")
    invalid_tool_calls: int = Field(description="Tool calls the model got wrong (unknown tool, bad arguments).")
    tokens_in: int = Field(description="Input tokens over all model calls.")
    tokens_out: int = Field(description="Output tokens over all model calls.")
    wall_s: float = Field(description="Seconds the agent ran, model load excluded.")
    load_s: float = Field(description="Seconds spent loading the model in this call; 0 when it was still loaded.")
    model_loaded_fresh: bool = Field(description="False when the model was still loaded from an earlier call.")
    peak_rss_bytes: int = Field(description="Peak resident memory of the server process during the call.")
    cost_usd: float = Field(description="Dollars at the catalog's prices; 0 for local models.")
    model: str = Field(description="The model alias that ran.")
    tool_mode: str | None = Field(description="How the model called tools: json (grammar-constrained) or native.")
    think: bool | None = Field(
        default=None, description="Whether the model was told to think first; None: not a thinking model."
    )
    reasoning_tokens: int = Field(default=0, description="Output tokens the model spent thinking (part of tokens_out).")
    workspace: str = Field(description="The workspace folder, relative to the server's root.")


class HostedStatus(BaseModel):
    alias: str
    provider: str
    api_key_set: bool = Field(description="Whether this server has the API key's environment variable.")
    price: Price | None = Field(description="USD per 1M tokens, from the catalog.")


class ModelList(BaseModel):
    """What list_models returns."""

    default_model: str = Field(description="What run_agent uses when no model is given.")
    loaded_model: str | None = Field(description="The model kept loaded now: a call with it starts at once.")
    available_ram_bytes: int = Field(description="RAM available on this machine now.")
    local: list[store.ModelStatus] = Field(
        description="Catalog and installed local models; `fits`: fits in available RAM."
    )
    hosted: list[HostedStatus] = Field(description="Hosted models: they need an API key and the network.")


class PullResult(BaseModel):
    alias: str
    quant: str | None
    path: str
    sha256: str
    size_bytes: int
    source: str = Field(description="hub (downloaded), bundled (shipped in a Python package), import or path.")


# ---------------------------------------------------------------- the kept model


class ModelKeeper:
    """One loaded model at a time, kept `keep_alive_s` seconds after its last use.

    `use()` holds a lock for the whole run: a llama.cpp model serves one call at a time, so a
    second run_agent waits for the first. The unload timer re-checks under the same lock, so
    a model is never closed under a running agent."""

    def __init__(self, keep_alive_s: float, opener: Callable[[str, ToolMode, bool | None], ChatModel]):
        self.keep_alive_s = keep_alive_s
        self._open = opener
        self._lock = threading.Lock()
        self._key: tuple[str, ToolMode, bool | None] | None = None
        self._model: ChatModel | None = None
        self._timer: threading.Timer | None = None
        self._last_used = 0.0

    @contextmanager
    def use(
        self, alias: str, tool_mode: ToolMode, before_load: Callable[[], None], think: bool | None = None
    ) -> Iterator[tuple[ChatModel, bool]]:
        """Yields (model, loaded_fresh). When a load is needed, the kept model is unloaded
        first (its memory is what the next one may need), then `before_load` runs."""
        with self._lock:
            self._cancel_timer()
            key = (alias, tool_mode, think)
            fresh = self._key != key
            try:
                if fresh:
                    self._unload(f"{alias} ({tool_mode}, think={think}) was asked for")
                    before_load()
                    self._model = self._open(*key)
                    self._key = key
                    log.info("loaded %s in %.2f s: %s", alias, self._model.load_s, self._model.describe().as_dict())
                assert self._model is not None  # the key is set only together with its model
                yield self._model, fresh
            finally:
                self._last_used = time.monotonic()
                self._schedule_unload()

    def loaded(self) -> str | None:
        key = self._key
        return key[0] if key else None

    def close(self) -> None:
        with self._lock:
            self._cancel_timer()
            self._unload("the server is stopping")

    def _schedule_unload(self) -> None:
        if self._model is None or self.keep_alive_s < 0:
            return
        if self.keep_alive_s == 0:
            self._unload("keep-alive is 0")
            return
        self._timer = threading.Timer(self.keep_alive_s, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            if time.monotonic() - self._last_used >= self.keep_alive_s:
                self._unload(f"idle for {self.keep_alive_s:g} s")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _unload(self, why: str) -> None:
        if self._model is not None:
            log.info("unloading %s: %s", self.loaded(), why)
            self._model.close()
        self._model, self._key = None, None


# ---------------------------------------------------------------- workspace


def server_root(path: Path) -> Path:
    """The resolved root for `--root`. The filesystem's root is refused: a client that starts
    the server from `/` (Claude Desktop does) without --root would expose every file."""
    if not path.expanduser().is_dir():
        raise ConfigError(f"the server's root {path} is not an existing folder", hint="pass one to --root")
    root = Workspace(path).root
    if root == Path(root.anchor):
        raise ConfigError(
            f"the server's root would be {root}, the whole filesystem",
            hint="pass the folder the agent may work in: `localagent mcp --root /path/to/project`",
        )
    return root


def confine(root: Path, requested: str) -> Path:
    """The folder `requested` names: relative to `root`, or absolute but inside it. Symlinks
    are followed before the check, so a link out of the root is refused like `..`."""
    text = requested.strip() or "."
    if "\0" in text:
        raise ConfigError("the workspace path contains a NUL character")
    sandbox = Workspace(root)
    try:
        real = Path(os.path.realpath(sandbox.root / Path(text).expanduser()))
    except RuntimeError:  # `~nosuchuser`: there is no such home to expand
        raise ConfigError(
            f"workspace '{requested}' names the home folder of a user this machine does not have",
            hint="give a folder inside the root, relative to it ('.' is the root itself)",
        ) from None
    if not sandbox.contains(real):
        raise ConfigError(
            f"workspace '{requested}' is outside the server's root {sandbox.root}",
            hint="give a folder inside the root, relative to it ('.' is the root itself); the root is "
            "fixed when the server starts (`localagent mcp --root DIR`)",
        )
    if not real.is_dir():
        raise ConfigError(
            f"workspace '{requested}' is not an existing folder under {sandbox.root}",
            hint="create the folder first, or give '.' for the root itself",
        )
    return real


# ---------------------------------------------------------------- model names


def _has_path_syntax(name: str) -> bool:
    """Whether a client's model name reads as a file path: decided from the text alone, so
    the answer says nothing about the filesystem."""
    return "/" in name or os.sep in name or name.startswith("~") or name.lower().endswith(".gguf")


def model_names() -> list[str]:
    """Every name a client may give: catalog aliases (local, hosted, [aliases]), the pseudo
    models, and the aliases of models installed in the store."""
    catalog = load_catalog()
    return list(dict.fromkeys([*catalog.aliases, *PSEUDO_MODELS, *(m.alias for m in store.installed())]))


def admit_model(name: str, root: Path, *, allow_paths: bool) -> str:
    """What a client's `model` argument may run: a known name (ALIAS:QUANT too) as given; a
    path only when `allow_paths`, as the resolved path of a .gguf regular file. Nothing about a
    refused name depends on the filesystem, and a path outside `root` that cannot be used gets
    one error whether it is missing, a folder, another kind of file or not a GGUF."""
    if _names_another_source(name):
        return _installed_by_name(name)
    known = model_names()
    if store.split_quant(name)[0] in known:
        return name
    if not _has_path_syntax(name):
        raise ModelNotFoundError(
            f"unknown model '{name}'", hint=suggest(name, known).replace("`localagent models list`", "list_models")
        )
    if not allow_paths:
        raise ConfigError(
            f"model '{name}' is not a catalog alias or an installed model, and this server does not load models by path",
            hint="give an alias from list_models; to use a GGUF file, register it (`localagent models import PATH "
            "--name NAME`) or start the server with `localagent mcp --allow-model-paths`",
        )
    return str(_model_file(root, name))


def _names_another_source(name: str) -> bool:
    return hubnames.is_hub_name(name) or name.startswith(hubnames.EXTERNAL_PREFIXES)


def _installed_by_name(name: str) -> str:
    """A hub name (`hf.co/USER/REPO[:QUANT]`, `hf://USER/REPO/FILE`) or another tool's model
    (`ollama:...`) as given when that very model is on this machine; a client cannot make
    the server download one (the operator can: `localagent mcp --model NAME`)."""
    ref = modelref.refer(name, offline=True)
    if ref.installed is None:
        raise ModelNotFoundError(
            f"'{name}' is not installed on this server, and a client cannot make it download one",
            hint=f"pull it on the server's machine (`localagent models pull {name}`), or start the server with "
            f"`localagent mcp --model {name}`; list_models shows what is installed",
        )
    return name


def _model_file(root: Path, name: str) -> Path:
    """The .gguf regular file `name` points at (relative to `root`, or absolute), verified as
    a GGUF. Inside the root the error says what is wrong; outside it, one error for all."""
    uniform = ModelNotFoundError(
        f"'{name}' is not a model file this server can use",
        hint=f"outside the server's root {root}, a model path must be an existing, readable .gguf file; "
        "or give an alias from list_models",
    )
    if "\0" in name:
        raise uniform
    try:
        real = Path(os.path.realpath(root / Path(name).expanduser()))
    except RuntimeError:  # `~nosuchuser/m.gguf`: no such home, so nothing there either
        raise uniform from None
    inside = Workspace(root).contains(real)
    if not (name.lower().endswith(".gguf") and real.suffix.lower() == ".gguf"):
        raise (
            uniform
            if not inside
            else ConfigError(
                f"model path '{name}' does not name a .gguf file", hint="give the path of a GGUF model file"
            )
        )
    try:
        regular = stat.S_ISREG(os.stat(real).st_mode)  # a stat, never an open: a FIFO cannot block
    except OSError:
        regular = False
    if not regular:
        raise (
            uniform
            if not inside
            else ModelNotFoundError(
                f"no such model file: {name} (under {root})",
                hint="give the path of a GGUF model file, relative to the root",
            )
        )
    if not inside:
        try:
            store.resolve(str(real), offline=True)  # the header and sha256, remembered for the load
        except (LocalAgentError, OSError):  # OSError: unreadable
            raise uniform from None
    return real


# ---------------------------------------------------------------- the work, synchronous


class AgentService:
    """What the tools do, without MCP: blocking calls for worker threads, reporting progress
    through a callback."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.root = server_root(config.root)
        self.offline = config.offline or settings.offline()
        self.keeper = ModelKeeper(config.keep_alive_s, self._open_model)

    def _open_model(self, alias: str, tool_mode: ToolMode, think: bool | None) -> ChatModel:
        from localagent.engines import open_model
        from localagent.engines.base import EngineConfig

        config = EngineConfig(tool_mode=tool_mode, n_ctx=self.config.n_ctx, offline=self.offline, think=think)
        return open_model(alias, config)

    def _check_known(self, alias: str) -> None:
        """ModelNotFoundError, with suggestions, for an alias neither installed nor in the
        catalog; no network, no download."""
        modelref.refer(alias, offline=True)

    def _prepare(self, alias: str, report: Report) -> None:
        """With no model loaded: refuse a model too big for the RAM available now (before any
        download), then pull it if it is missing."""
        modelref.prepare(
            alias,
            n_ctx=self.config.n_ctx,
            offline=self.offline,
            progress=_pull_reporter(alias, report),
            flag=None,
        )

    def run(
        self,
        prompt: str,
        *,
        model: str | None,
        workspace: str,
        max_steps: int,
        tool_mode: ToolMode,
        report: Report,
        check: Callable[[], None] = lambda: None,
        think: bool | None = None,
    ) -> RunResult:
        """`check` is called between generated tokens; it raises to stop the run."""
        if not prompt.strip():
            raise ConfigError("the prompt is empty", hint="say what the agent should do")
        folder = confine(self.root, workspace)
        catalog = load_catalog()
        if model and model != self.config.default_model:  # the operator's own --model is trusted
            model = admit_model(model, self.root, allow_paths=self.config.allow_model_paths)
        alias = model or self.config.default_model or catalog.default
        self._check_known(alias)  # before the kept model is unloaded for it
        agent_config = AgentConfig(
            max_steps=max_steps, time_limit_s=self.config.time_limit_s, max_tokens=self.config.max_tokens
        )

        def before_load() -> None:
            self._prepare(alias, report)
            report(0, max_steps, f"loading {alias}")

        final: FinalStep | None = None
        with PeakMemory() as memory, self.keeper.use(alias, tool_mode, before_load, think) as (chat_model, fresh):
            engine = chat_model.describe()
            for step in Agent(chat_model, folder, agent_config).run(prompt, on_token=lambda _: check()):
                log.info("%s", _log_line(step))
                if isinstance(step, ModelStep):
                    report(step.step, max_steps, _progress_line(step))
                elif isinstance(step, FinalStep):
                    final = step
        assert final is not None, "Agent.run always ends with a FinalStep"
        hosted = catalog.hosted.get(alias)
        return RunResult(
            success=final.stop_reason == "answer",
            answer=final.answer,
            stop_reason=final.stop_reason,
            error=final.error,
            hint=final.hint,
            steps=final.step,
            tool_calls=final.tool_calls,
            invalid_tool_calls=final.invalid_tool_calls,
            tokens_in=final.usage.input_tokens,
            tokens_out=final.usage.output_tokens,
            wall_s=round(final.wall_s, 3),
            load_s=round(chat_model.load_s if fresh else 0.0, 3),
            model_loaded_fresh=fresh,
            peak_rss_bytes=memory.peak_rss,
            cost_usd=cost_usd(final.usage, hosted.price if hosted else None),
            model=chat_model.name,
            tool_mode=engine.tool_mode,
            think=engine.think,
            reasoning_tokens=final.usage.reasoning_tokens,
            workspace=folder.relative_to(self.root).as_posix() or ".",
        )

    def list_models(self) -> ModelList:
        from localagent import hardware

        catalog = load_catalog()
        available = hardware.available_ram()
        return ModelList(
            default_model=self.config.default_model or catalog.default,
            loaded_model=self.keeper.loaded(),
            available_ram_bytes=available,
            local=store.overview(available),
            hosted=[
                HostedStatus(
                    alias=h.alias,
                    provider=h.provider,
                    api_key_set=h.api_key_env is None or settings.env(h.api_key_env) is not None,
                    price=h.price,
                )
                for h in catalog.hosted.values()
            ],
        )

    def pull(self, alias: str, report: Report) -> PullResult:
        if _names_another_source(alias):
            raise ConfigError(
                f"pull_model downloads catalog models only, not '{alias}'",
                hint=f"pull it on the server's machine (`localagent models pull {alias}`), or start the server with "
                f"`localagent mcp --model {alias}`",
            )
        if _has_path_syntax(alias):
            raise ConfigError(
                f"pull_model takes a model alias, not a path: '{alias}'",
                hint="give a local model alias from list_models (ALIAS:QUANT for another quant)",
            )
        if self.offline:
            raise ConfigError(
                "this server was started offline: it cannot download models",
                hint="pull it from a shell while online: `localagent models pull " + alias + "`",
            )
        modelref.check_fit(modelref.refer(alias))  # a model too big for this machine: nothing downloaded
        resolved = store.pull(alias, progress=_pull_reporter(alias, report))
        return PullResult(
            alias=resolved.alias,
            quant=resolved.quant,
            path=str(resolved.path),
            sha256=resolved.sha256,
            size_bytes=resolved.size_bytes,
            source=resolved.source,
        )


def _pull_reporter(alias: str, report: Report) -> Callable[[int, int | None], None]:
    """A download callback (bytes done, bytes total) that sends at most one progress
    notification per PULL_REPORT_EVERY_S, and always the last one."""
    last = [0.0]

    def on_bytes(done: int, total: int | None) -> None:
        now = time.monotonic()
        if done != total and now - last[0] < PULL_REPORT_EVERY_S:
            return
        last[0] = now
        of = f" of {total / 1e6:.1f}" if total else ""
        report(done, total, f"downloading {alias}: {done / 1e6:.1f}{of} MB")

    return on_bytes


def _progress_line(step: ModelStep) -> str:
    """`step 2: read_file(path='README.md')`, or `step 3: answer`."""
    from localagent.tools import call_text  # the CLI's rendering of a call, so both read alike

    calls = ", ".join(call_text(c) for c in step.reply.tool_calls)
    return f"step {step.step}: {calls or 'answer'}"


def _log_line(step: Step) -> str:
    if isinstance(step, ModelStep):
        u = step.reply.usage
        return f"step {step.step}: model {u.input_tokens} tokens in / {u.output_tokens} out, {step.reply.timings.total_s:.2f} s"
    if isinstance(step, FinalStep):
        why = f" ({step.error})" if step.error else ""
        return f"run ended: {step.stop_reason} after {step.step} steps, {step.wall_s:.2f} s{why}"
    outcome = f"error: {step.error}" if step.error else f"{len(step.result)} chars"
    return f"step {step.step}: {step.call.name} -> {outcome}"


# ---------------------------------------------------------------- the MCP layer


class _Cancelled(Exception):
    """Raised on a worker thread to stop work whose request was cancelled."""


class _Channel:
    """A worker thread's line back to its request: progress notifications, and whether the
    request was cancelled (the client gave up, or the server is stopping)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.cancelled = threading.Event()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise _Cancelled

    def report(self, progress: float, total: float | None, message: str) -> None:
        self.check()
        anyio.from_thread.run(self.ctx.report_progress, progress, total, message)


async def _in_thread(ctx: Context, work: Callable[[_Channel], Any]) -> Any:
    """Run blocking `work(channel)` on a worker thread. A cancelled request stops the work
    at its next check or report. Every failure becomes a tool error: LocalAgentError with its
    hint, anything else as an internal error (the SDK would send only "Error executing tool")."""
    channel = _Channel(ctx)

    def guarded(channel: _Channel) -> Any:
        try:
            return work(channel)
        except _Cancelled:
            log.info("stopped: the request was cancelled")
            raise

    try:
        return await anyio.to_thread.run_sync(guarded, channel, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        channel.cancelled.set()
        raise
    except LocalAgentError as exc:
        log.info("refused: %s", exc.message)
        raise ToolError(safe_text(exc.message + (f"\nhint: {exc.hint}" if exc.hint else ""))) from exc
    except Exception as exc:  # a bug, or a failure nothing translated: the client still learns what
        log.exception("internal error")
        raise ToolError(
            safe_text(f"internal error: {type(exc).__name__}: {exc}")
            + "\nhint: this is a bug in localagent; the server's log (stderr, or --log-file) has the traceback"
        ) from exc


def build_server(config: ServerConfig) -> MCPServer:
    service = AgentService(config)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[None]:
        log.info(
            "localagent %s MCP server: root %s, default model %s, keep-alive %g s",
            __version__,
            service.root,
            config.default_model or "(the catalog's default)",
            config.keep_alive_s,
        )
        try:
            yield
        finally:
            # on a worker thread: a run still holding the model needs the event loop to see
            # its cancellation (at its next progress report) and let go
            await anyio.to_thread.run_sync(service.keeper.close)

    server = MCPServer("localagent", version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan)

    def tool(annotations: ToolAnnotations) -> Callable[[Callable[..., Any]], Any]:
        """server.tool with the docstring, dedented, as the description the client reads."""

        def register(fn: Callable[..., Any]) -> Any:
            assert fn.__doc__, f"the tool {fn.__name__} needs a docstring: it is its description"
            return server.tool(description=inspect.cleandoc(fn.__doc__), annotations=annotations)(fn)

        return register

    @tool(ToolAnnotations(title="Run the local agent", destructive_hint=True, open_world_hint=False))
    async def run_agent(
        prompt: Annotated[
            str, Field(description="The task, self-contained: the agent sees nothing of your conversation.")
        ],
        ctx: Context,
        model: Annotated[
            str | None,
            Field(
                description="A model alias from list_models (ALIAS:QUANT for another quant); default: the server's default."
            ),
        ] = None,
        workspace: Annotated[
            str, Field(description="The folder to work in, relative to the server's root ('.' is the root).")
        ] = ".",
        max_steps: Annotated[
            int, Field(ge=1, le=100, description="Most model calls before the agent gives up.")
        ] = AgentConfig.max_steps,
        tool_mode: Annotated[
            ToolMode,
            Field(
                description="How the model calls tools: auto (the catalog's advice), json (grammar-constrained) or native."
            ),
        ] = "auto",
        think: Annotated[
            bool | None,
            Field(description="Let the model think before it answers (models that can); default: the model's own."),
        ] = None,
    ) -> RunResult:
        """Run the local agent on a task in a workspace folder; it can read, list, search,
        write and edit files there. Returns its answer with steps, tokens, time, memory and
        cost. Reports progress once per agent step."""
        return await _in_thread(
            ctx,
            lambda channel: service.run(
                prompt,
                model=model,
                workspace=workspace,
                max_steps=max_steps,
                tool_mode=tool_mode,
                report=channel.report,
                check=channel.check,
                think=think,
            ),
        )

    @tool(ToolAnnotations(title="List models", read_only_hint=True, open_world_hint=False))
    async def list_models(ctx: Context) -> ModelList:
        """The models run_agent can use: local ones (installed or not, size, RAM needed,
        whether they fit in the RAM available now) and hosted ones."""
        return await _in_thread(ctx, lambda channel: service.list_models())

    @tool(ToolAnnotations(title="Download a model", idempotent_hint=True, open_world_hint=True))
    async def pull_model(
        alias: Annotated[str, Field(description="A local model alias from list_models, or ALIAS:QUANT.")],
        ctx: Context,
    ) -> PullResult:
        """Download a local model from Hugging Face into the model store and verify its
        sha256 (nothing is downloaded when it is installed already). Reports download progress."""
        return await _in_thread(ctx, lambda channel: service.pull(alias, channel.report))

    return server


def serve(config: ServerConfig, log_file: Path | None = None) -> None:
    """Serve on stdin/stdout until the client closes stdin."""
    if log_file is not None:
        _stderr_to(log_file)
    # before MCPServer's own basicConfig, which is a no-op once the root logger has a handler
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    anyio.run(_serve_stdio, build_server(config))


async def _serve_stdio(server: MCPServer) -> None:
    """What `server.run("stdio")` does, plus an answer for each line the SDK cannot read.

    The SDK's stdio transport hands such a line (not JSON, params that are not an object, a
    lone surrogate, a number of thousands of digits, deep nesting) on as an exception, which
    its dispatcher logs at debug level and drops: no JSON-RPC error goes back, and a client
    waits on that request until its own timeout (modelcontextprotocol/python-sdk#2751). The
    exceptions are taken out of the stream here and answered. MCPServer has no public way to
    serve given streams, hence its `_lowlevel_server`, as its own run_stdio_async does."""
    lowlevel = server._lowlevel_server
    async with stdio_server() as (from_client, to_client):
        # the SDK's dispatcher takes any receive stream (it only reads `last_context` if there)
        sift_to, sifted = anyio.create_memory_object_stream[Any](0)

        async def sift() -> None:
            async with sift_to:
                async for item in from_client:
                    if isinstance(item, Exception):
                        answer = _unreadable_answer(item)
                        log.warning("answered a line that is not a JSON-RPC message: %s", answer.error.message)
                        await to_client.send(SessionMessage(answer))
                    else:
                        await sift_to.send(item)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sift)
            # ends when the client closes stdin: the transport ends `from_client`, sift ends `sifted`
            await lowlevel.run(sifted, to_client, lowlevel.create_initialization_options())


def _unreadable_answer(exc: Exception) -> JSONRPCError:
    """The JSON-RPC error for a line the SDK could not read (its pydantic ValidationError):
    -32700 Parse error when the text is not JSON it reads, else -32600 Invalid Request. The
    id is the request's when it can be read from the line, else null, as JSON-RPC says."""
    errors = exc.errors() if isinstance(exc, ValidationError) else []
    request_id = None
    for e in errors:
        value, loc = e.get("input"), e.get("loc", ())
        if e.get("type") == "json_invalid":  # the input is the line: Python's JSON reads
            try:  # surrogates, and numbers too long for int() as None (pydantic's refuses both)
                value = json.loads(value, parse_int=lambda digits: int(digits) if len(digits) < 4000 else None)
            except (ValueError, RecursionError, TypeError):
                continue
        elif not (len(loc) == 1 or (e.get("type") == "missing" and len(loc) == 2)):
            continue  # the input is a part of the message (params), whose "id" is not the request's
        found = value.get("id") if isinstance(value, dict) else None
        # an id that cannot be written back as UTF-8 (a lone surrogate) would kill the writer
        if (isinstance(found, int) and not isinstance(found, bool)) or (
            isinstance(found, str) and found == safe_text(found)
        ):
            request_id = found
            break
    parse = not errors or any(e.get("type") == "json_invalid" for e in errors)
    first = errors[0] if errors else {"msg": str(exc)}
    where = ".".join(str(part) for part in first.get("loc", ())[1:])  # past the union member's name
    # the message only, never the input: the line can be megabytes
    detail = safe_text(f"{where}: {first.get('msg')}" if where else str(first.get("msg")))[:200]
    error = (
        ErrorData(code=PARSE_ERROR, message=f"Parse error: {detail}")
        if parse
        else ErrorData(
            code=INVALID_REQUEST, message=f"Invalid Request: not a JSON-RPC request this server reads ({detail})"
        )
    )
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=error)


def _stderr_to(path: Path) -> None:
    """Point fd 2 at `path`, appending: Python logging, warnings and llama.cpp's own log go
    there, and so does fd 1 once the transport diverts it to fd 2."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise ConfigError(
            f"cannot open the log file {path}: {exc.strerror}", hint="give a writable path to --log-file"
        ) from exc
    os.dup2(fd, 2)
    os.close(fd)
