"""Confinement of a task's command checks, and running them confined (`run_confined`).

A task file is code: its command checks run what it says. They run with a scrubbed
environment, no network, and the workspace (plus a scratch folder for HOME and TMPDIR) as the
only writable places, in a process group killed whole when the command ends or times out.
The mechanism is Linux namespaces through util-linux's `unshare` (user, network, mount and
pid; bubblewrap is not installed by default): inside, a small Python helper bind-mounts the
two writable folders onto themselves, remounts every other mount read-only, and execs the
command. The kernel kills whatever is left in the pid namespace when the command exits.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from localagent.errors import ConfigError

# how the helper's own messages begin, so a check tells them from what the command wrote
_MARK = "localagent-confine: "
_CONFINE_HELPER = f"""
import ctypes, os, re, sys
libc = ctypes.CDLL(None, use_errno=True)
RDONLY, REMOUNT, BIND, REC = 1, 32, 4096, 16384
# flags a user namespace may not drop from a mount it inherited: a remount must repeat them
LOCKED = {{"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}}
def die(code, text):
    sys.stderr.write({_MARK!r} + text + "\\n")
    sys.exit(code)
def mount(target, flags, source=None):
    if libc.mount(source, target.encode(), None, flags, None) != 0:
        die(125, "could not confine: cannot mount " + target + ": " + os.strerror(ctypes.get_errno()))
workspace, scratch, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
for folder in (workspace, scratch):
    mount(folder, BIND | REC, folder.encode())
with open("/proc/self/mountinfo") as f:
    mounts = [line.split() for line in f]
for fields in mounts:
    point = re.sub(r"\\\\([0-7]{{3}})", lambda m: chr(int(m[1], 8)), fields[4])
    if point in (workspace, scratch) or point.startswith((workspace + "/", scratch + "/")):
        continue
    flags = REMOUNT | BIND | RDONLY
    for option in fields[5].split(","):
        flags |= LOCKED.get(option, 0)
    mount(point, flags)
if not os.statvfs("/").f_flag & os.ST_RDONLY:
    die(125, "could not confine: / is still writable")
os.chdir(workspace)
try:
    os.execvp(argv[0], argv)
except OSError as exc:
    die(127, "could not start: " + exc.strerror)
"""

_UNSHARE = ["--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]


@dataclass(frozen=True)
class Confinement:
    """How command checks are confined on this machine: `mechanism` is None when nothing can
    confine them, and `detail` says what is isolated, or why nothing is."""

    mechanism: str | None  # "unshare", or None
    detail: str
    program: str = ""  # the mechanism's executable

    def wrap(self, argv: list[str], workspace: str, scratch: str) -> list[str]:
        if self.mechanism is None:
            return argv
        return [self.program, *_UNSHARE, sys.executable, "-I", "-S", "-c", _CONFINE_HELPER, workspace, scratch, *argv]


@functools.cache
def confinement() -> Confinement:
    """Detected once per process: `unshare` runs `true` confined, or the reason it cannot."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return Confinement(None, "`unshare` (util-linux) is not on PATH")
    found = Confinement(
        "unshare", "unshare: user, network, mount and pid namespaces; read-only outside the workspace", unshare
    )
    with tempfile.TemporaryDirectory(prefix="localagent-probe-") as tmp:
        ws, scratch = os.path.join(tmp, "ws"), os.path.join(tmp, "scratch")
        os.mkdir(ws)
        os.mkdir(scratch)
        try:
            proc = subprocess.run(
                found.wrap(["true"], ws, scratch), env=_check_env(scratch), capture_output=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Confinement(None, f"`unshare` could not run: {exc}")
    if proc.returncode != 0:
        said = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()
        return Confinement(None, f"`unshare` failed: {said[-1] if said else f'exit {proc.returncode}'}")
    return found


def require_confinement(allow_unconfined: bool) -> Confinement:
    """The confinement in force, or a refusal when there is none and the user did not allow
    running task commands unconfined."""
    found = confinement()
    if found.mechanism is None and not allow_unconfined:
        raise ConfigError(
            f"command checks cannot be confined on this machine ({found.detail}), and a task file's commands run as code",
            hint="install util-linux with user namespaces enabled, or, for task files you have reviewed, pass --allow-unconfined-checks",
        )
    return found


_KEPT_ENV = ("PATH", "LANG", "LANGUAGE", "TZ")


def _check_env(scratch: str) -> dict[str, str]:
    """Only the locale and PATH from our environment (no keys or tokens); HOME and TMPDIR in
    the scratch folder."""
    env = {k: v for k, v in os.environ.items() if k in _KEPT_ENV or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    home, tmp = os.path.join(scratch, "home"), os.path.join(scratch, "tmp")
    os.makedirs(home, exist_ok=True)
    os.makedirs(tmp, exist_ok=True)
    return {**env, "HOME": home, "TMPDIR": tmp, "PYTHONDONTWRITEBYTECODE": "1"}


def _last_line(stream: Any) -> str:
    """The last line of what a command wrote (read from the end: it may have written a lot)."""
    stream.seek(0, os.SEEK_END)
    stream.seek(max(0, stream.tell() - 4096))
    text = stream.read().decode("utf-8", errors="replace").strip()
    return text.splitlines()[-1] if text else ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


@dataclass(frozen=True)
class Ran:
    """How a command run by `run_confined` ended."""

    code: int | None  # its exit status; None: it timed out (and was killed)
    last: str = ""  # the last line it wrote, stderr first, when it failed
    helper: str = ""  # what the confining helper said instead ("could not start: …", "could not confine: …")
    not_started: str | None = None  # why the command could not be started at all (the OS's words)


def run_confined(argv: list[str], root: str | os.PathLike[str], timeout_s: float, found: Confinement) -> Ran:
    """Run `argv` in the workspace `root` as `found` confines it, with the scrubbed
    environment, in a process group of its own killed whole when it ends or times out."""
    with (
        tempfile.TemporaryDirectory(prefix="localagent-check-") as scratch,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        workspace = os.path.realpath(root)
        scratch = os.path.realpath(scratch)
        try:
            proc = subprocess.Popen(
                found.wrap(argv, workspace, scratch),
                cwd=workspace,
                env=_check_env(scratch),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except OSError as exc:
            return Ran(None, not_started=exc.strerror or str(exc))
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            # background processes too, whether it timed out or not
            _kill_group(proc)
        if code is None or code == 0:
            return Ran(code)
        last = _last_line(err) or _last_line(out)
    if last.startswith(_MARK):
        return Ran(code, helper=last[len(_MARK) :])
    return Ran(code, last=last)
