"""Deterministic checks: each kind is a pure function of (check, workspace root, fixture
files, final answer) -> CheckOutcome. `run_checks` runs a task's checks in their order.

Command checks run after every other check, so what a command writes (a test's cache, an
output file) never counts against the model in `no_extra_files` or `unchanged`.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from localagent.bench import tasks as t
from localagent.bench.tasks import Task, glob_match
from localagent.errors import ConfigError

# Which kinds judge the answer, and which guard against collateral changes (the rest judge
# the workspace's new state): the runner's failure modes follow from these.
ANSWER_KINDS = frozenset({"answer_contains", "answer_regex", "answer_excludes"})
COLLATERAL_KINDS = frozenset({"unchanged", "no_extra_files"})

_SHORT = 60


@dataclass(frozen=True)
class CheckOutcome:
    kind: str
    passed: bool
    detail: str  # expected vs found, shortened; empty when passed


def cut(text: str, limit: int = _SHORT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short(value: Any, limit: int = _SHORT) -> str:
    """A string's repr, or other data as JSON, cut to about `limit` characters, for details."""
    if isinstance(value, str):
        return repr(cut(value, limit))
    try:
        return cut(json.dumps(value, ensure_ascii=False), limit)
    except RecursionError:
        # JSON the model wrote that parsed just below the stack's limit: showing it from a
        # few frames deeper must not turn its wrong answer into a runtime error
        return f"a {type(value).__name__} nested too deeply to show"


Fixture = Mapping[str, str]


def _ok(kind: str) -> CheckOutcome:
    return CheckOutcome(kind, True, "")


def _fail(kind: str, detail: str) -> CheckOutcome:
    return CheckOutcome(kind, False, detail)


def _missing(kind: str, root: Path, rel: str) -> CheckOutcome:
    found = "a folder" if (root / rel).is_dir() else "nothing"
    return _fail(kind, f"expected a file at {rel}, found {found}")


def _read(root: Path, rel: str) -> str | None:
    """The file's text (undecodable bytes replaced), or None when it is not a file."""
    path = root / rel
    if not path.is_file():
        return None
    return path.read_bytes().decode("utf-8", errors="replace")


def _workspace_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())


# --- answer checks ---


def _fold(text: str, ignore_case: bool) -> str:
    return text.casefold() if ignore_case else text


def answer_contains(check: t.AnswerContains, root: Path, fixture: Fixture, answer: str) -> CheckOutcome:
    if _fold(check.text, check.ignore_case) in _fold(answer, check.ignore_case):
        return _ok(check.kind)
    return _fail(check.kind, f"expected the answer to contain {short(check.text)}, found {short(answer)}")


def answer_regex(check: t.AnswerRegex, root: Path, fixture: Fixture, answer: str) -> CheckOutcome:
    if t.AnswerRegex.compiled(check.pattern, check.ignore_case).search(answer):
        return _ok(check.kind)
    return _fail(check.kind, f"expected the answer to match /{check.pattern}/, found {short(answer)}")


def answer_excludes(check: t.AnswerExcludes, root: Path, fixture: Fixture, answer: str) -> CheckOutcome:
    if _fold(check.text, check.ignore_case) not in _fold(answer, check.ignore_case):
        return _ok(check.kind)
    return _fail(check.kind, f"expected the answer not to contain {short(check.text)}, found {short(answer)}")


# --- file checks ---


def file_exists(check: t.FileExists, root: Path, fixture: Fixture, answer: str) -> CheckOutcome:
    if (root / check.path).exists():
        return _ok(check.kind)
    return _fail(check.kind, f"expected {check.path} to exist, found nothing")


def file_absent(check: t.FileAbsent, root: Path, fixture: Fixture, answer: str) -> CheckOutcome:
    path = root / check.path
    if not path.exists() and not path.is_symlink():
        return _ok(check.kind)
    return _fail(check.kind, f"expected {check.path} to be absent, found {'a folder' if path.is_dir() else 'a file'}")


def _normalize(text: str) -> list[str]:
    """Lines without trailing whitespace (so '\\r\\n' and a final newline do not matter)."""
    return [line.rstrip() for line in text.rstrip().split("\n")]


def file_equals(check: t.FileEquals, root: Path, fixture: Fixture, answer: str) -> CheckOutcome:
    found = _read(root, check.path)
    if found is None:
        return _missing(check.kind, root, check.path)
    want, got = _normalize(check.text), _normalize(found)
    if want == got:
        return _ok(check.kind)
    for n, (a, b) in enumerate(zip(want, got), start=1):
        if a != b:
            return _fail(check.kind, f"{check.path} line {n}: expected {short(a)}, found {short(b)}")
    n = min(len(want), len(got)) + 1
    if len(want) > len(got):
        return _fail(check.kind, f"{check.path} line {n}: expected {short(want[n - 1])}, found the end of the file")
    return _fail(check.kind, f"{check.path} line {n}: expected the end of the file, found {short(got[n - 1])}")


