"""The hosted engine: any OpenAI-compatible chat endpoint through the official `openai` SDK.

OpenAI, Anthropic and Gemini through their OpenAI-compatible endpoints, and any base URL
(Ollama, LM Studio, vLLM, llama.cpp's server). Tools go as native `tools=` and come back as
`tool_calls`. Replies are streamed so TTFT is measured client side; usage (with cached input
and reasoning tokens) comes from the provider. The SDK retries 429, 5xx and connection errors
with exponential backoff (and honours Retry-After), `config.max_retries` times.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Sequence

import openai

from localagent import settings
from localagent.catalog import HostedModel
from localagent.engines import native_calls, toolcalls
from localagent.engines.base import EngineConfig
from localagent.errors import ConfigError, ContextOverflowError, HostedAPIError
from localagent.records import Message, Reply, ToolSpec, Timings, Usage

# OpenAI's reasoning models take max_completion_tokens and only the default temperature
# The providers whose endpoints follow OpenAI's spec for a tool-only assistant turn (content
# null; Anthropic's rejects an empty text). Other servers get "": llama-cpp-python's rejects null.
_SPEC_PROVIDERS = ("openai", "anthropic", "google")
_REASONING_PREFIXES = ("gpt-5", "o1", "o3", "o4")
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"}


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
    ) -> Reply:
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
        return self._call(lambda: self._whole(request, started))

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "openai-compatible",
            "model": self.entry.model,
            "provider": self.entry.provider,
            "base_url": self.entry.base_url,
            "tool_mode": "native",
            "n_ctx": self.entry.context,
            "streaming": self._stream,
            "max_retries": self.config.max_retries,
            "timeout_s": self.config.timeout_s,
            "openai_sdk": openai.__version__,
        }

    def close(self) -> None:
        self._client.close()

    # --- requests ----------------------------------------------------------------------------

    def _request(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], max_tokens: int, temperature: float, seed: int | None
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

    def _streamed(self, request: dict[str, Any], started: float, on_token: Callable[[str], None] | None) -> Reply | None:
        """The reply from a streamed request, or None when the stream carried no usage."""
        stream = self._client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
        pieces: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage = None
        finish = None
        first_at = None
        with stream:
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices[:1]:
                    delta = choice.delta
                    if delta is not None and (delta.content or delta.tool_calls) and first_at is None:
                        first_at = time.perf_counter()
                    if delta is not None and delta.content:
                        pieces.append(delta.content)
                        if on_token is not None:
                            on_token(delta.content)
                    for part in (delta.tool_calls if delta is not None else None) or []:
                        call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                        call["id"] = part.id or call["id"]
                        if part.function is not None:
                            call["name"] += part.function.name or ""
                            call["arguments"] += part.function.arguments or ""
                    finish = choice.finish_reason or finish
        ended = time.perf_counter()
        if usage is None:
            return None
        return _reply("".join(pieces), [calls[i] for i in sorted(calls)], usage, finish, started, first_at, ended)

    def _whole(self, request: dict[str, Any], started: float) -> Reply:
        response = self._client.chat.completions.create(**request)
        ended = time.perf_counter()
        if not response.choices:
            raise HostedAPIError(f"{self.entry.base_url} returned no choices for {self.entry.model}")
        choice = response.choices[0]
        message = choice.message
        calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in (message.tool_calls or [])
            if getattr(c, "function", None) is not None
        ]
        return _reply(message.content or "", calls, response.usage, choice.finish_reason, started, None, ended)

    def _call(self, send: Callable[[], Any]) -> Any:
        """Run one request; the SDK's errors (after its retries) become HostedAPIError."""
        where = f"{self.entry.base_url} ({self.entry.model})"
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
                hint=f"check the key in {self.entry.api_key_env}" if self.entry.api_key_env else "the endpoint wants a key: set api_key_env in its catalog entry",
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
                                "arguments": c.raw if c.error and c.raw else json.dumps(c.arguments, ensure_ascii=False),
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
    usage: Any,
    finish: str | None,
    started: float,
    first_at: float | None,
    ended: float,
) -> Reply:
    calls = tuple(
        native_calls.call_from_object(
            {"name": c["name"], "arguments": c["arguments"]}, c["id"] or f"call_{i}", c["arguments"]
        )
        for i, c in enumerate(raw_calls, 1)
    )
    u = usage_of(usage)
    visible = u.output_tokens - u.reasoning_tokens  # reasoning happens before the first token
    return Reply(
        text=text,
        tool_calls=calls,
        usage=u,
        timings=Timings(
            total_s=ended - started,
            ttft_s=first_at - started if first_at is not None else None,
            prompt_tokens_evaluated=u.input_tokens - u.cached_input_tokens,
            decode_tokens_per_s=(visible - 1) / (ended - first_at) if first_at is not None and visible > 1 and ended > first_at else None,
        ),
        finish_reason="tool_calls" if calls else _FINISH.get(finish or "stop", "error"),
        raw=text,
    )


def usage_of(usage: Any) -> Usage:
    """The SDK's usage record -> ours (cached input inside input; reasoning inside output)."""
    if usage is None:
        return Usage()
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        cached_input_tokens=(getattr(prompt_details, "cached_tokens", None) or 0),
        output_tokens=usage.completion_tokens or 0,
        reasoning_tokens=(getattr(completion_details, "reasoning_tokens", None) or 0),
    )


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
