"""`localagent run PROMPT`: one agent run in a workspace, shown as it happens."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from localagent import __version__, settings
from localagent.agent import Agent, AgentConfig
from localagent.bench.cascade import members as cascade_members
from localagent.bench.confine import require_confinement
from localagent.catalog import cost_usd, load_catalog
from localagent.cli.app import app
from localagent.cli.map import PreferChoice
from localagent.engines.base import EngineConfig, EngineInfo
from localagent.errors import ConfigError
from localagent.fallback import Attempt, attempt_of, parse_check, run_check
from localagent.memory import PeakMemory
from localagent.records import FinalStep, ModelStep, Step, ToolStep, as_dict
from localagent.snapshot import Snapshot
from localagent.tools import Workspace, call_text, plural
from localagent.trace import TraceWriter, trace_error
from localagent.units import format_bytes

if TYPE_CHECKING:
    from localagent.bench.autopick import AutoPick

STOP_HINTS = {
    "max_steps": "raise --max-steps, or split the task",
    "timeout": "raise --time-limit",
    "context_overflow": "the conversation outgrew the model's context; use a model with a longer context or a smaller task",
    "repeated_invalid_call": "the model kept making the same invalid call; try a larger model or --tool-mode json",
    "repeated_failing_call": "the model kept repeating a call that fails; try a larger model",
    "engine_error": "run with --debug, or check the model with `localagent models verify`",
    "api_error": "check the API key, the endpoint and your quota",
    "unfinished_thinking": "the model's thinking never closed: raise --max-tokens, or turn thinking off with --no-think",
}


class ToolModeChoice(str, enum.Enum):
    auto = "auto"
    json = "json"
    native = "native"


class Progress:
    """Tokens and tool calls on stderr as they happen; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool):
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.enabled = enabled
        self._mid_line = False

    def note(self, text: str) -> None:
        if self.enabled:
            self._end_line()
            self.console.print(f"[dim]{escape(text)}[/dim]")

    def token(self, text: str) -> None:
        if self.enabled and text:  # "" is an engine's heartbeat while it waits
            self.console.print(escape(text), end="", style="dim")
            self._mid_line = True

    def _end_line(self) -> None:
        if self._mid_line:
            self.console.print()
            self._mid_line = False

    def step(self, step: Step) -> None:
        if not self.enabled or isinstance(step, FinalStep):
            return
        self._end_line()
        if isinstance(step, ModelStep):
            usage = step.reply.usage
            self.console.print(
                f"[dim]step {step.step}: {usage.input_tokens} tokens in, {usage.output_tokens} out, "
                f"{step.reply.timings.total_s:.2f} s[/dim]"
            )
        elif isinstance(step, ToolStep):
            mark = "[red]✗[/red]" if step.error else "[green]→[/green]"
            self.console.print(f"{mark} {escape(call_text(step.call))}")
            if step.error:
                self.console.print(f"  [red]{escape(step.error)}[/red]")
            else:
                lines = len(step.result.splitlines())
                self.console.print(f"  [dim]{plural(lines, 'line')}, {plural(len(step.result), 'char')}[/dim]")


def summary_line(final: FinalStep, load_s: float, memory: PeakMemory) -> str:
    usage = final.usage
    cached = f" ({usage.cached_input_tokens} cached)" if usage.cached_input_tokens else ""
    invalid = f" ({final.invalid_tool_calls} invalid)" if final.invalid_tool_calls else ""
    return (
        f"{final.stop_reason} · {plural(final.step, 'step')} · {plural(final.tool_calls, 'tool call')}{invalid} · "
        f"tokens {usage.input_tokens} in{cached} / {usage.output_tokens} out · "
        f"{final.wall_s:.2f} s (model {final.model_s:.2f} s, load {load_s:.2f} s) · "
        f"peak RSS {format_bytes(memory.peak_rss)} (anon {format_bytes(memory.peak_anon)})"
    )


@dataclass(frozen=True)
class _Ran:
    """One model's run, as the CLI reports it."""

    name: str
    final: FinalStep
    engine: EngineInfo
    load_s: float


