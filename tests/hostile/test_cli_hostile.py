"""The command line given odd arguments: each is an answer or an `error:`/`hint:`, never a
usage dump or a traceback. Run through the real console script."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli_run import localagent

from localagent import __version__


@pytest.mark.parametrize("args", [["--version"], ["--version", "models", "list"], ["--debug", "--version"]])
def test_version_alone_prints_the_version(args: list[str]) -> None:
    done = localagent(*args, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"localagent {__version__}"
    assert "Missing command" not in done.stderr


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_an_empty_prompt_is_refused_before_a_model_loads(prompt: str, tmp_path: Path) -> None:
    done = localagent("run", prompt, "--model", "smollm2-135m", "--workspace", str(tmp_path), timeout=60)
    assert done.returncode == 1
    assert "error: the prompt is empty" in done.stderr and "hint: " in done.stderr
    assert "loading" not in done.stderr and "Traceback" not in done.stderr and done.stdout == ""
