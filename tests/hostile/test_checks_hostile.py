"""Command checks run confined: a task file is code. Every test runs real subprocesses: a
secret in our environment, a folder outside the workspace, a listener on loopback, a process
left in the background, and a machine with no way to confine (PATH without `unshare`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from localagent.bench import checks, confine
from localagent.errors import ConfigError

CONFINED = confine.confinement().mechanism is not None
needs_confinement = pytest.mark.skipif(not CONFINED, reason=f"no confinement here: {confine.confinement().detail}")


@pytest.fixture(autouse=True)
def fresh_detection():
    """Detection is cached per process; a test that changes PATH must not leave its answer."""
    confine.confinement.cache_clear()
    yield
    confine.confinement.cache_clear()


@pytest.fixture
def no_unshare(tmp_path, monkeypatch) -> Path:
    """A PATH holding only sh and sleep: the machine has no way to confine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("sh", "sleep"):
        found = subprocess.run(["which", program], capture_output=True, text=True, check=True).stdout.strip()
        (bin_dir / program).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert confine.confinement().mechanism is None
    return bin_dir


def run(argv: list[str], root: Path, timeout_s: float = 60.0, **kwargs) -> checks.CheckResult:
    return checks.command(checks.Command(kind="command", argv=argv, timeout_s=timeout_s), root, {}, "", **kwargs)


def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


def running(token: str) -> list[int]:
    """Pids whose command line holds `token`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


# --- environment ---


def test_secrets_in_our_environment_do_not_reach_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-localagent-test")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-secret-localagent-test")
    root = workspace(tmp_path)
    dump = "import json, os; open('env.json', 'w').write(json.dumps(dict(os.environ)))"
    assert run(["python", "-c", dump], root).passed
    env = json.loads((root / "env.json").read_text())
    assert "sk-secret" not in json.dumps(env) and "ghp-secret" not in json.dumps(env)
    assert set(env) - {"PATH", "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "LANG", "LANGUAGE", "TZ"} <= {
        k for k in env if k.startswith("LC_")
    }
    assert env["HOME"] != os.environ.get("HOME") and not env["HOME"].startswith(str(root))


def test_home_and_tmpdir_are_writable(tmp_path):
    root = workspace(tmp_path)
    script = "import os, tempfile; open(os.path.join(os.environ['HOME'], 'h'), 'w').write('x'); tempfile.mkstemp()"
    outcome = run(["python", "-c", script], root)
    assert outcome.passed, outcome.detail


# --- filesystem ---


@needs_confinement
def test_a_write_outside_the_workspace_fails(tmp_path):
    root = workspace(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "escaped.txt"
    outcome = run(["python", "-c", f"open({str(target)!r}, 'w').write('x')"], root)
    assert not outcome.passed
    assert "Read-only file system" in outcome.detail and "[confined: unshare]" in outcome.detail
    assert not target.exists()
    # the same write, inside the workspace, is fine
    assert run(["python", "-c", "open('inside.txt', 'w').write('x')"], root).passed
    assert (root / "inside.txt").read_text() == "x"


@needs_confinement
def test_the_source_tree_and_home_are_read_only(tmp_path):
    root = workspace(tmp_path)
    victim = Path(checks.__file__)
    before = victim.read_bytes()
    outcome = run(["python", "-c", f"open({str(victim)!r}, 'a').write('# pwned')"], root)
    assert not outcome.passed
    assert victim.read_bytes() == before


# --- network ---


@needs_confinement
def test_a_connection_to_a_loopback_listener_fails(tmp_path):
    root = workspace(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the listener is reachable from here
        server.accept()[0].close()
        connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
        outcome = run(["python", "-c", connect], root)
        assert not outcome.passed
        assert "unreachable" in outcome.detail or "refused" in outcome.detail, outcome.detail
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody reached it


# --- processes ---


@needs_confinement
def test_a_background_process_is_gone_after_the_check(tmp_path):
    root = workspace(tmp_path)
    token = f"777.{uuid.uuid4().int % 10**9}"
    assert run(["sh", "-c", f"sleep {token} & echo $! > pid"], root).passed
    assert (root / "pid").read_text().strip()  # it did start
    assert running(token) == []


@needs_confinement
def test_a_background_process_is_gone_after_a_timeout(tmp_path):
    root = workspace(tmp_path)
    token = f"777.{uuid.uuid4().int % 10**9}"
    outcome = run(["sh", "-c", f"sleep {token} & sleep 30"], root, timeout_s=1)
    assert not outcome.passed and "timed out after 1s" in outcome.detail
    assert running(token) == []


def test_unconfined_the_process_group_is_killed_too(tmp_path, no_unshare):
    root = workspace(tmp_path)
    token = f"777.{uuid.uuid4().int % 10**9}"
    outcome = run(["sh", "-c", f"sleep {token} & echo $! > pid"], root, allow_unconfined=True)
    assert outcome.passed, outcome.detail
    pid = int((root / "pid").read_text())
    assert running(token) == []
    stat = Path(f"/proc/{pid}/stat")
    # gone, or a zombie its new parent has not reaped yet
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_missing_program_is_named(tmp_path):
    outcome = run(["no-such-program-localagent"], workspace(tmp_path))
    assert not outcome.passed and "could not start: No such file or directory" in outcome.detail


# --- refusal ---


def test_unconfined_is_refused_without_the_flag(tmp_path, no_unshare):
    root = workspace(tmp_path)
    with pytest.raises(ConfigError) as refused:
        run(["sh", "-c", "echo ran > ran.txt"], root)
    assert "--allow-unconfined-checks" in (refused.value.hint or "")
    assert not (root / "ran.txt").exists()
    outcome = run(["sh", "-c", "echo ran > ran.txt"], root, allow_unconfined=True)
    assert outcome.passed and (root / "ran.txt").exists()


TASK = """
id = "runs-a-command"
title = "A task with a command check"
tier = 1
prompt = "Write ok to out.txt."

[[checks]]
kind = "command"
argv = ["sh", "-c", "test -f out.txt"]

[[solution]]
tool = "write_file"
arguments = { path = "out.txt", content = "ok" }
[[solution]]
answer = "done"
"""


def bench(tasks_dir: Path, path: str, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    args = ["bench", "--model", "oracle", "--tasks", str(tasks_dir), "--json", *flags]
    return subprocess.run(
        [sys.executable, "-m", "localagent", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_bench_refuses_unconfined_checks_without_the_flag(tmp_path, no_unshare, localagent_home):
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "runs-a-command.toml").write_text(TASK)
    refused = bench(tasks_dir, str(no_unshare))
    assert refused.returncode == 1, refused.stderr
    assert "error: command checks cannot be confined" in refused.stderr
    assert "hint:" in refused.stderr and "--allow-unconfined-checks" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (localagent_home / "runs").exists() or not list((localagent_home / "runs").iterdir())  # refused first
    allowed = bench(tasks_dir, str(no_unshare), "--allow-unconfined-checks")
    assert allowed.returncode == 0, allowed.stderr
    assert "UNCONFINED" in allowed.stderr


@needs_confinement
def test_bench_says_which_mechanism_confined_the_checks(tmp_path):
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "runs-a-command.toml").write_text(TASK)
    done = bench(tasks_dir, os.environ["PATH"])
    assert done.returncode == 0, done.stderr
    assert "command checks run confined by unshare" in done.stderr