def result_json(ran: _Ran, memory: PeakMemory, workspace: Workspace, trace: Path | None) -> dict[str, Any]:
    final, engine = ran.final, ran.engine
    return {
        "answer": final.answer,
        "stop_reason": final.stop_reason,
        "error": final.error,
        "hint": final.hint,
        "model": ran.name,
        "tool_mode": engine.tool_mode,
        "engine": engine.as_dict(),
        "steps": final.step,
        "tool_calls": final.tool_calls,
        "invalid_tool_calls": final.invalid_tool_calls,
        "usage": as_dict(final.usage),
        "prompt_tokens_evaluated": final.prompt_tokens_evaluated,
        "timings": {"wall_s": final.wall_s, "model_s": final.model_s, "tool_s": final.tool_s, "load_s": ran.load_s},
        "memory": memory.as_dict(),
        "workspace": str(workspace.root),
        "trace": str(trace) if trace else None,
    }


def _finite(value: float) -> float:
    # click's min=1 lets `inf` through (and nan compares false with everything)
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a number of seconds; give a finite limit, e.g. 600")
    return value


class _Trace(TraceWriter):
    """The run's --trace file. A write that fails (/dev/full, a full disk, a file size limit)
    stops the run with `error:` naming the file, instead of an OSError traceback. A file this
    run created and left empty, failing before the header (an unknown model), is removed."""

    def __enter__(self) -> _Trace:
        self._created = not self.path.exists()
        super().__enter__()
        return self

    def _append(self, record: dict[str, Any]) -> None:
        try:
            super()._append(record)
        except OSError as exc:
            raise trace_error(self.path, exc) from exc

    def attempt(self, record: dict[str, Any]) -> None:
        """One model's try at the run, written after its steps: with --fallback, the steps
        between two attempt records are the later model's."""
        self._append({"kind": "attempt", **record})

    def __exit__(self, *exc_info: Any) -> None:
        try:
            super().__exit__(*exc_info)
        except OSError as exc:
            raise trace_error(self.path, exc) from exc
        if exc_info[0] is not None and self.header is None and self._created:
            with contextlib.suppress(OSError):
                if self.path.is_file() and self.path.stat().st_size == 0:
                    self.path.unlink()


