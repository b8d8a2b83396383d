"""`localagent mcp` given what a client should not send: lines that are not JSON-RPC, calls
that fail in a way nothing translated, and start-up flags out of range. Each gets an answer:
a JSON-RPC error for the request's id, a tool error with a reason and a hint, or `error:` /
`hint:` at start-up; the server keeps serving. The real server, spawned over stdio."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp.server.mcpserver", reason="needs the 'mcp' extra (mcp >= 2)")

from mcp import Client  # noqa: E402
from mcp.server.mcpserver import Context, MCPServer  # noqa: E402
from test_cli_run import localagent  # noqa: E402

from localagent.mcp_server import _in_thread  # noqa: E402

BIG = b"1" * 5000  # past sys.get_int_max_str_digits() (4300)
DEEP = b"[" * 100_000 + b"]" * 100_000  # past pydantic's and Python's recursion limits


class RawServer:
    """`python -m localagent mcp`, spoken to line by line; every stdout line must be JSON."""

    def __init__(self, root: Path, home: Path, stderr: Path):
        self._stderr = stderr.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "localagent", "mcp", "--root", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=root,
            env={**os.environ, "LOCALAGENT_HOME": str(home)},
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self._lines.put(line)

    def send(self, line: bytes | dict[str, Any]) -> None:
        data = line if isinstance(line, bytes) else json.dumps({"jsonrpc": "2.0", **line}).encode()
        self.proc.stdin.write(data + b"\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def reply(self, timeout: float = 30) -> dict[str, Any]:
        """The next message that is not a notification; a hang fails here, not the suite."""
        while True:
            try:
                message = json.loads(self._lines.get(timeout=timeout))
            except queue.Empty:
                raise AssertionError(f"no answer within {timeout} s") from None
            assert message["jsonrpc"] == "2.0"
            if "method" not in message:
                return message

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            assert self.proc.wait(timeout=60) == 0
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._stderr.close()


@pytest.fixture
def server(tmp_path: Path, localagent_home: Path) -> Iterator[RawServer]:
    root = tmp_path / "root"
    root.mkdir()
    raw = RawServer(root, localagent_home, tmp_path / "stderr.txt")
    raw.send(
        {
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "hostile", "version": "0"},
            },
        }
    )
    assert "serverInfo" in raw.reply(60)["result"]
    raw.send({"method": "notifications/initialized"})
    yield raw
    raw.close()


def call(id_: bytes, arguments: bytes) -> bytes:
    return b'{"jsonrpc": "2.0", "id": %s, "method": "tools/call", "params": {"name": "run_agent", "arguments": %s}}' % (
        id_,
        arguments,
    )


# (line, JSON-RPC error code, id of the answer): -32700 when the SDK cannot read the JSON,
# -32600 when it is JSON but not a JSON-RPC message; the request's id when it can be read
UNREADABLE = [
    (b"{not json", -32700, None),
    (b'{"jsonrpc": "2.0", "id": 14, "method": "tools/call", "params": "notanobject"}', -32600, 14),
    (b'{"jsonrpc": "2.0", "id": "s-1", "method": "tools/call", "params": [1, 2]}', -32600, "s-1"),
    (b'{"jsonrpc": "2.0", "id": 15, "method": "tools/call", "params": "{\\"id\\": 99}"}', -32600, 15),  # not params' id
    (b'{"id": 16, "method": "ping"}', -32600, 16),  # no "jsonrpc"
    (call(b"7", b'{"prompt": "hi \\ud800"}'), -32700, 7),  # a lone surrogate
    (call(b"12", b'{"prompt": "hi", "max_steps": ' + BIG + b"}"), -32700, 12),
    (call(b"13", b'{"prompt": "hi", "max_steps": ' + DEEP + b"}"), -32700, None),
    (b'{"jsonrpc": "2.0", "id": "\\udcff", "method": "ping"}', -32700, None),  # an id that cannot go back
    (b'[{"jsonrpc": "2.0", "id": 21, "method": "ping"}]', -32600, None),  # batches are not MCP
]


def test_lines_the_sdk_cannot_read_get_a_jsonrpc_error(server: RawServer, tmp_path: Path) -> None:
    for line, code, id_ in UNREADABLE:
        server.send(line)
        answer = server.reply()
        assert (answer["id"], answer["error"]["code"]) == (id_, code), line[:80]
        assert answer["error"]["message"].startswith("Parse error: " if code == -32700 else "Invalid Request: ")
    server.send({"id": 99, "method": "tools/list"})  # and it keeps serving
    assert server.reply()["id"] == 99
    assert "answered a line that is not a JSON-RPC message" in (tmp_path / "stderr.txt").read_text()


def test_a_workspace_in_an_unknown_users_home_is_a_tool_error_with_a_hint(server: RawServer) -> None:
    # expanding ~nosuchuser raised RuntimeError, which reached the client as a bare
    # "Error executing tool run_agent"
    server.send(
        {
            "id": 5,
            "method": "tools/call",
            "params": {"name": "run_agent", "arguments": {"prompt": "hi", "model": "noop", "workspace": "~nosuchuser"}},
        }
    )
    result = server.reply()["result"]
    assert result["isError"] is True
    what, hint = result["content"][0]["text"].removeprefix("Error executing tool run_agent: ").split("\nhint: ")
    assert what == "workspace '~nosuchuser' names the home folder of a user this machine does not have" and hint
    server.send(
        {
            "id": 6,
            "method": "tools/call",
            "params": {"name": "run_agent", "arguments": {"prompt": "hi", "model": "noop"}},
        }
    )
    assert server.reply()["result"]["isError"] is False  # the model's lock was let go


# A tool of the test's own, run the way run_agent is (_in_thread), over the SDK's in-process
# client: a failure nothing translated, whatever the server's other fixes turn into errors.
probe = MCPServer("probe")


@probe.tool()
async def fails(ctx: Context) -> str:
    return await _in_thread(ctx, lambda channel: {}["no such key"])


def test_an_unexpected_error_is_an_internal_error_with_a_hint(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> Any:
        async with Client(probe) as client:
            return await client.call_tool("fails", {})

    result = anyio.run(scenario)
    assert result.is_error
    text = result.content[0].text
    assert text.startswith(
        "Error executing tool fails: internal error: KeyError: 'no such key'\nhint: this is a bug in localagent"
    )
    (record,) = [r for r in caplog.records if r.name == "localagent.mcp" and r.message == "internal error"]
    assert record.exc_info is not None  # the traceback goes to the log


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--keep-alive", "1e10"],
            "error: --keep-alive 1e+10 is not -1, 0 or a number of seconds up to 604800 (a week)",
        ),
        (["--keep-alive", "nan"], "error: --keep-alive nan is not"),
        (["--keep-alive", "-inf"], "error: --keep-alive -inf is not"),
        (["--keep-alive", "-5"], "error: --keep-alive -5 is not"),
        (["--time-limit", "inf"], "error: --time-limit inf is not a number of seconds from 1 to 604800 (a week)"),
        (["--time-limit", "1e10"], "error: --time-limit 1e+10 is not"),
        (["--time-limit", "nan"], "error: --time-limit nan is not"),
        (["--time-limit", "0.5"], "error: --time-limit 0.5 is not"),
    ],
)
def test_mcp_flags_out_of_range_are_refused_at_start(flags: list[str], message: str, tmp_path: Path) -> None:
    done = localagent("mcp", "--root", str(tmp_path), *flags, timeout=60)
    assert done.returncode == 1
    assert message in done.stderr and "\nhint: " in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
