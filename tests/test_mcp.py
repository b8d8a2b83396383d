"""`localagent mcp`: the real server, spawned as a subprocess by the SDK's stdio client (and
once by hand, to read its raw stdout), with the bundled SmolLM2-135M."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp.server.mcpserver", reason="needs the 'mcp' extra (mcp >= 2)")

from fakehub import FILE, REPO, USER_CATALOG, FakeHub, HubFile, bundled_sha256  # noqa: E402,F401
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

FAST = ["--n-ctx", "2048", "--max-tokens", "48"]
CALL = {"tool_mode": "json", "max_steps": 2}
TOOLS = {"run_agent", "list_models", "pull_model"}


def server_params(root: Path, home: Path, *flags: str, **env: str) -> StdioServerParameters:
    """What an MCP client's config would spawn: this Python's `-m localagent mcp`."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "localagent", "mcp", "--root", str(root), *FAST, *flags],
        env={"LOCALAGENT_HOME": str(home), **env},
        cwd=str(root),
    )


class Client:
    """A ClientSession plus what the client saw besides replies."""

    def __init__(self, session: ClientSession):
        self.session = session
        self.stream_errors: list[Exception] = []  # stdout lines that were not JSON-RPC

    async def call(self, tool: str, **arguments: Any) -> tuple[Any, list[tuple[float, float | None, str | None]]]:
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, total, message))

        result = await self.session.call_tool(tool, arguments, progress_callback=on_progress)
        return result, progress


@asynccontextmanager
async def connect(params: StdioServerParameters, errlog: Path) -> AsyncIterator[Client]:
    with errlog.open("w") as err:
        async with stdio_client(params, errlog=err) as (read, write):
            client: Client

            async def on_message(message: Any) -> None:
                if isinstance(message, Exception):
                    client.stream_errors.append(message)

            async with ClientSession(read, write, message_handler=on_message) as session:
                client = Client(session)
                await session.initialize()
                yield client


def text_of(result: Any) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


def make_root(folder: Path) -> Path:
    """A server root holding proj/notes.txt, beside a folder outside it and a link to it."""
    root = folder / "root"
    (root / "proj").mkdir(parents=True)
    (root / "proj" / "notes.txt").write_text("The code word is PELICAN.\n")
    outside = folder / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)


# the workspaces that lead outside the root, by the name the test shows
OUTSIDE = {
    "parent": "..",
    "sibling": "../outside",
    "absolute": "{outside}",
    "link": "escape",
    "up-and-out": "proj/../..",
}


@dataclass
class Session:
    """What one client saw over one server's life, the calls made in this order: a call it
    gave up on, an unknown model, a run, refused workspaces and prompt, list_models. The
    tests below judge each part apart, so one failure does not hide the others."""

    tools: list[Any]
    loading: list[str | None]  # progress messages of the call given up on
    bad_model: Any
    run: Any
    progress: list[tuple[float, float | None, str | None]]
    refused: dict[str, Any]  # by OUTSIDE's names
    missing: Any
    empty: Any
    listed: Any
    stream_errors: list[Exception]
    log: str  # the server's stderr after it ended


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    """One server with the bundled model, started once: each model load costs seconds."""
    folder = tmp_path_factory.mktemp("mcp")
    root = make_root(folder)
    home = tmp_path_factory.mktemp("home")
    stderr = folder / "stderr.txt"
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with connect(server_params(root, home, "--model", "smollm2-135m"), stderr) as client:
            seen["tools"] = (await client.session.list_tools()).tools
            loading: list[str | None] = []
            async with anyio.create_task_group() as tg:

                async def abandoned() -> None:
                    async def on_progress(value: float, total: float | None, message: str | None) -> None:
                        loading.append(message)
                        tg.cancel_scope.cancel()

                    await client.session.call_tool(
                        "run_agent", {"prompt": "List the files.", **CALL}, progress_callback=on_progress
                    )

                tg.start_soon(abandoned)
            seen["loading"] = loading
            seen["bad_model"], _ = await client.call("run_agent", prompt="hi", model="smollm2-13m", **CALL)
            seen["run"], seen["progress"] = await client.call(
                "run_agent", prompt="Read notes.txt and tell me the code word.", workspace="proj", **CALL
            )
            seen["refused"] = {}
            for name, workspace in OUTSIDE.items():
                workspace = workspace.format(outside=folder / "outside")
                seen["refused"][name], _ = await client.call(
                    "run_agent", prompt="list the files", workspace=workspace, **CALL
                )
            seen["missing"], _ = await client.call("run_agent", prompt="list the files", workspace="nope", **CALL)
            seen["empty"], _ = await client.call("run_agent", prompt="  ", **CALL)
            seen["listed"], _ = await client.call("list_models")
            seen["stream_errors"] = client.stream_errors

    anyio.run(scenario)
    return Session(**seen, log=stderr.read_text())