@app.command()
def run(
    prompt: str = typer.Argument(..., help="What the agent should do."),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="Model alias (local or hosted); `auto`: the one `localagent recommend` names. Default: the catalog's default.",
    ),
    workspace: Path = typer.Option(Path("."), "--workspace", "-w", help="The folder the tools may read and write."),
    max_steps: int = typer.Option(AgentConfig.max_steps, "--max-steps", min=1, help="Most model calls."),
    time_limit: float = typer.Option(
        AgentConfig.time_limit_s, "--time-limit", min=1, callback=_finite, help="Wall-clock limit in seconds."
    ),
    max_tokens: int = typer.Option(AgentConfig.max_tokens, "--max-tokens", min=1, help="Most tokens per model reply."),
    tool_mode: ToolModeChoice = typer.Option(ToolModeChoice.auto, "--tool-mode", help="How local models call tools."),
    think: Optional[bool] = typer.Option(
        None,
        "--think/--no-think",
        help="Think before answering (models whose template takes enable_thinking). Default: the model's own.",
    ),
    path_constraints: bool = typer.Option(
        True,
        "--path-constraints/--no-path-constraints",
        help="In json mode, let path arguments name only the workspace's paths (write_file: any path inside).",
    ),
    for_tag: Optional[str] = typer.Option(
        None, "--for", help="With --model auto: the task tag to choose for (default: every benched task)."
    ),
    prefer: Optional[PreferChoice] = typer.Option(
        None, "--prefer", help="With --model auto: what to optimise for (default: performance)."
    ),
    min_success: float = typer.Option(
        0.8, "--min-success", min=0.0, max=1.0, help="With --model auto: the bar, on the interval's lower end."
    ),
    fallback: Optional[list[str]] = typer.Option(
        None, "--fallback", help="The next model to try when the run fails; repeatable, tried in order."
    ),
    check: Optional[str] = typer.Option(
        None, "--check", help="A command run (confined) in the workspace after the answer; failing it fails the run."
    ),
    allow_unconfined_checks: bool = typer.Option(
        False, "--allow-unconfined-checks", help="Run --check even where nothing can confine it."
    ),
    trace: Optional[Path] = typer.Option(None, "--trace", help="Write a JSONL trace of every step here."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    offline: bool = typer.Option(False, "--offline", help="Never touch the network."),
    cpu: bool = typer.Option(False, "--cpu", help="Keep every layer on the CPU."),
) -> None:
    """Run the agent on PROMPT in a workspace and print its answer."""
    if not prompt.strip():
        # an empty prompt would still load the model and spend a step on nothing
        raise ConfigError("the prompt is empty", hint='say what the agent should do: localagent run "list the files"')
    ws = Workspace(workspace)
    engine_config = EngineConfig(
        tool_mode=tool_mode.value, cpu_only=cpu, offline=offline or settings.offline(), think=think
    )
    agent_config = AgentConfig(
        max_steps=max_steps, time_limit_s=time_limit, max_tokens=max_tokens, path_constraints=path_constraints
    )
    auto = _auto(model, for_tag, prefer, min_success)
    if auto is not None:
        engine_config, agent_config = _apply(auto, engine_config, agent_config)
        if not json_output:
            print(auto.line, file=sys.stderr)
    first = auto.variant.model if auto else model or load_catalog().default
    # a cascade ('small>big', as benched) is its first model with the others as fallbacks
    aliases = [*(cascade_members(first) or (first,)), *(fallback or ())]
    if trace is not None and len(aliases) > 1 and trace.resolve().is_relative_to(ws.root.resolve()):
        raise ConfigError(
            f"--trace {trace} is inside the workspace, which is restored before each fallback model: it would be lost",
            hint="write the trace outside the workspace",
        )
    check_argv = parse_check(check) if check is not None else None
    if check_argv is not None:  # refused before any model loads, not after the run
        require_confinement(allow_unconfined_checks)
    progress = Progress(enabled=sys.stderr.isatty())

    with contextlib.ExitStack() as stack:
        # opened before the model loads: a trace path that cannot be written is refused at
        # once, not after the load; the header, which describes the engine, follows the load
        writer = stack.enter_context(_Trace(trace)) if trace else None
        memory = stack.enter_context(PeakMemory())
        snapshot = stack.enter_context(Snapshot(ws.root)) if len(aliases) > 1 else None
        attempts: list[Attempt] = []
        for alias in aliases:
            if attempts:
                assert snapshot is not None
                snapshot.restore()
                progress.note(f"{attempts[-1].model} {attempts[-1].why_failed}; workspace restored, trying {alias}")
            ran = _attempt(alias, engine_config, agent_config, prompt, ws, progress, writer)
            verdict = None
            if check_argv is not None and ran.final.stop_reason == "answer":
                verdict = run_check(check_argv, ws.root, allow_unconfined_checks)
            attempts.append(attempt_of(alias, ran.final, verdict, ran.load_s, _cost(alias, ran.final)))
            if writer is not None and len(aliases) > 1:  # alone, a run's trace ends on its final step
                writer.attempt({**attempts[-1].as_dict(), "engine": ran.engine.as_dict()})
            if attempts[-1].succeeded:
                break

    _report(ran, attempts, auto, memory, ws, trace, json_output, progress)


def _auto(model: str | None, for_tag: str | None, prefer: PreferChoice | None, min_success: float) -> AutoPick | None:
    """The recommended variant when --model is auto; --for and --prefer without it are refused."""
    if model != "auto":
        if for_tag is not None or prefer is not None:
            flag = "--for" if for_tag is not None else "--prefer"
            raise ConfigError(f"{flag} chooses the model with --model auto", hint=f"add --model auto, or drop {flag}")
        return None
    from localagent.bench.autopick import pick

    return pick(for_tag, (prefer or PreferChoice.performance).value, min_success)


def _apply(auto: AutoPick, engine: EngineConfig, agent: AgentConfig) -> tuple[EngineConfig, AgentConfig]:
    """The chosen variant's settings: the tool mode, thinking, context, temperature and path constraints it was benched with."""
    v = auto.variant
    engine = dataclasses.replace(
        engine,
        tool_mode=v.tool_mode or engine.tool_mode,  # type: ignore[arg-type]  # a stored ToolMode
        think=engine.think if v.think is None else v.think,
        n_ctx=v.n_ctx,
    )
    paths = agent.path_constraints if v.path_constraints is None else v.path_constraints
    return engine, dataclasses.replace(agent, temperature=v.temperature, path_constraints=paths)


def _cost(alias: str, final: FinalStep) -> float:
    """API dollars at the catalog's price; 0 for local and scripted models."""
    hosted = load_catalog().hosted.get(alias)
    return cost_usd(final.usage, hosted.price if hosted else None)


