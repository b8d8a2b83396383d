"""The hosted (OpenAI-compatible) engine: against a real llama_cpp.server on loopback, and
against a small scripted HTTP server for what a real provider does (streamed usage with
cached and reasoning tokens, 429s, 5xx, timeouts, refused keys)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from llama_server import free_port, llama_server  # noqa: F401  (a fixture)

from localagent.catalog import HostedModel
from localagent.engines import open_model
from localagent.engines.base import EngineConfig
from localagent.engines.openai_compat import OpenAICompatModel, wire_messages
from localagent.errors import ConfigError, ContextOverflowError, HostedAPIError
from localagent.records import Message, ToolCall, ToolSpec

READ = ToolSpec(
    "read_file",
    "Read a text file.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)


def hosted(base_url: str, **fields: Any) -> HostedModel:
    return HostedModel(**{"alias": "test-model", "provider": "test", "model": "m", "base_url": base_url, **fields})


# --- a scripted OpenAI-compatible server ---


class FakeAPI(ThreadingHTTPServer):
    """Answers each POST with the next scripted (status, headers, body, delay) and records
    every request it received."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[tuple[int, dict[str, str], bytes, float]] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def respond(self, status: int, body: Any, headers: dict[str, str] | None = None, delay: float = 0.0) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        kind = "text/event-stream" if isinstance(body, bytes) else "application/json"
        self.script.append((status, {"Content-Type": kind, **(headers or {})}, data, delay))


class _Handler(BaseHTTPRequestHandler):
    server: FakeAPI

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            status, headers, data, delay = (
                self.server.script.pop(0) if len(self.server.script) > 1 else self.server.script[0]
            )
        time.sleep(delay)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass


@pytest.fixture
def api():
    server = FakeAPI()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": choices,
        "usage": usage,
    }


USAGE = {
    "prompt_tokens": 100,
    "completion_tokens": 12,
    "total_tokens": 112,
    "prompt_tokens_details": {"cached_tokens": 60},
    "completion_tokens_details": {"reasoning_tokens": 4},
}

COMPLETION = {
    "id": "c2",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}
RETRY_SOON = {"retry-after-ms": "10"}  # the SDK's backoff honours it: keeps the tests fast


def test_streamed_text_usage_and_timings(api):
    api.respond(
        200,
        sse(
            chunk({"role": "assistant"}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, finish="stop"),
            chunk(usage=USAGE),
        ),
    )
    model = OpenAICompatModel(hosted(api.url))
    pieces: list[str] = []
    reply = model.chat([Message("user", "hi")], [], max_tokens=20, temperature=0.3, seed=5, on_token=pieces.append)
    assert reply.text == "Hello" and pieces == ["Hel", "lo"]
    assert reply.finish_reason == "stop" and reply.tool_calls == ()
    u = reply.usage
    assert (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens) == (100, 60, 12, 4)
    t = reply.timings
    assert t.prompt_tokens_evaluated == 40
    assert t.ttft_s is not None and 0 < t.ttft_s <= t.total_s
    assert t.decode_tokens_per_s is not None and t.decode_tokens_per_s > 0
    body = api.requests[0]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["model"], body["max_tokens"], body["temperature"], body["seed"]) == ("m", 20, 0.3, 5)
    assert api.requests[0]["auth"] == "Bearer no-key-needed"
    assert model.describe().streaming is True


def test_streamed_tool_calls_are_assembled_and_checked(api):
    api.respond(
        200,
        sse(
            chunk(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "read_file", "arguments": ""},
                        }
                    ],
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"path": '}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"a.txt"}'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "read_file", "arguments": '{"path": '},
                        }
                    ]
                }
            ),
            chunk({}, finish="tool_calls"),
            chunk(usage=USAGE),
        ),
    )
    reply = OpenAICompatModel(hosted(api.url)).chat([Message("user", "read a.txt")], [READ])
    assert reply.finish_reason == "tool_calls"
    good, bad = reply.tool_calls
    assert (good.id, good.name, good.arguments, good.valid) == ("call_a", "read_file", {"path": "a.txt"}, True)
    assert (bad.id, bad.name, bad.valid, bad.raw) == ("call_b", "read_file", False, '{"path": ')
    assert "not valid JSON" in bad.error
    assert api.requests[0]["body"]["tools"][0] == {
        "type": "function",
        "function": {"name": "read_file", "description": READ.description, "parameters": READ.parameters},
    }