def file_contains(check: t.FileContains, root: Path, fixture: Fixture, answer: str) -> CheckOutcome:
    found = _read(root, check.path)
    if found is None:
        return _missing(check.kind, root, check.path)
    if check.text in found:
        return _ok(check.kind)
    return _fail(check.kind, f"expected {check.path} to contain {short(check.text)}, found {short(found)}")


def json_mismatch(expect: Any, found: Any, *, exact: bool, unordered: bool, where: str = "$") -> str | None:
    """Where and how `found` differs from `expect`, or None when it matches.

    Objects: with exact=False every expected key must be present and match (extra keys are
    fine); with exact=True the keys must be the same. Lists have the same length and match
    element by element, or with unordered=True match as sets (each element of either list
    matches some element of the other). Scalars are equal (true is not 1)."""
    if isinstance(expect, dict):
        if not isinstance(found, dict):
            return f"at {where}: expected an object, found {short(found)}"
        for key, value in expect.items():
            if key not in found:
                return f"at {where}: expected key {short(key)}, found keys {short(sorted(found))}"
            problem = json_mismatch(value, found[key], exact=exact, unordered=unordered, where=f"{where}.{key}")
            if problem:
                return problem
        extra = sorted(set(found) - set(expect))
        if exact and extra:
            return f"at {where}: unexpected key(s) {short(extra)}"
        return None
    if isinstance(expect, list):
        if not isinstance(found, list):
            return f"at {where}: expected a list, found {short(found)}"
        if unordered:
            matches = lambda a, b: json_mismatch(a, b, exact=exact, unordered=True) is None  # noqa: E731
            for item in expect:
                if not any(matches(item, other) for other in found):
                    return f"at {where}: expected an element {short(item)}, found {short(found)}"
            for other in found:
                if not any(matches(item, other) for item in expect):
                    return f"at {where}: unexpected element {short(other)}"
            return None
        if len(expect) != len(found):
            return f"at {where}: expected {len(expect)} element(s), found {len(found)}"
        for i, (a, b) in enumerate(zip(expect, found)):
            problem = json_mismatch(a, b, exact=exact, unordered=unordered, where=f"{where}[{i}]")
            if problem:
                return problem
        return None
    numbers = (int, float)
    both_numbers = isinstance(expect, numbers) and isinstance(found, numbers)
    if isinstance(expect, bool) or isinstance(found, bool) or not both_numbers:
        if type(expect) is type(found) and expect == found:
            return None
    elif expect == found:
        return None
    return f"at {where}: expected {short(expect)}, found {short(found)}"


def file_json(check: t.FileJson, root: Path, fixture: Fixture, answer: str) -> CheckOutcome:
    text = _read(root, check.path)
    if text is None:
        return _missing(check.kind, root, check.path)
    try:
        found = json.loads(text)
    except json.JSONDecodeError as exc:
        return _fail(check.kind, f"{check.path} is not valid JSON: {exc.msg} at line {exc.lineno}, found {short(text)}")
    except (RecursionError, ValueError) as exc:
        # The model wrote this file: JSON nested deeper than the interpreter's stack, or an
        # integer past Python's digit limit, is its wrong output (wrong_state), not a failure
        # of the harness (it was scored runtime_error before). Python's advice after the ';'
        # (set_int_max_str_digits) is not the model's to take.
        reason = "nested too deeply to read" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        return _fail(check.kind, f"{check.path} is not valid JSON: {reason}, found {short(text)}")
    problem = json_mismatch(check.expect, found, exact=check.exact, unordered=check.unordered)
    if problem is None:
        return _ok(check.kind)
    return _fail(check.kind, f"{check.path} {problem}")


# --- collateral checks ---


def unchanged(check: t.Unchanged, root: Path, fixture: Fixture, answer: str) -> CheckOutcome:
    changed: list[str] = []
    deleted: list[str] = []
    for rel, content in fixture.items():
        if not any(glob_match(pattern, rel) for pattern in check.paths):
            continue
        path = root / rel
        if not path.is_file():
            deleted.append(rel)
        elif path.read_bytes() != content.encode("utf-8"):
            changed.append(rel)
    if not changed and not deleted:
        return _ok(check.kind)
    parts = []
    if changed:
        first = changed[0]
        parts.append(
            f"modified: {', '.join(changed)} ({first}: expected {short(fixture[first])}, found {short(_read(root, first))})"
        )
    if deleted:
        parts.append(f"deleted: {', '.join(deleted)}")
    return _fail(check.kind, "; ".join(parts))


