"""`localagent run --fallback` and `--check`: the snapshot that puts the workspace back, the
confined check, and the attempts a run records. The failing model is a real hosted engine
pointed at a loopback port nothing listens on; the one that answers is the scripted `noop`."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from test_cli_run import localagent

from localagent.errors import ConfigError
from localagent.fallback import parse_check
from localagent.snapshot import Snapshot


def _tree(root: Path) -> dict[str, str]:
    """Every entry under root: a file's text, a link's target, 'dir' for a folder."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = f"-> {os.readlink(path)}" if path.is_symlink() else "dir" if path.is_dir() else path.read_text()
    return out


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "README.md").write_text("# Demo\n")
    (ws / "src" / "app.py").write_text("print('hi')\n")
    return ws


def test_restore_puts_back_changed_deleted_and_added_files(workspace: Path) -> None:
    before = _tree(workspace)
    with Snapshot(workspace) as snap:
        (workspace / "README.md").write_text("changed\n")
        (workspace / "src" / "app.py").unlink()
        (workspace / "new").mkdir()
        (workspace / "new" / "file.txt").write_text("x")
        snap.restore()
        assert _tree(workspace) == before
        (workspace / "README.md").write_text("again\n")  # a second restore works as well
        snap.restore()
        assert _tree(workspace) == before


def test_links_are_neither_followed_nor_emptied(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious\n")
    (workspace / "out").symlink_to(outside)
    with Snapshot(workspace) as snap:
        assert snap.bytes < 100  # the linked folder's file was not counted, so not copied
        (workspace / "out").unlink()
        (workspace / "out").symlink_to(tmp_path)  # the run pointed the link elsewhere
        snap.restore()
    assert os.readlink(workspace / "out") == str(outside)
    assert (outside / "keep.txt").read_text() == "precious\n"  # restoring did not clear through the link


def test_a_workspace_past_the_limit_is_refused(workspace: Path) -> None:
    (workspace / "big.bin").write_bytes(b"\0" * 4096)
    with pytest.raises(ConfigError) as info, Snapshot(workspace, limit=1024):
        pass
    assert "more than 1.0 KiB" in str(info.value) and "drop --fallback" in (info.value.hint or "")


def test_a_fifo_in_the_workspace_is_refused_not_copied(workspace: Path) -> None:
    os.mkfifo(workspace / "pipe")  # copying it would block for ever
    with pytest.raises(ConfigError, match="not a file, folder or link"), Snapshot(workspace):
        pass


@pytest.mark.parametrize("text, message", [("", "needs a command"), ("python -c 'oops", "is not a command")])
def test_bad_check_commands(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_check(text)


def down_model(home: Path) -> None:
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (home / "models.toml").write_text(
        f'[hosted.down]\nprovider = "local"\nmodel = "m"\nbase_url = "http://127.0.0.1:{port}/v1"\n'
    )


def test_no_answer_escalates_and_both_attempts_are_recorded(
    workspace: Path, localagent_home: Path, tmp_path: Path
) -> None:
    down_model(localagent_home)
    trace = tmp_path / "trace.jsonl"
    done = localagent(
        "run", "hello", "-m", "down", "--fallback", "noop", "-w", str(workspace), "--json", "--trace", str(trace)
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["model"] == "noop" and out["stop_reason"] == "answer"
    assert [(a["model"], a["stop_reason"], a["succeeded"]) for a in out["attempts"]] == [
        ("down", "api_error", False),
        ("noop", "answer", True),
    ]
    assert out["attempts"][0]["why_failed"] == "stopped without an answer (api_error)"
    assert all(a["wall_s"] > 0 and a["cost_usd"] == 0 for a in out["attempts"])
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert records[0]["kind"] == "header" and records[0]["model"] == "down"
    assert [r["model"] for r in records if r.get("kind") == "attempt"] == ["down", "noop"]


def test_a_failed_check_escalates_on_a_restored_workspace(workspace: Path) -> None:
    # the check leaves a marker and passes only if one was there already: on a workspace put
    # back from the snapshot, the second model's check fails too
    check = "python -c \"import os, sys; m = os.path.exists('marker'); open('marker', 'w'); sys.exit(0 if m else 4)\""
    done = localagent("run", "hello", "-m", "noop", "--fallback", "noop", "--check", check, "-w", str(workspace))
    assert done.returncode == 1
    assert done.stderr.count("attempt noop: the check failed") == 2
    assert "expected exit 0, found exit 4" in done.stderr
    assert "error: the check failed" in done.stderr and "hint: the workspace holds" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_passing_check_ends_the_run_at_the_first_model(workspace: Path) -> None:
    check = "python -c \"import sys; sys.exit(0 if open('README.md').read() == '# Demo\\n' else 1)\""
    done = localagent(
        "run", "hello", "-m", "noop", "--fallback", "down", "--check", check, "-w", str(workspace), "--json"
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["attempts"]) == 1 and out["check"]["passed"] is True


@pytest.mark.parametrize(
    "args, message",
    [
        (["--for", "read"], "error: --for chooses the model with --model auto"),
        (["--prefer", "cost"], "error: --prefer chooses the model with --model auto"),
        (["--check", "'unbalanced"], "is not a command"),
        (["--fallback", "noop", "--trace", "trace.jsonl"], "is inside the workspace, which is restored"),
    ],
)
def test_misused_flags_fail_before_any_model_loads(workspace: Path, args: list[str], message: str) -> None:
    done = localagent("run", "hello", "-m", "noop", "-w", str(workspace), *args, cwd=workspace)
    assert done.returncode == 1 and message in done.stderr
    assert "hint:" in done.stderr and "Traceback" not in done.stderr and done.stdout == ""