def test_the_server_offers_three_tools_and_run_agent_takes_only_the_tasks_arguments(session: Session) -> None:
    assert {t.name for t in session.tools} == TOOLS
    run_tool = next(t for t in session.tools if t.name == "run_agent")
    # no client-fillable context parameter: only the task's own arguments
    assert set(run_tool.input_schema["properties"]) == {
        "prompt",
        "model",
        "workspace",
        "max_steps",
        "tool_mode",
        "think",
    }
    assert run_tool.output_schema is not None and "peak_rss_bytes" in run_tool.output_schema["properties"]


def test_a_call_the_client_gives_up_on_stops_and_keeps_the_model_loaded(session: Session) -> None:
    assert session.loading == ["loading smollm2-135m"]
    assert "stopped: the request was cancelled" in session.log
    assert session.log.count("loaded smollm2-135m") == 1
    # the next run found the model the abandoned call loaded
    run = session.run.structured_content
    assert run["model_loaded_fresh"] is False and run["load_s"] == 0


def test_an_unknown_model_is_a_tool_error_with_suggestions(session: Session) -> None:
    assert session.bad_model.is_error
    assert "unknown model 'smollm2-13m'" in text_of(session.bad_model)
    assert "smollm2-135m" in text_of(session.bad_model)


def test_run_agent_returns_the_run_as_structured_content(session: Session) -> None:
    assert not session.run.is_error, text_of(session.run)
    run = session.run.structured_content
    assert run["model"] == "smollm2-135m" and run["tool_mode"] == "json"
    assert run["think"] is False and run["reasoning_tokens"] == 0  # json mode leaves no room to think
    assert run["workspace"] == "proj"
    assert 1 <= run["steps"] <= CALL["max_steps"]
    assert run["tokens_in"] > 0 and run["tokens_out"] > 0
    assert run["wall_s"] > 0 and run["peak_rss_bytes"] > 0
    assert run["cost_usd"] == 0
    assert "hint" in run


def test_run_agent_ends_with_an_answer_or_at_max_steps_and_says_which(session: Session) -> None:
    """The grammar makes every reply a valid call or an answer, so the run ends one of two
    ways whatever the tiny model writes; each has its exact fields."""
    run = session.run.structured_content
    assert run["stop_reason"] in ("answer", "max_steps")
    assert run["success"] == (run["stop_reason"] == "answer")
    if run["success"]:
        assert run["error"] is None
    else:
        assert run["error"] == f"no answer after {CALL['max_steps']} steps"
        assert run["steps"] == CALL["max_steps"]


def test_run_agent_reports_each_step_as_progress(session: Session) -> None:
    progress = session.progress
    assert progress and all(m.startswith(f"step {v:g}: ") for v, _, m in progress), progress
    assert [v for v, _, _ in progress] == list(range(1, len(progress) + 1))
    assert {t for _, t, _ in progress} == {CALL["max_steps"]}


@pytest.mark.parametrize("name", OUTSIDE)
def test_a_workspace_outside_the_root_is_refused(session: Session, name: str) -> None:
    refused = session.refused[name]
    assert refused.is_error, OUTSIDE[name]
    assert "outside the server's root" in text_of(refused)


def test_a_missing_workspace_is_refused(session: Session) -> None:
    assert session.missing.is_error and "not an existing folder" in text_of(session.missing)


def test_an_empty_prompt_is_refused(session: Session) -> None:
    assert session.empty.is_error and "prompt is empty" in text_of(session.empty)


def test_list_models_shows_the_default_and_loaded_model(session: Session) -> None:
    listed = session.listed
    assert not listed.is_error
    models = listed.structured_content
    assert models["default_model"] == "smollm2-135m" and models["loaded_model"] == "smollm2-135m"
    smol = next(m for m in models["local"] if m["alias"] == "smollm2-135m")
    assert smol["status"] in ("installed", "bundled") and smol["fits"] is True
    assert {h["alias"] for h in models["hosted"]} and models["available_ram_bytes"] > 0


def test_stdout_carried_nothing_but_jsonrpc_over_the_session(session: Session) -> None:
    assert session.stream_errors == []


def _read_reply(proc: subprocess.Popen, want_id: int, seen: list[str]) -> dict:
    """Read stdout lines (every one must be JSON-RPC) until the reply to `want_id`."""
    while True:
        line = proc.stdout.readline()
        assert line, "the server closed stdout"
        seen.append(line)
        message = json.loads(line)
        assert message["jsonrpc"] == "2.0"
        if message.get("id") == want_id:
            return message