def no_extra_files(check: t.NoExtraFiles, root: Path, fixture: Fixture, answer: str) -> CheckOutcome:
    extra = [
        rel
        for rel in _workspace_files(root)
        if rel not in fixture and not any(glob_match(pattern, rel) for pattern in check.allowed)
    ]
    if not extra:
        return _ok(check.kind)
    allowed = f" (allowed: {', '.join(check.allowed)})" if check.allowed else ""
    return _fail(check.kind, f"unexpected new file(s): {cut(', '.join(extra), 120)}{allowed}")


# --- commands ---


def command_argv(argv: list[str]) -> list[str]:
    """`python` (or `python3`) as the program means the Python running localagent."""
    if argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return list(argv)


def _shown(argv: list[str]) -> str:
    """The command for a detail line: a multi-line script argument becomes its first line."""
    words = [arg.strip().splitlines()[0] + " …" if "\n" in arg.strip() else arg for arg in argv]
    return cut(" ".join(words), 80)


# --- confinement of command checks ---
#
# A task file is code: its command checks run what it says. They run with a scrubbed
# environment, no network, and the workspace (plus a scratch folder for HOME and TMPDIR) as the
# only writable places, in a process group killed whole when the command ends or times out.
# The mechanism is Linux namespaces through util-linux's `unshare` (user, network, mount and
# pid; bubblewrap is not installed by default): inside, a small Python helper bind-mounts the
# two writable folders onto themselves, remounts every other mount read-only, and execs the
# command. The kernel kills whatever is left in the pid namespace when the command exits.

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
    found = Confinement("unshare", "unshare: user, network, mount and pid namespaces; read-only outside the workspace", unshare)
    with tempfile.TemporaryDirectory(prefix="localagent-probe-") as tmp:
        ws, scratch = os.path.join(tmp, "ws"), os.path.join(tmp, "scratch")
        os.mkdir(ws), os.mkdir(scratch)
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


def _tail(stream: Any) -> str:
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


def command(check: t.Command, root: Path, fixture: Fixture, answer: str, *, allow_unconfined: bool = False) -> CheckOutcome:
    found = require_confinement(allow_unconfined)
    how = f" [confined: {found.mechanism}]" if found.mechanism else " [unconfined]"
    shown = _shown(check.argv)
    with tempfile.TemporaryDirectory(prefix="localagent-check-") as scratch, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        workspace = os.path.realpath(root)
        scratch = os.path.realpath(scratch)
        try:
            proc = subprocess.Popen(
                found.wrap(command_argv(check.argv), workspace, scratch),
                cwd=workspace,
                env=_check_env(scratch),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except OSError as exc:
            return _fail(check.kind, f"`{shown}` could not start: {exc.strerror}{how}")
        try:
            code: int | None = proc.wait(timeout=check.timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            # background processes too, whether it timed out or not
            _kill_group(proc)
        if code is None:
            return _fail(check.kind, f"`{shown}` timed out after {check.timeout_s:g}s{how}")
        if code == 0:
            return _ok(check.kind)
        last = _tail(err) or _tail(out)
    if last.startswith(_MARK):  # the helper: "could not start: …" or why it could not confine
        return _fail(check.kind, f"`{shown}` {last[len(_MARK):]}{how}")
    return _fail(check.kind, f"`{shown}` expected exit 0, found exit {code}: {short(last or '(no output)', 120)}{how}")


CHECKERS: dict[str, Callable[[Any, Path, Fixture, str], CheckOutcome]] = {
    "answer_contains": answer_contains,
    "answer_regex": answer_regex,
    "answer_excludes": answer_excludes,
    "file_exists": file_exists,
    "file_absent": file_absent,
    "file_equals": file_equals,
    "file_contains": file_contains,
    "file_json": file_json,
    "unchanged": unchanged,
    "no_extra_files": no_extra_files,
    "command": command,
}


def run_check(check: t.Check, workspace: Path, fixture: Fixture, answer: str, *, allow_unconfined: bool = False) -> CheckOutcome:
    """One check. A command check refuses (ConfigError) to run unconfined unless allowed."""
    if isinstance(check, t.Command):
        return command(check, Path(workspace), fixture, answer, allow_unconfined=allow_unconfined)
    return CHECKERS[check.kind](check, Path(workspace), fixture, answer)


def run_checks(task: Task, workspace: Path, answer: str, *, allow_unconfined: bool = False) -> list[CheckOutcome]:
    """Every check of `task` on `workspace` and `answer`, in the task's order (commands are
    run last)."""
    outcomes: dict[int, CheckOutcome] = {}
    order = sorted(range(len(task.checks)), key=lambda i: task.checks[i].kind == "command")
    for i in order:
        outcomes[i] = run_check(task.checks[i], workspace, task.files, answer, allow_unconfined=allow_unconfined)
    return [outcomes[i] for i in range(len(task.checks))]
