"""A real `python -m llama_cpp.server` serving the bundled model on 127.0.0.1.

Import the fixture where it is needed: `from llama_server import llama_server`. It yields the
server's base URL without `/v1` (e.g. "http://127.0.0.1:40123"). One server per test session,
however many modules import the fixture.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 120.0
_running: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(model: Path, *extra_args: str) -> Iterator[str]:
    """Start the server as a subprocess, wait until it answers, stop it afterwards."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
        *extra_args,
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_until_up(url, process, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(url: str, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(
                f"llama_cpp.server exited with {process.returncode}:\n{log.read().decode(errors='replace')[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"llama_cpp.server did not answer on {url} within {START_TIMEOUT_S:.0f} s")


@pytest.fixture(scope="session")
def llama_server(bundled_gguf) -> Iterator[str]:
    if "default" in _running:  # a second module that imported this fixture
        yield _running["default"]
        return
    with serve(bundled_gguf) as url:
        _running["default"] = url
        try:
            yield url
        finally:
            _running.pop("default", None)
