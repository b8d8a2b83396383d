"""The hosted engine against an endpoint that misbehaves: keep-alive pings for ever, an HTML
page with HTTP 200, arguments as an object, negative usage, thousands of tool calls, numbers
Python cannot hold. Each is a HostedAPIError naming the endpoint, an invalid call the model
sees, or a run stopped at its time limit; never a traceback or a hang. Real HTTP servers on
loopback (the scripted one of test_engine_hosted, and one that only pings)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_cli_run import localagent
from test_engine_hosted import READ, USAGE, api, chunk, hosted, sse  # noqa: F401  (api: a fixture)

from localagent.agent import Agent, AgentConfig
from localagent.engines.base import EngineConfig
from localagent.engines.openai_compat import OpenAICompatModel
from localagent.errors import HostedAPIError
from localagent.records import FinalStep, Message

BIG = "1" * 5000  # past sys.get_int_max_str_digits() (4300)


def ask(url: str, **engine: Any) -> Any:
    return OpenAICompatModel(hosted(url), EngineConfig(max_retries=0), **engine).chat([Message("user", "hi")], [READ])


# --- F23: an endpoint that keeps the request open with nothing in it ---


class PingingAPI(ThreadingHTTPServer):
    """Answers every POST with HTTP 200 and then only keep-alives, as a stuck provider or
    proxy can: SSE comments (`: ping`) for a streamed request, spaces of a JSON body that never
    ends for a plain one. Each resets the client's read timeout. Notes when the client hangs up."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Pinger)
        self.stop = threading.Event()
        self.hung_up = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Pinger(BaseHTTPRequestHandler):
    server: PingingAPI

    def do_POST(self) -> None:
        streamed = json.loads(self.rfile.read(int(self.headers["Content-Length"]))).get("stream", False)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if streamed else "application/json")
        self.end_headers()
        while not self.server.stop.is_set():
            try:
                self.wfile.write(b": ping\n\n" if streamed else b" ")
                self.wfile.flush()
            except OSError:
                self.server.hung_up.set()
                return
            time.sleep(0.1)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def pinger() -> Iterator[PingingAPI]:
    server = PingingAPI()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("stream", [True, False], ids=["sse-pings", "trickled-body"])
def test_keep_alives_for_ever_stop_at_the_time_limit(pinger: PingingAPI, tmp_path: Path, stream: bool) -> None:
    model = OpenAICompatModel(hosted(pinger.url), EngineConfig(max_retries=0), stream=stream)
    steps: list[Any] = []
    # on a thread of its own, so that a run that never ends fails this test, not the suite
    run = threading.Thread(
        target=lambda: steps.extend(Agent(model, tmp_path, AgentConfig(time_limit_s=1.5)).run("hi")), daemon=True
    )
    run.start()
    run.join(4)
    assert not run.is_alive(), "the run went on past its time limit"
    final = steps[-1]
    assert isinstance(final, FinalStep) and final.stop_reason == "timeout"
    assert "during a model call" in (final.error or "")
    # the request was closed, not left reading pings on a thread of its own
    assert pinger.hung_up.wait(5)


def test_run_time_limit_holds_against_pings(pinger: PingingAPI, localagent_home: Path, tmp_path: Path) -> None:
    (localagent_home / "models.toml").write_text(
        f'[hosted.pinger]\nprovider = "vllm"\nmodel = "m"\nbase_url = "{pinger.url}"\n', encoding="utf-8"
    )
    started = time.monotonic()
    done = localagent("run", "hi", "--model", "pinger", "--time-limit", "2", "--workspace", str(tmp_path), timeout=60)
    assert done.returncode == 1, done.stderr
    assert "(timeout): time limit of 2 s reached during a model call" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30  # the CLI's start-up included; it hung for ever before


def test_a_reply_slower_than_a_tick_still_comes_through(api) -> None:  # noqa: F811
    # the relay to a worker thread must hand over a reply that is slower than one tick
    api.respond(200, sse(chunk({"content": "late"}), chunk({}, finish="stop"), chunk(usage=USAGE)), delay=1.2)
    pieces: list[str] = []
    reply = OpenAICompatModel(hosted(api.url)).chat([Message("user", "hi")], [], on_token=pieces.append)
    assert reply.text == "late" and "late" in pieces
    assert set(pieces) <= {"", "late"} and "" in pieces  # ticks while it waited


# --- F24: something that is not a chat completion, with HTTP 200 ---


@pytest.mark.parametrize("content_type", ["text/html", "application/json"])
def test_an_html_page_is_an_api_error_naming_what_came_back(api, content_type: str) -> None:  # noqa: F811
    api.respond(200, b"<html><body>502 Bad Gateway</body></html>", headers={"Content-Type": content_type})
    with pytest.raises(HostedAPIError) as info:
        ask(api.url)
    message = info.value.message
    assert api.url in message and "not a chat completion" in message
    assert f"content-type {content_type}" in message and "<html><body>502 Bad Gateway" in message
    assert "base_url" in (info.value.hint or "")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"data: <html>502</html>\n\n", id="event-not-json"),
        pytest.param(
            b'data: {"id": "c", "choices": [], "usage": {"prompt_tokens": %s}}\n\n' % BIG.encode(),
            id="5000-digit-number",
        ),
        pytest.param(b'data: {"id": "c", "choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n\n", id="deep"),
    ],
)
def test_a_stream_event_python_cannot_read_is_an_api_error(api, body: bytes) -> None:  # noqa: F811
    api.respond(200, body)
    with pytest.raises(HostedAPIError, match="sent a stream event that is not JSON"):
        ask(api.url)