def test_stdout_carries_only_jsonrpc(root: Path, localagent_home: Path, tmp_path: Path) -> None:
    """Spawned by hand: every byte on stdout is a JSON-RPC line, with a model loaded and run."""
    stderr = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "localagent", "mcp", "--root", str(root), *FAST],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=root,
        env={**os.environ, "LOCALAGENT_HOME": str(localagent_home)},
    )
    seen: list[str] = []
    # a hang guard, not a timing check: a killed server closes stdout and the test fails there
    watchdog = threading.Timer(900, proc.kill)
    watchdog.start()

    def send(message: dict) -> None:
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
        proc.stdin.flush()

    try:
        send(
            {
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"},
                },
            }
        )
        assert "serverInfo" in _read_reply(proc, 1, seen)["result"]
        send({"method": "notifications/initialized"})
        send({"id": 2, "method": "tools/list"})
        assert {t["name"] for t in _read_reply(proc, 2, seen)["result"]["tools"]} == TOOLS
        send(
            {
                "id": 3,
                "method": "tools/call",
                "params": {
                    "name": "run_agent",
                    "arguments": {
                        "prompt": "What files are here?",
                        "workspace": "proj",
                        "max_steps": 1,
                        "tool_mode": "json",
                    },
                    "_meta": {"progressToken": "p1"},
                },
            }
        )
        reply = _read_reply(proc, 3, seen)["result"]
        assert reply["isError"] is False
        run = reply["structuredContent"]
        assert run["tokens_in"] > 0 and run["model_loaded_fresh"] is True and run["load_s"] > 0
        assert any(json.loads(line).get("method") == "notifications/progress" for line in seen)
        proc.stdin.close()
        rest = proc.stdout.read()
        assert proc.wait(timeout=120) == 0
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        stderr.close()
    for line in rest.splitlines():
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert (tmp_path / "stderr.txt").read_text().strip(), "the server's log goes to stderr"


def test_pull_keep_alive_and_unreachable_hub(
    root: Path, localagent_home: Path, tmp_path: Path, bundled_gguf: Path, bundled_sha256: str
) -> None:
    hub = FakeHub({REPO: {FILE: HubFile(bundled_gguf, bundled_sha256, bundled_gguf.stat().st_size)}}).start()
    huge = '[local.fake-huge]\nrepo = "fakeorg/huge"\nfile = "huge.gguf"\nquant = "Q4_K_M"\nsize_mb = 900000000\ncontext = 8192\n'
    (localagent_home / "models.toml").write_text(USER_CATALOG + huge)
    log_file = tmp_path / "logs" / "mcp.log"
    params = server_params(root, localagent_home, "--keep-alive", "1", "--log-file", str(log_file), HF_ENDPOINT=hub.url)

    async def scenario() -> None:
        async with connect(params, tmp_path / "stderr.txt") as client:
            pulled, progress = await client.call("pull_model", alias="fake-smol")
            assert not pulled.is_error, text_of(pulled)
            assert pulled.structured_content["sha256"] == bundled_sha256
            assert pulled.structured_content["source"] == "hub"
            size = bundled_gguf.stat().st_size
            assert progress and progress[-1][:2] == (size, size)
            assert [v for v, _, _ in progress] == sorted(v for v, _, _ in progress)
            assert "downloading fake-smol" in progress[-1][2]

            gets = hub.gets
            again, _ = await client.call("pull_model", alias="fake-smol")
            assert not again.is_error and hub.gets == gets, "an installed model is not downloaded again"

            unknown, _ = await client.call("pull_model", alias="fake-smoll")
            assert unknown.is_error and "did you mean 'fake-smol'" in text_of(unknown)

            too_big, _ = await client.call("run_agent", prompt="hi", model="fake-huge", **CALL)
            assert too_big.is_error and "fake-huge needs about" in text_of(too_big) and "of RAM" in text_of(too_big)
            assert not any("/huge/" in r for r in hub.requests), "a model too big for RAM is not downloaded"

            ran, _ = await client.call(
                "run_agent", prompt="Say hello.", model="fake-smol", tool_mode="json", max_steps=1
            )
            assert not ran.is_error and ran.structured_content["model_loaded_fresh"] is True
            # keep-alive 1 s: the timer unloads the idle model
            deadline = time.monotonic() + 60
            while True:
                listed, _ = await client.call("list_models")
                if listed.structured_content["loaded_model"] is None:
                    break
                assert time.monotonic() < deadline, "the model was not unloaded after the keep-alive"
                await anyio.sleep(0.5)

            hub.stop()
            down, _ = await client.call("run_agent", prompt="hi", model="fake-smol:Q8_0", **CALL)
            assert down.is_error and "hint:" in text_of(down)
            down_pull, _ = await client.call("pull_model", alias="fake-smol:Q8_0")
            assert down_pull.is_error
            still, _ = await client.call("list_models")
            assert not still.is_error, "the server keeps serving after refused requests"
            assert client.stream_errors == []

    try:
        anyio.run(scenario)
    finally:
        hub.stop()
    log = log_file.read_text()
    assert "unloading fake-smol: idle for 1 s" in log
    assert (tmp_path / "stderr.txt").read_text() == "", "--log-file takes everything stderr would get"


def test_started_from_the_filesystem_root_without_root_refuses(localagent_home: Path) -> None:
    """Claude Desktop starts servers in `/`: without --root that would expose every file."""
    done = subprocess.run(
        [sys.executable, "-m", "localagent", "mcp"],
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, "LOCALAGENT_HOME": str(localagent_home)},
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "the whole filesystem" in done.stderr and "--root" in done.stderr
