"""The hosted engine: any OpenAI-compatible chat endpoint through the official `openai` SDK.

OpenAI, Anthropic and Gemini through their OpenAI-compatible endpoints, and any base URL
(Ollama, LM Studio, vLLM, llama.cpp's server). Tools go as native `tools=` and come back as
`tool_calls`. Replies are streamed so TTFT is measured client side; usage (with cached input
and reasoning tokens) comes from the provider. The SDK retries 429, 5xx and connection errors
with exponential backoff (and honours Retry-After), `config.max_retries` times.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import openai

from localagent import settings
from localagent.catalog import HostedModel
from localagent.engines import native_calls, toolcalls
from localagent.engines.base import EngineConfig, EngineInfo
from localagent.errors import ConfigError, ContextOverflowError, HostedAPIError
from localagent.records import ArgumentChoice, FinishReason, Message, Reply, Timings, ToolSpec, Usage

# OpenAI's reasoning models take max_completion_tokens and only the default temperature
# The providers whose endpoints follow OpenAI's spec for a tool-only assistant turn (content
# null; Anthropic's rejects an empty text). Other servers get "": llama-cpp-python's rejects null.
_SPEC_PROVIDERS = ("openai", "anthropic", "google")
_REASONING_PREFIXES = ("gpt-5", "o1", "o3", "o4")
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}
# longest wait for the endpoint before on_token("") gives the caller a say (see _Relay)
_TICK_S = 0.5
# most tokens one request's usage may report: no context window comes near it, so more is a
# broken endpoint (as is a negative count), and it would go into results and cost as is
_MAX_USAGE_TOKENS = 10**8


class OpenAICompatModel:
    """A ChatModel backed by an OpenAI-compatible endpoint. Safe to call from several threads
    (the bench runs hosted trials concurrently)."""

    load_s = 0.0

    def __init__(
        self,
        entry: HostedModel,
        config: EngineConfig = EngineConfig(),
        *,
        stream: bool = True,
        tool_choice: str | None = None,
    ):
        """`tool_choice`: None or "auto" lets the model choose; "required" forces a call;
        a tool's name forces that tool (servers whose automatic choice is weak, such as
        llama-cpp-python's, only return structured calls when one is forced)."""
        self.entry = entry
        self.name = entry.alias
        self.config = config
        self.tool_choice = tool_choice
        self._stream = stream
        self._lock = threading.Lock()
        key = None
        if entry.api_key_env:
            key = settings.env(entry.api_key_env)
            if key is None:
                raise ConfigError(
                    f"{entry.alias} needs an API key in the environment variable {entry.api_key_env}",
                    hint=f"export {entry.api_key_env}=... (or pick a local model)",
                )
        self._client = openai.OpenAI(
            base_url=entry.base_url,
            api_key=key or "no-key-needed",  # the SDK insists on one; local servers ignore it
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )

    # --- ChatModel ---------------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        seed: int | None = None,
        on_token: Callable[[str], None] | None = None,
        choices: Sequence[ArgumentChoice] = (),
    ) -> Reply:
        """`on_token` gets each piece of text, and "" every _TICK_S while the endpoint sends
        nothing the SDK passes on (pings, a slow body): it may raise to stop the call.
        `choices` are not sent: a hosted API takes no grammar, and the tools check the paths."""
        request = self._request(messages, tools, max_tokens, temperature, seed)
        started = time.perf_counter()
        if self._stream:
            reply = self._call(lambda: self._streamed(request, started, on_token))
            if reply is not None:
                return reply
            # the endpoint streams without usage (llama-cpp-python's server ignores
            # stream_options): ask again without streaming, and from now on, so that tokens
            # and cost are always counted
            with self._lock:
                self._stream = False
            started = time.perf_counter()
        return self._call(lambda: self._whole(request, started, on_token))

    def describe(self) -> EngineInfo:
        return EngineInfo(
            engine="openai-compatible",
            model=self.entry.model,
            provider=self.entry.provider,
            base_url=self.entry.base_url,
            tool_mode="native",
            n_ctx=self.entry.context,
            streaming=self._stream,
            max_retries=self.config.max_retries,
            timeout_s=self.config.timeout_s,
            openai_sdk=openai.__version__,
        )

    def close(self) -> None:
        self._client.close()

    # --- requests ----------------------------------------------------------------------------

    def _request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        max_tokens: int,
        temperature: float,
        seed: int | None,
    ) -> dict[str, Any]:
        reasoning = self.entry.provider == "openai" and self.entry.model.startswith(_REASONING_PREFIXES)
        empty = None if self.entry.provider in _SPEC_PROVIDERS else ""
        request: dict[str, Any] = {"model": self.entry.model, "messages": wire_messages(messages, empty)}
        request["max_completion_tokens" if reasoning else "max_tokens"] = max_tokens
        if not reasoning:
            request["temperature"] = temperature
        if seed is not None:
            request["seed"] = seed
        if tools:
            request["tools"] = toolcalls.openai_tools(tools)
            if self.tool_choice in ("auto", "required", "none"):
                request["tool_choice"] = self.tool_choice
            elif self.tool_choice:
                request["tool_choice"] = {"type": "function", "function": {"name": self.tool_choice}}
        return request

    @property
    def _where(self) -> str:
        return f"{self.entry.base_url} ({self.entry.model})"

    def _streamed(
        self, request: dict[str, Any], started: float, on_token: Callable[[str], None] | None
    ) -> Reply | None:
        """The reply from a streamed request, or None when the stream carried no usage."""

        def chunks(hold: Callable[[Any], Any]) -> Iterator[Any]:
            stream = hold(
                self._client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
            )
            try:
                yield from stream
            except (ValueError, RecursionError) as exc:  # an event's data is not JSON (or not Python's)
                raise HostedAPIError(f"{self._where} sent a stream event that is not JSON: {exc}") from exc

        pieces: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage = None
        finish = None
        first_at = None
        with _Relay(chunks, on_token) as relay:
            for chunk in relay:
                try:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in (chunk.choices or [])[:1]:
                        delta = choice.delta
                        if delta is not None and (delta.content or delta.tool_calls) and first_at is None:
                            first_at = time.perf_counter()
                        if delta is not None and delta.content:
                            pieces.append(_text(delta.content))
                            if on_token is not None:
                                on_token(pieces[-1])
                        for part in (delta.tool_calls if delta is not None else None) or []:
                            # a garbled index joins the pieces of a call that cannot be read
                            call = calls.setdefault(
                                part.index if isinstance(part.index, int) else -1,
                                {"id": "", "name": "", "arguments": ""},
                            )
                            call["id"] = _text(part.id) or call["id"]
                            if part.function is not None:
                                call["name"] += _text(part.function.name)
                                call["arguments"] += _text(part.function.arguments)
                        finish = choice.finish_reason or finish
                except (AttributeError, TypeError) as exc:
                    raise self._not_chat_completion(
                        f"sent a stream chunk that is not a chat-completion chunk ({exc})", repr(chunk)
                    ) from exc
        ended = time.perf_counter()
        if usage is None:
            return None
        raw_calls = [calls[i] for i in sorted(calls)]
        return _reply("".join(pieces), raw_calls, self._usage(usage), finish, started, first_at, ended)

    def _whole(self, request: dict[str, Any], started: float, on_token: Callable[[str], None] | None) -> Reply:
        def body(hold: Callable[[Any], Any]) -> Iterator[Any]:
            # a streaming *response* (not an SSE stream) only so that _Relay can close it
            with self._client.chat.completions.with_streaming_response.create(**request) as response:
                hold(response).read()
                yield response

        with _Relay(body, on_token) as relay:
            response = next(iter(relay))
        ended = time.perf_counter()
        http = response.http_response
        sample = f"content-type {http.headers.get('content-type') or '(none)'}, body {http.content[:120]!r}"
        try:
            completion = response.parse()
        except (ValueError, RecursionError):  # the body is not JSON (or not Python's)
            completion = None
        if not isinstance(getattr(completion, "choices", None), list):  # the SDK returns a non-JSON body as text
            raise self._not_chat_completion(
                f"answered HTTP {http.status_code} with a body that is not a chat completion", sample
            )
        if not completion.choices:
            raise HostedAPIError(f"{self.entry.base_url} returned no choices for {self.entry.model}")
        try:
            choice = completion.choices[0]
            message = choice.message
            calls = [
                {"id": _text(c.id), "name": _text(c.function.name), "arguments": _text(c.function.arguments)}
                for c in (message.tool_calls or [])
                if getattr(c, "function", None) is not None
            ]
            text, finish = _text(message.content), choice.finish_reason
        except (AttributeError, TypeError) as exc:
            raise self._not_chat_completion(f"sent a chat completion of the wrong shape ({exc})", sample) from exc
        return _reply(text, calls, self._usage(completion.usage), finish, started, None, ended)

    def _not_chat_completion(self, what: str, sample: str) -> HostedAPIError:
        return HostedAPIError(
            f"{self._where} {what}: {sample[:300]}",
            hint="something else answers at that address (a proxy, a captive portal, another server): "
            "check base_url in the catalog (OpenAI-compatible servers usually end in /v1)",
        )

    def _usage(self, usage: Any) -> Usage:
        try:
            return usage_of(usage)
        except ValueError as exc:
            raise HostedAPIError(
                f"{self._where} reported token usage that cannot be right: {exc}",
                hint="the endpoint's usage report is broken; tokens and cost would be wrong, so the reply is refused",
            ) from None

    def _call(self, send: Callable[[], Any]) -> Any:
        """Run one request; the SDK's errors (after its retries) become HostedAPIError."""
        where = self._where
        retried = f"after {self.config.max_retries} retries" if self.config.max_retries else "with retries off"
        try:
            return send()
        except openai.APITimeoutError as exc:
            raise HostedAPIError(
                f"{where} did not answer within {self.config.timeout_s:g} s ({retried})",
                hint="the endpoint is slow or down; raise the timeout or try again later",
            ) from exc
        except openai.APIConnectionError as exc:
            raise HostedAPIError(
                f"cannot connect to {where}: {_cause(exc)} ({retried})",
                hint="check base_url in the catalog and that the server is running",
            ) from exc
        except openai.AuthenticationError as exc:
            raise HostedAPIError(
                f"{where} refused the API key (HTTP 401): {_detail(exc)}",
                hint=f"check the key in {self.entry.api_key_env}"
                if self.entry.api_key_env
                else "the endpoint wants a key: set api_key_env in its catalog entry",
            ) from exc
        except openai.RateLimitError as exc:
            raise HostedAPIError(
                f"{where} is rate limiting this key (HTTP 429, {retried}): {_detail(exc)}",
                hint="wait and try again, or run fewer trials at once (--jobs)",
            ) from exc
        except openai.APIStatusError as exc:
            if _is_context_overflow(exc):
                raise ContextOverflowError(
                    f"the conversation no longer fits {self.entry.model}'s context window: {_detail(exc)}"
                ) from exc
            raise HostedAPIError(
                f"{where} answered HTTP {exc.status_code}: {_detail(exc)}",
                hint="a 5xx was retried; a 4xx usually means the request or the model name is wrong",
            ) from exc
        except openai.APIError as exc:  # e.g. an error event in the middle of a stream
            raise HostedAPIError(f"{where} failed: {_detail(exc)}") from exc