def test_429_is_retried_with_backoff(api):
    api.respond(429, {"error": {"message": "slow down"}}, RETRY_SOON)
    api.respond(200, sse(chunk({"content": "ok"}), chunk({}, finish="stop"), chunk(usage=USAGE)))
    reply = OpenAICompatModel(hosted(api.url), EngineConfig(max_retries=3)).chat([Message("user", "hi")], [])
    assert reply.text == "ok"
    assert len(api.requests) == 2


def test_5xx_retries_are_bounded(api):
    api.respond(503, {"error": {"message": "overloaded"}}, RETRY_SOON)
    model = OpenAICompatModel(hosted(api.url), EngineConfig(max_retries=2))
    with pytest.raises(HostedAPIError, match="HTTP 503: overloaded") as info:
        model.chat([Message("user", "hi")], [])
    assert len(api.requests) == 3  # the first try and 2 retries
    assert info.value.hint


def test_429_after_every_retry(api):
    api.respond(429, {"error": {"message": "quota"}}, RETRY_SOON)
    with pytest.raises(HostedAPIError, match="rate limiting .*after 1 retries.*quota"):
        OpenAICompatModel(hosted(api.url), EngineConfig(max_retries=1)).chat([Message("user", "hi")], [])
    assert len(api.requests) == 2


def test_a_refused_key_is_not_retried(api, monkeypatch):
    monkeypatch.setenv("LOCALAGENT_TEST_KEY", "sk-test")
    api.respond(401, {"error": {"message": "invalid api key"}})
    model = OpenAICompatModel(hosted(api.url, api_key_env="LOCALAGENT_TEST_KEY"))
    with pytest.raises(HostedAPIError, match="refused the API key") as info:
        model.chat([Message("user", "hi")], [])
    assert "LOCALAGENT_TEST_KEY" in info.value.hint
    assert [r["auth"] for r in api.requests] == ["Bearer sk-test"]


def test_a_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("LOCALAGENT_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="LOCALAGENT_TEST_KEY") as info:
        OpenAICompatModel(hosted("http://127.0.0.1:9/v1", api_key_env="LOCALAGENT_TEST_KEY"))
    assert "export LOCALAGENT_TEST_KEY" in info.value.hint


def test_context_length_exceeded_is_a_context_overflow(api):
    api.respond(
        400,
        {"error": {"message": "This model's maximum context length is 8192 tokens", "code": "context_length_exceeded"}},
    )
    with pytest.raises(ContextOverflowError):
        OpenAICompatModel(hosted(api.url)).chat([Message("user", "hi")], [])
    assert len(api.requests) == 1


def test_timeout(api):
    api.respond(200, COMPLETION, delay=2.0)
    model = OpenAICompatModel(hosted(api.url), EngineConfig(timeout_s=0.3, max_retries=0))
    with pytest.raises(HostedAPIError, match=r"did not answer within 0\.3 s \(with retries off\)"):
        model.chat([Message("user", "hi")], [])


def test_nothing_listening():
    model = OpenAICompatModel(hosted(f"http://127.0.0.1:{free_port()}/v1"), EngineConfig(max_retries=0))
    with pytest.raises(HostedAPIError, match="cannot connect to http://127.0.0.1"):
        model.chat([Message("user", "hi")], [])


def test_openai_reasoning_models_get_their_parameters(api):
    api.respond(200, sse(chunk({"content": "ok"}), chunk({}, finish="stop"), chunk(usage=USAGE)))
    model = OpenAICompatModel(hosted(api.url, provider="openai", model="gpt-5-mini"))
    call = ToolCall("read_file", {"path": "a"}, "call_1")
    model.chat(
        [
            Message("user", "hi"),
            Message("assistant", "", (call,)),
            Message("tool", "text", tool_call_id="call_1", name="read_file"),
        ],
        [READ],
        max_tokens=64,
    )
    body = api.requests[0]["body"]
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body and "temperature" not in body
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a"}'}}
        ],
    }
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "text"}


