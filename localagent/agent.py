"""The loop: model -> tool calls -> results -> model, until an answer or a limit.

`Agent.run` is a generator of step records (ModelStep, ToolStep, then one FinalStep); it
never prints. The conversation only ever grows (messages are appended, never rewritten) and
the system prompt never changes, so llama.cpp re-evaluates only the new tokens each step.
The model's mistakes (invalid calls, failing tools) go back to it as tool results; engine
failures end the run with a stop reason instead of an exception.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localagent import pathchoices
from localagent.engines.base import ChatModel
from localagent.errors import ContextOverflowError, EngineError, HostedAPIError, ToolError
from localagent.records import (
    FinalStep,
    Message,
    ModelStep,
    Reply,
    Step,
    StopReason,
    ToolCall,
    ToolStep,
    Usage,
    safe_data,
    safe_text,
)
from localagent.tools import TOOLS, InvalidToolCall, Tool, Workspace, run_tool

SYSTEM_PROMPT = (
    "You are an assistant that works on the files in a workspace folder using tools. "
    "Paths are relative to the workspace root. Use the tools to look at files before you "
    "answer questions about them, and to create or change files when asked. Call one tool "
    "at a time and read its result. When the task is done, reply with the answer and no "
    "tool call."
)

# the same failing call this many times in one run means the model is stuck
REPEAT_LIMIT = 3

# Small models re-issue a call that already succeeded (SmolLM2 reads the same line of README.md
# until max_steps). The result still goes back, with this note, so the model can move on.
REPEAT_NOTE = (
    "\n\n(note: you made this exact call at step {step}; the result is the same. Answer now, or call a different tool.)"
)

# Thread.join(timeout) raises OverflowError past threading.TIMEOUT_MAX (about 292 years), so
# `--time-limit 1e10` or `inf` killed a run at its first tool call: a tool is waited for in
# slices of at most this long, until it returns or the deadline passes
MAX_WAIT_SLICE_S = 3600.0


@dataclass(frozen=True)
class AgentConfig:
    max_steps: int = 20  # model calls
    time_limit_s: float = 600.0  # checked between calls and at every generated token
    max_tokens: int = 1024  # per model call
    temperature: float = 0.0
    seed: int | None = None
    system_prompt: str | None = None  # None: SYSTEM_PROMPT
    # hold path arguments to the workspace's paths in engines that decode under a grammar
    # (pathchoices.py; `--no-path-constraints` turns it off)
    path_constraints: bool = True


@dataclass
class _Totals:
    usage: Usage = Usage()
    model_s: float = 0.0
    tool_s: float = 0.0
    tool_calls: int = 0
    invalid_tool_calls: int = 0
    prompt_tokens_evaluated: int = 0


class _TimeUp(Exception):
    """Raised from the token callback: the run's time limit passed during a model call."""