@pytest.mark.parametrize(
    ("choices", "what"),
    [
        pytest.param("nope", "answered HTTP 200 with a body that is not a chat completion", id="choices-a-string"),
        pytest.param([{"message": "nope"}], "sent a chat completion of the wrong shape", id="message-a-string"),
    ],
)
def test_a_completion_of_the_wrong_shape_is_an_api_error(api, choices: Any, what: str) -> None:  # noqa: F811
    api.respond(200, {"id": "c", "object": "chat.completion", "choices": choices, "usage": USAGE})
    with pytest.raises(HostedAPIError, match=what):
        ask(api.url, stream=False)


# --- F25: function.arguments as an object instead of JSON text ---


@pytest.mark.parametrize("stream", [True, False])
def test_arguments_as_an_object_are_what_the_model_meant(api, stream: bool) -> None:  # noqa: F811
    call = {
        "index": 0,
        "id": "call_a",
        "type": "function",
        "function": {"name": "read_file", "arguments": {"path": "a.txt"}},
    }
    if stream:
        api.respond(
            200,
            sse(chunk({"role": "assistant", "tool_calls": [call]}), chunk({}, finish="tool_calls"), chunk(usage=USAGE)),
        )
    else:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{k: v for k, v in call.items() if k != "index"}],
        }
        api.respond(
            200,
            {
                "id": "c",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": USAGE,
            },
        )
    (got,) = ask(api.url, stream=stream).tool_calls
    assert (got.id, got.name, got.arguments, got.valid) == ("call_a", "read_file", {"path": "a.txt"}, True)


@pytest.mark.parametrize(
    ("function", "why"),
    [
        ({"name": "read_file", "arguments": ["a.txt"]}, "the arguments must be a JSON object"),
        ({"name": None, "arguments": {"path": "a.txt"}}, "the tool call has no 'name'"),
        ({"name": {"a": 1}, "arguments": "{}"}, None),  # a name that is no tool's: the loop says so
        (
            {"name": "read_file", "arguments": '{"path": "a", "start_line": %s}' % BIG},
            "a number has more than 4300 digits",
        ),
    ],
)
def test_a_garbled_streamed_call_is_an_invalid_call(api, function: dict[str, Any], why: str | None) -> None:  # noqa: F811
    call = {"index": 0, "id": "call_a", "type": "function", "function": function}
    api.respond(
        200, sse(chunk({"role": "assistant", "tool_calls": [call]}), chunk({}, finish="tool_calls"), chunk(usage=USAGE))
    )
    (got,) = ask(api.url).tool_calls
    assert got.id == "call_a"
    if why is None:
        assert got.name == '{"a": 1}'
    else:
        assert not got.valid and why in got.error


def test_a_garbled_call_index_joins_a_call_that_cannot_be_read(api) -> None:  # noqa: F811
    parts = [
        {"index": None, "id": "c1", "function": {"name": "read_file", "arguments": '{"path": '}},
        {"index": 0, "id": "c2", "function": {"name": "read_file", "arguments": "{}"}},
    ]
    api.respond(
        200, sse(chunk({"role": "assistant", "tool_calls": parts}), chunk({}, finish="tool_calls"), chunk(usage=USAGE))
    )
    calls = ask(api.url).tool_calls
    assert [c.id for c in calls] == ["c1", "c2"] and not calls[0].valid and calls[1].valid


# --- F26: usage that cannot be right ---


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        ({"prompt_tokens": -1_000_000, "completion_tokens": 5}, "prompt_tokens = -1000000"),
        ({"prompt_tokens": 10, "completion_tokens": -5}, "completion_tokens = -5"),
        ({"prompt_tokens": 10**12, "completion_tokens": 5}, "prompt_tokens = 1000000000000"),
        ({"prompt_tokens": "12", "completion_tokens": 5}, "prompt_tokens = '12'"),
        ({"prompt_tokens": 12.5, "completion_tokens": 5}, "prompt_tokens = 12.5"),
        (
            {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": -3}},
            "cached_tokens = -3",
        ),
        (
            {"prompt_tokens": 10, "completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": -1}},
            "reasoning_tokens = -1",
        ),
    ],
)
def test_usage_that_cannot_be_right_is_refused(api, usage: dict[str, Any], field: str) -> None:  # noqa: F811
    api.respond(200, sse(chunk({"content": "ok"}), chunk({}, finish="stop"), chunk(usage=usage)))
    with pytest.raises(HostedAPIError, match="reported token usage that cannot be right") as info:
        ask(api.url)
    assert field in info.value.message and api.url in info.value.message


def test_whole_float_usage_is_read(api) -> None:  # noqa: F811
    api.respond(
        200,
        sse(
            chunk({"content": "ok"}),
            chunk({}, finish="stop"),
            chunk(usage={"prompt_tokens": 12.0, "completion_tokens": 3}),
        ),
    )
    u = ask(api.url).usage
    assert (u.input_tokens, u.output_tokens) == (12, 3)


# --- F27: thousands of tool calls in one reply ---


def test_a_reply_holds_at_most_64_calls(api) -> None:  # noqa: F811
    parts = [
        {"index": i, "id": f"c{i}", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a"}'}}
        for i in range(5000)
    ]
    api.respond(
        200, sse(*(chunk({"tool_calls": [p]}) for p in parts), chunk({}, finish="tool_calls"), chunk(usage=USAGE))
    )
    calls = ask(api.url).tool_calls
    assert len(calls) == 65 and all(c.valid for c in calls[:64])
    assert [c.id for c in calls] == [f"c{i}" for i in range(65)]  # the provider's ids, for its tool results
    assert calls[64].error == "more than 64 tool calls in one reply; this one and the rest were not run"