def _attempt(
    alias: str,
    engine_config: EngineConfig,
    agent_config: AgentConfig,
    prompt: str,
    ws: Workspace,
    progress: Progress,
    writer: _Trace | None,
) -> _Ran:
    """Load `alias`, run the agent to its end, close the model."""
    from localagent.engines import open_model  # engine modules load only when a run starts

    progress.note(f"loading {alias} ...")
    chat_model = open_model(alias, engine_config)
    try:
        engine = chat_model.describe()
        progress.note(f"{alias} ready in {chat_model.load_s:.2f} s ({_settings_note(engine, engine_config.think)})")
        agent = Agent(chat_model, ws, agent_config)
        if writer is not None and writer.header is None:
            writer.start(_trace_header(alias, engine, prompt, agent))
        final = _drive(agent, prompt, progress, writer)
        engine = chat_model.describe()  # as it ended: checkpoint counts, a mode a hosted engine switched to
    finally:
        chat_model.close()
    return _Ran(chat_model.name, final, engine, chat_model.load_s)


def _report(
    ran: _Ran,
    attempts: list[Attempt],
    auto: AutoPick | None,
    memory: PeakMemory,
    ws: Workspace,
    trace: Path | None,
    json_output: bool,
    progress: Progress,
) -> None:
    """The answer and the summary (or the JSON object); exit 1 when the last try failed."""
    final, last = ran.final, attempts[-1]
    if json_output:
        out = result_json(ran, memory, ws, trace)
        out["check"] = last.check.model_dump() if last.check else None
        out["auto"] = auto.as_dict() if auto else None
        out["attempts"] = [a.as_dict() for a in attempts]
        out["cost_usd"] = sum(a.cost_usd for a in attempts)
        print(json.dumps(out, indent=2))
    else:
        if final.stop_reason == "answer":
            print(final.answer)
        for a in attempts if len(attempts) > 1 else ():
            spent = f"{a.wall_s:.2f} s, {a.usage.input_tokens + a.usage.output_tokens} tokens, ${a.cost_usd:.4f}"
            progress.console.print(
                f"[dim]attempt {escape(a.model)}: {escape(a.why_failed or 'succeeded')} ({spent})[/dim]"
            )
        progress.console.print(f"[dim]{escape(summary_line(final, ran.load_s, memory))}[/dim]")
    if final.stop_reason != "answer":
        if not json_output:
            print(f"error: the run stopped without an answer ({final.stop_reason}): {final.error}", file=sys.stderr)
            print(f"hint: {final.hint or STOP_HINTS[final.stop_reason]}", file=sys.stderr)
        raise typer.Exit(1)
    if not last.succeeded:
        if not json_output:
            assert last.check is not None
            print(f"error: the check failed: {last.check.detail}", file=sys.stderr)
            print(
                "hint: the workspace holds the last model's changes; add a --fallback model, or fix what the check runs",
                file=sys.stderr,
            )
        raise typer.Exit(1)


def _settings_note(engine: EngineInfo, think: bool | None) -> str:
    """`native tool calls, thinking on`; says so when --think could not be honoured."""
    parts = [f"{engine.tool_mode or 'scripted'} tool calls"]
    if engine.think is not None:
        parts.append("thinking " + ("on" if engine.think else "off"))
    if think and not engine.think:
        parts.append("--think has no effect in json tool mode: its grammar starts the reply with `{`")
    return ", ".join(parts)


def _trace_header(alias: str, engine: EngineInfo, prompt: str, agent: Agent) -> dict[str, Any]:
    return {
        "model": alias,
        "engine": engine.as_dict(),
        "tool_mode": engine.tool_mode,
        "prompt": prompt,
        "workspace": str(agent.workspace.root),
        "localagent_version": __version__,
        "agent_config": as_dict(agent.config),
        "system_prompt": agent.system_prompt,
        "tools": [t.name for t in agent.tools],
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _drive(agent: Agent, prompt: str, progress: Progress, writer: TraceWriter | None) -> FinalStep:
    """Run the agent to its end, showing and tracing every step."""
    final: FinalStep | None = None
    for step in agent.run(prompt, on_token=progress.token if progress.enabled else None):
        if writer is not None:
            writer.write(step)
        progress.step(step)
        if isinstance(step, FinalStep):
            final = step
    assert final is not None, "Agent.run always ends with a FinalStep"
    return final