def _within(deadline: float, fn: Callable[[], Any]) -> Any:
    """fn() on a worker thread, waited for until the deadline; _TimeUp if it is still running.

    A tool can block where no check of ours reaches: a file on a hung network mount, a custom
    tool waiting on a socket. Python cannot kill a thread, so the stuck call is abandoned (a
    daemon thread, never joined) and the run stops with `timeout`: the run, and an MCP
    server's lock on its model, are given back on time. A write the abandoned call finishes
    later can still land in the workspace; the trace says the call was cut off."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread, raised there
            box["error"] = exc

    worker = threading.Thread(target=work, name="localagent-tool", daemon=True)
    worker.start()
    while worker.is_alive():
        left = deadline - time.perf_counter()
        if left <= 0:
            raise _TimeUp
        worker.join(min(left, MAX_WAIT_SLICE_S))
    if "error" in box:
        raise box["error"]
    return box["value"]


def _call_key(call: ToolCall) -> str:
    return json.dumps([call.name, call.arguments, call.raw if call.error else ""], sort_keys=True, default=str)


def _stop_reason(exc: EngineError) -> StopReason:
    if isinstance(exc, ContextOverflowError):
        return "context_overflow"
    if isinstance(exc, HostedAPIError):
        return "api_error"
    return "engine_error"


class Agent:
    def __init__(
        self,
        model: ChatModel,
        workspace: Path | Workspace,
        config: AgentConfig = AgentConfig(),
        tools: Sequence[Tool] = TOOLS,
    ):
        self.model = model
        self.workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        self.config = config
        self.system_prompt = config.system_prompt or SYSTEM_PROMPT
        self.tools = tuple(tools)
        self.tool_specs = tuple(t.spec() for t in self.tools)
        self.path_kinds = (
            tuple((t.name, argument, kind) for t in self.tools for argument, kind in t.paths)
            if config.path_constraints
            else ()
        )

    def run(self, prompt: str, on_token: Callable[[str], None] | None = None) -> Iterator[Step]:
        started = time.perf_counter()
        deadline = started + self.config.time_limit_s
        totals = _Totals()

        # a model that writes 1,000 tokens of a grammar-constrained string can spend minutes in
        # one call: the limit is checked at every token, and the engine stops where it is
        def guarded(piece: str) -> None:
            if time.perf_counter() >= deadline:
                raise _TimeUp
            if on_token is not None:
                on_token(piece)

        failures: dict[str, int] = {}
        succeeded: dict[str, int] = {}  # call key -> step of its first success
        messages: list[Message] = []

        def add(message: Message) -> None:
            # every message reaches the engine's tokenizer or an HTTP request, both UTF-8: a lone
            # surrogate (a prompt byte that is not UTF-8, a model's "\ud800" escape in a call it
            # made) is escaped here, once, instead of killing the next model call
            messages.append(safe_data(message))

        add(Message(role="system", content=self.system_prompt))
        add(Message(role="user", content=prompt))

        def final(
            step: int, reason: StopReason, answer: str = "", error: str | None = None, hint: str | None = None
        ) -> FinalStep:
            return FinalStep(
                step=step,
                answer=answer,
                stop_reason=reason,
                usage=totals.usage,
                wall_s=time.perf_counter() - started,
                model_s=totals.model_s,
                tool_s=totals.tool_s,
                tool_calls=totals.tool_calls,
                invalid_tool_calls=totals.invalid_tool_calls,
                prompt_tokens_evaluated=totals.prompt_tokens_evaluated,
                error=error,
                hint=hint,
            )

        for step in range(1, self.config.max_steps + 1):
            timeout = f"time limit of {self.config.time_limit_s:g} s reached"
            if time.perf_counter() >= deadline:
                yield final(step - 1, "timeout", error=timeout)
                return
            call_started = time.perf_counter()
            try:
                listing = self._listing(deadline)
                choices = pathchoices.choices(self.path_kinds, listing) if listing is not None else ()
                reply = self.model.chat(
                    messages,
                    self.tool_specs,
                    max_tokens=self.config.max_tokens,
                    temperature=self.config.temperature,
                    seed=self.config.seed,
                    on_token=guarded,
                    choices=choices,
                )
            except _TimeUp:
                totals.model_s += time.perf_counter() - call_started
                yield final(step, "timeout", error=timeout + " during a model call")
                return
            except EngineError as exc:
                totals.model_s += time.perf_counter() - call_started
                yield final(step, _stop_reason(exc), error=str(exc), hint=exc.hint)
                return
            totals.model_s += time.perf_counter() - call_started
            totals.usage += reply.usage
            totals.prompt_tokens_evaluated += reply.timings.prompt_tokens_evaluated
            reply = _with_call_ids(reply, step)
            # the trace says what the grammar held paths to, or why it held none
            paths = listing.summary() if listing is not None and (reply.choices_held or not listing.complete) else ""
            yield ModelStep(step=step, reply=reply, elapsed_s=time.perf_counter() - started, paths=paths)

            if reply.finish_reason == "unfinished_thinking":
                yield final(
                    step,
                    "unfinished_thinking",
                    error=f"the model's thinking did not close within {reply.usage.output_tokens} tokens",
                    hint="raise --max-tokens, or turn thinking off (--no-think)",
                )
                return
            if reply.finish_reason == "repetition" and not reply.tool_calls:
                # the engine cut a reply that kept repeating itself: at temperature 0 the same
                # prompt loops again, so the run ends here, its text kept as the answer
                yield final(
                    step,
                    "repetition",
                    answer=safe_text(reply.text.strip()),
                    error=f"the model's reply kept repeating itself; stopped after {reply.usage.output_tokens} tokens",
                    hint="try a larger model, or a temperature above 0",
                )
                return
            if not reply.tool_calls:
                # the answer is printed, stored and traced as text: a stray "\ud800" is shown escaped
                yield final(step, "answer", answer=safe_text(reply.text.strip()))
                return
            add(Message(role="assistant", content=reply.text, tool_calls=reply.tool_calls, reasoning=reply.reasoning))
            for call in reply.tool_calls:
                tool_step = self._run_call(step, call, started, deadline)
                key = _call_key(call)
                if tool_step.error is None:
                    if key in succeeded:
                        tool_step = dataclasses.replace(
                            tool_step, result=tool_step.result + REPEAT_NOTE.format(step=succeeded[key])
                        )
                    succeeded.setdefault(key, step)
                totals.tool_calls += 1
                totals.tool_s += tool_step.duration_s
                totals.invalid_tool_calls += tool_step.invalid
                add(Message(role="tool", content=tool_step.result, tool_call_id=call.id, name=call.name))
                yield tool_step
                if tool_step.cut_off:
                    yield final(step, "timeout", error=timeout + f" during a call of {call.name}")
                    return
                if tool_step.error is None:
                    continue
                failures[key] = failures.get(key, 0) + 1
                if failures[key] >= REPEAT_LIMIT:
                    reason: StopReason = "repeated_invalid_call" if tool_step.invalid else "repeated_failing_call"
                    yield final(step, reason, error=f"the same call failed {REPEAT_LIMIT} times: {tool_step.error}")
                    return
        yield final(self.config.max_steps, "max_steps", error=f"no answer after {self.config.max_steps} steps")

    def _listing(self, deadline: float) -> pathchoices.Listing | None:
        """The workspace's paths for this step's grammar, or None when no tool takes a path
        (or the constraints are off). Listed on a worker thread: a hung mount ends the run
        on time, as a tool would."""
        if not self.path_kinds:
            return None
        listing: pathchoices.Listing = _within(deadline, lambda: pathchoices.list_paths(self.workspace))
        return listing

    def _run_call(self, step: int, call: ToolCall, started: float, deadline: float) -> ToolStep:
        t0 = time.perf_counter()
        error: str | None = None
        invalid = cut_off = False
        try:
            result = _within(deadline, lambda: run_tool(self.workspace, call, self.tools))
        except _TimeUp:
            error, cut_off = (
                f"cut off: the run's time limit of {self.config.time_limit_s:g} s passed during this call",
                True,
            )
        except InvalidToolCall as exc:
            error, invalid = safe_text(str(exc)), True
        except ToolError as exc:
            error = safe_text(str(exc))
        if error is not None:
            result = f"error: {error}"
        else:
            # a file name that is not UTF-8 (listed, searched, suggested) is shown escaped:
            # b"caf\xe9.txt" reads `caf\xe9.txt`
            result = safe_text(result)
        now = time.perf_counter()
        return ToolStep(
            step=step,
            call=call,
            result=result,
            duration_s=now - t0,
            error=error,
            invalid=invalid,
            cut_off=cut_off,
            elapsed_s=now - started,
        )


def _with_call_ids(reply: Reply, step: int) -> Reply:
    """Give every call an id (hosted APIs pair tool results with calls by id); ids the engine
    set are kept."""
    if all(c.id for c in reply.tool_calls):
        return reply
    calls = tuple(
        c if c.id else dataclasses.replace(c, id=f"call_{step}_{i}") for i, c in enumerate(reply.tool_calls, 1)
    )
    return dataclasses.replace(reply, tool_calls=calls)