def wire_messages(messages: Sequence[Message], empty_content: str | None = None) -> list[dict[str, Any]]:
    """Messages in the OpenAI chat format (tool-call arguments as JSON text); an assistant turn
    with only tool calls gets `empty_content` as its content."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or empty_content,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {
                                "name": c.name or "invalid_call",
                                # an invalid call goes back as the model wrote it
                                "arguments": c.raw
                                if c.error and c.raw
                                else json.dumps(c.arguments, ensure_ascii=False),
                            },
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _reply(
    text: str,
    raw_calls: list[dict[str, str]],
    u: Usage,
    finish: Any,
    started: float,
    first_at: float | None,
    ended: float,
) -> Reply:
    # as many calls as a local model's reply may hold; the first one past the cap tells the
    # model that the rest were not run
    calls = native_calls.capped(
        native_calls.call_from_object(
            {"name": c["name"], "arguments": c["arguments"]}, c["id"] or f"call_{i}", c["arguments"]
        )
        for i, c in enumerate(raw_calls, 1)
    )
    finish = finish if isinstance(finish, str) else None
    visible = u.output_tokens - u.reasoning_tokens  # reasoning happens before the first token
    return Reply(
        text=text,
        tool_calls=calls,
        usage=u,
        timings=Timings(
            total_s=ended - started,
            ttft_s=first_at - started if first_at is not None else None,
            prompt_tokens_evaluated=u.input_tokens - u.cached_input_tokens,
            decode_tokens_per_s=(visible - 1) / (ended - first_at)
            if first_at is not None and visible > 1 and ended > first_at
            else None,
        ),
        finish_reason="tool_calls" if calls else _FINISH.get(finish or "stop", "error"),
        raw=text,
    )


def usage_of(usage: Any) -> Usage:
    """The SDK's usage record -> ours (cached input inside input; reasoning inside output).
    ValueError for a count that cannot be right: not a whole number, negative, or beyond
    _MAX_USAGE_TOKENS (the SDK does not validate them). A part larger than its whole is let
    be: some providers count cached or reasoning tokens outside the total."""
    if usage is None:
        return Usage()
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return Usage(
        input_tokens=_tokens("prompt_tokens", getattr(usage, "prompt_tokens", None)),
        cached_input_tokens=_tokens("cached_tokens", getattr(prompt_details, "cached_tokens", None)),
        output_tokens=_tokens("completion_tokens", getattr(usage, "completion_tokens", None)),
        reasoning_tokens=_tokens("reasoning_tokens", getattr(completion_details, "reasoning_tokens", None)),
    )


def _tokens(field: str, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_USAGE_TOKENS:
        raise ValueError(f"{field} = {value!r:.40}")
    return value


def _text(value: Any) -> str:
    """A text field of a reply as text. Servers that break the spec send an object where a
    string belongs (function.arguments as the object itself): its JSON is what was meant, so
    it is read like the string would be (an object of arguments is a valid call), never a
    TypeError."""
    if value is None or isinstance(value, str):
        return value or ""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return f"<unreadable {type(value).__name__}>"


class _Relay:
    """A blocking request on a worker thread, its items handed to the caller's thread.

    The SDK skips SSE comments (`: ping`) and its read timeout starts again at every byte, so
    an endpoint that keeps a stream open with pings, or trickles a body, holds the caller as
    long as it likes, with no token for the agent's deadline check to run on. Here the caller
    waits at most _TICK_S at a time and calls on_token("") in between: a deadline or a
    cancellation raised from on_token stops the request on time. The response is then closed,
    which ends the worker at its next read (at the latest when the SDK's timeout runs out)."""

    def __init__(
        self, produce: Callable[[Callable[[Any], Any]], Iterator[Any]], on_token: Callable[[str], None] | None
    ):
        """`produce(hold)` runs on the worker and yields the items; it passes what must be
        closed to stop the request (the response) through `hold`."""
        self._on_token = on_token
        self._items: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()  # (more?, item or error)
        self._stopped = threading.Event()
        self._held: list[Any] = []
        threading.Thread(target=self._work, args=(produce,), name="localagent-hosted", daemon=True).start()

    def _hold(self, resource: Any) -> Any:
        self._held.append(resource)
        if self._stopped.is_set():  # the caller gave up before the response came
            resource.close()
        return resource

    def _work(self, produce: Callable[[Callable[[Any], Any]], Iterator[Any]]) -> None:
        try:
            for item in produce(self._hold):
                if self._stopped.is_set():
                    return
                self._items.put((True, item))
            self._items.put((False, None))
        except BaseException as exc:  # raised again on the caller's thread
            self._items.put((False, exc))

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                more, item = self._items.get(timeout=_TICK_S)
            except queue.Empty:
                if self._on_token is not None:
                    self._on_token("")
                continue
            if not more:
                if item is not None:
                    raise item
                return
            yield item

    def __enter__(self) -> _Relay:
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        for resource in list(self._held):
            try:
                resource.close()
            except Exception:  # closing under the worker's read may fail; the worker ends either way
                pass


def _detail(exc: openai.APIError) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(exc.message if hasattr(exc, "message") else exc)


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return str(cause) if cause is not None and str(cause) else str(exc)


def _is_context_overflow(exc: openai.APIStatusError) -> bool:
    code = getattr(exc, "code", None)
    text = _detail(exc).lower()
    return code == "context_length_exceeded" or "context length" in text or "context window" in text