def test_an_invalid_call_goes_back_as_written():
    bad = ToolCall("read_file", {}, "call_9", error="not valid JSON", raw='{"path": ')
    (message,) = wire_messages([Message("assistant", "", (bad,))], empty_content="")
    assert message["content"] == ""
    assert message["tool_calls"][0]["function"]["arguments"] == '{"path": '


# --- the real llama.cpp server ---


def test_chat_with_llama_cpp_server(llama_server):  # noqa: F811
    model = OpenAICompatModel(hosted(f"{llama_server}/v1"), EngineConfig(max_retries=0))
    pieces: list[str] = []
    reply = model.chat([Message("user", "Say hello.")], [], max_tokens=8, on_token=pieces.append)
    assert reply.text and reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert reply.timings.total_s > 0 and reply.timings.prompt_tokens_evaluated == reply.usage.input_tokens
    assert pieces  # streamed first...
    # ...but llama-cpp-python's server sends no usage in a stream: the engine asks again
    # without streaming, and keeps doing so, so that tokens are always counted
    assert model.describe().streaming is False
    again = model.chat([Message("user", "Say hello.")], [], max_tokens=8)
    assert again.usage.output_tokens > 0 and again.timings.ttft_s is None


def test_tool_round_trip_with_llama_cpp_server(llama_server):  # noqa: F811
    entry = hosted(f"{llama_server}/v1")
    # the server's Jinja chat handler returns structured calls only when a tool is forced
    caller = OpenAICompatModel(entry, tool_choice="read_file", stream=False)
    history = [Message("user", "Read a.txt")]
    first = caller.chat(history, [READ], max_tokens=40)
    (call,) = first.tool_calls
    assert call.valid and call.name == "read_file" and isinstance(call.arguments.get("path"), str)
    assert call.id and first.finish_reason == "tool_calls"
    history += [
        Message("assistant", first.text, first.tool_calls),
        Message("tool", "hello from a.txt", tool_call_id=call.id, name=call.name),
    ]
    second = OpenAICompatModel(entry, stream=False).chat(history, [READ], max_tokens=16)
    assert second.text and second.tool_calls == ()
    assert second.usage.input_tokens > first.usage.input_tokens


def test_open_model_finds_a_hosted_entry_in_the_user_catalog(llama_server, localagent_home):  # noqa: F811
    (localagent_home / "models.toml").write_text(
        f'[hosted.loopback]\nprovider = "llama.cpp"\nmodel = "smollm2"\nbase_url = "{llama_server}/v1"\n',
        encoding="utf-8",
    )
    model = open_model("loopback", EngineConfig(max_retries=0))
    try:
        assert isinstance(model, OpenAICompatModel)
        d = model.describe()
        assert (d.engine, d.model, d.tool_mode) == ("openai-compatible", "smollm2", "native")
        stored = d.as_dict()  # the keys a hosted engine always wrote, in its order, None kept
        assert list(stored) == [
            *("engine", "model", "provider", "base_url", "tool_mode", "n_ctx"),
            *("streaming", "max_retries", "timeout_s", "openai_sdk"),
        ]
        assert stored["provider"] == "llama.cpp" and stored["n_ctx"] is None and stored["max_retries"] == 0
        assert model.chat([Message("user", "Hi")], [], max_tokens=4).usage.input_tokens > 0
    finally:
        model.close()


def test_llama_cpp_server_stopped(bundled_gguf):
    from llama_server import serve

    with serve(bundled_gguf) as url:
        model = OpenAICompatModel(hosted(f"{url}/v1", provider="llama.cpp"), EngineConfig(max_retries=1), stream=False)
        assert model.chat([Message("user", "Hi")], [], max_tokens=2).usage.input_tokens > 0
    with pytest.raises(HostedAPIError, match="cannot connect .*after 1 retries"):
        model.chat([Message("user", "Hi")], [], max_tokens=2)
