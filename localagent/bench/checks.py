"""The check kinds of a task file, each declared once as one unit: its pydantic model (the
fields of a [[checks]] table), its judge (a pure function of the check, the workspace, the
fixture files and the final answer, giving a CheckResult) and the failure it stands for.
`@check_kind` registers the three together; the `Check` union the task loader validates
with, the kinds its errors name, `run_checks` and `classify_failure` are all read from that
registry, so a new kind is one model and one decorated function in this file.

Command checks run after every other check, so what a command writes (a test's cache, an
output file) never counts against the model in `no_extra_files` or `unchanged`. The paths and
globs the checks take are bench/paths.py's; how commands are confined and run, bench/confine.py's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union, get_args

from pydantic import Field, field_validator

from localagent.bench.confine import require_confinement, run_confined
from localagent.bench.paths import glob_match, glob_regex, relative_path
from localagent.bench.schema import CheckResult, FailureMode, TrialStopReason
from localagent.errors import ToolError
from localagent.strict import Strict
from localagent.tools import compile_regex

if TYPE_CHECKING:
    from localagent.bench.tasks import Task


# --- a check kind: its model, its judge and its failure, declared together ---


class CheckModel(Strict):
    """The fields of one [[checks]] table: a subclass per kind, picked by its `kind` literal.
    Strict: a typo in a task file's field fails its load, naming the field."""

    kind: str


# What a failed check makes of a trial, in precedence when several fail: the task's goal
# first (the workspace's new state), then what should not have changed, then the answer.
CheckFailure = Literal["wrong_state", "collateral_change", "wrong_answer"]
_PRECEDENCE: tuple[CheckFailure, ...] = get_args(CheckFailure)

Fixture = Mapping[str, str]  # the task's [files]: path -> text, as the workspace began


@dataclass(frozen=True)
class CheckKind:
    model: type[CheckModel]
    judge: Callable[..., CheckResult]  # (check, workspace root, fixture, answer) -> CheckResult
    failure: CheckFailure


# every kind, in the order declared below (the order the task loader's errors list them)
KINDS: dict[str, CheckKind] = {}

_Judge = TypeVar("_Judge", bound=Callable[..., CheckResult])


def check_kind(model: type[CheckModel], *, failure: CheckFailure) -> Callable[[_Judge], _Judge]:
    """Register the decorated function as the judge of the kind `model` declares (the value of
    its `kind` literal), which fails a trial as `failure`."""
    (kind,) = get_args(model.model_fields["kind"].annotation)

    def register(judge: _Judge) -> _Judge:
        if kind in KINDS:  # two declarations would silently replace one another
            raise RuntimeError(f"check kind '{kind}' is declared twice")
        KINDS[kind] = CheckKind(model, judge, failure)
        return judge

    return register


_SHORT = 60


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


def _ok(kind: str) -> CheckResult:
    return CheckResult(kind=kind, passed=True)


def _fail(kind: str, detail: str) -> CheckResult:
    return CheckResult(kind=kind, passed=False, detail=detail)


def _missing(kind: str, root: Path, rel: str) -> CheckResult:
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


# --- answer checks: a failed one is a wrong answer ---


class _AnswerText(CheckModel):
    text: str = Field(min_length=1)
    ignore_case: bool = False

    def in_answer(self, answer: str) -> bool:
        if self.ignore_case:
            return self.text.casefold() in answer.casefold()
        return self.text in answer


class AnswerContains(_AnswerText):
    kind: Literal["answer_contains"]


@check_kind(AnswerContains, failure="wrong_answer")
def answer_contains(check: AnswerContains, root: Path, fixture: Fixture, answer: str) -> CheckResult:
    if check.in_answer(answer):
        return _ok(check.kind)
    return _fail(check.kind, f"expected the answer to contain {short(check.text)}, found {short(answer)}")


class AnswerRegex(CheckModel):
    kind: Literal["answer_regex"]
    pattern: str = Field(min_length=1)
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            compile_regex(v)
        except ToolError as exc:
            raise ValueError(
                str(exc).replace("invalid regular expression", "not a valid regular expression", 1)
            ) from None
        return v

    @staticmethod
    def compiled(pattern: str, ignore_case: bool) -> Any:
        """The pattern in RE2 (linear time: a catastrophic pattern against a model's answer
        hung a bench with Python's re), multi-line as the format says."""
        return compile_regex(("(?mi)" if ignore_case else "(?m)") + pattern)


@check_kind(AnswerRegex, failure="wrong_answer")
def answer_regex(check: AnswerRegex, root: Path, fixture: Fixture, answer: str) -> CheckResult:
    if AnswerRegex.compiled(check.pattern, check.ignore_case).search(answer):
        return _ok(check.kind)
    return _fail(check.kind, f"expected the answer to match /{check.pattern}/, found {short(answer)}")


class AnswerExcludes(_AnswerText):
    kind: Literal["answer_excludes"]


@check_kind(AnswerExcludes, failure="wrong_answer")
def answer_excludes(check: AnswerExcludes, root: Path, fixture: Fixture, answer: str) -> CheckResult:
    if not check.in_answer(answer):
        return _ok(check.kind)
    return _fail(check.kind, f"expected the answer not to contain {short(check.text)}, found {short(answer)}")


# --- file checks: a failed one is a wrong state of the workspace ---


class _PathCheck(CheckModel):
    path: str

    check_path = field_validator("path")(relative_path)


class FileExists(_PathCheck):
    kind: Literal["file_exists"]


@check_kind(FileExists, failure="wrong_state")
def file_exists(check: FileExists, root: Path, fixture: Fixture, answer: str) -> CheckResult:
    if (root / check.path).exists():
        return _ok(check.kind)
    return _fail(check.kind, f"expected {check.path} to exist, found nothing")


class FileAbsent(_PathCheck):
    kind: Literal["file_absent"]


@check_kind(FileAbsent, failure="wrong_state")
def file_absent(check: FileAbsent, root: Path, fixture: Fixture, answer: str) -> CheckResult:
    path = root / check.path
    if not path.exists() and not path.is_symlink():
        return _ok(check.kind)
    return _fail(check.kind, f"expected {check.path} to be absent, found {'a folder' if path.is_dir() else 'a file'}")


def _normalize(text: str) -> list[str]:
    """Lines without trailing whitespace (so '\\r\\n' and a final newline do not matter)."""
    return [line.rstrip() for line in text.rstrip().split("\n")]


class FileEquals(_PathCheck):
    kind: Literal["file_equals"]
    text: str


@check_kind(FileEquals, failure="wrong_state")
def file_equals(check: FileEquals, root: Path, fixture: Fixture, answer: str) -> CheckResult:
    found = _read(root, check.path)
    if found is None:
        return _missing(check.kind, root, check.path)
    want, got = _normalize(check.text), _normalize(found)
    if want == got:
        return _ok(check.kind)
    for n, (a, b) in enumerate(zip(want, got, strict=False), start=1):
        if a != b:
            return _fail(check.kind, f"{check.path} line {n}: expected {short(a)}, found {short(b)}")
    n = min(len(want), len(got)) + 1
    if len(want) > len(got):
        return _fail(check.kind, f"{check.path} line {n}: expected {short(want[n - 1])}, found the end of the file")
    return _fail(check.kind, f"{check.path} line {n}: expected the end of the file, found {short(got[n - 1])}")


class FileContains(_PathCheck):
    kind: Literal["file_contains"]
    text: str = Field(min_length=1)


@check_kind(FileContains, failure="wrong_state")
def file_contains(check: FileContains, root: Path, fixture: Fixture, answer: str) -> CheckResult:
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
        for i, (a, b) in enumerate(zip(expect, found, strict=False)):
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


class FileJson(_PathCheck):
    kind: Literal["file_json"]
    expect: Any
    exact: bool = False
    unordered: bool = False


@check_kind(FileJson, failure="wrong_state")
def file_json(check: FileJson, root: Path, fixture: Fixture, answer: str) -> CheckResult:
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


# --- collateral checks: a failed one is a change the task did not ask for ---


def _globs(v: list[str]) -> list[str]:
    for pattern in v:
        relative_path(pattern)
        glob_regex(pattern)  # compiled at load: a glob that cannot be is the file's error, with its line
    return v


class Unchanged(CheckModel):
    kind: Literal["unchanged"]
    paths: list[str] = Field(min_length=1)

    check_globs = field_validator("paths")(_globs)


@check_kind(Unchanged, failure="collateral_change")
def unchanged(check: Unchanged, root: Path, fixture: Fixture, answer: str) -> CheckResult:
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


class NoExtraFiles(CheckModel):
    kind: Literal["no_extra_files"]
    allowed: list[str] = Field(default_factory=list)

    check_globs = field_validator("allowed")(_globs)


@check_kind(NoExtraFiles, failure="collateral_change")
def no_extra_files(check: NoExtraFiles, root: Path, fixture: Fixture, answer: str) -> CheckResult:
    extra = [
        rel
        for rel in _workspace_files(root)
        if rel not in fixture and not any(glob_match(pattern, rel) for pattern in check.allowed)
    ]
    if not extra:
        return _ok(check.kind)
    allowed = f" (allowed: {', '.join(check.allowed)})" if check.allowed else ""
    return _fail(check.kind, f"unexpected new file(s): {cut(', '.join(extra), 120)}{allowed}")


# --- commands: a failed one is a wrong state of the workspace ---


class Command(CheckModel):
    kind: Literal["command"]
    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=60.0, gt=0)


def command_argv(argv: list[str]) -> list[str]:
    """`python` (or `python3`) as the program means the Python running localagent."""
    if argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return list(argv)


def _shown(argv: list[str]) -> str:
    """The command for a detail line: a multi-line script argument becomes its first line."""
    words = [arg.strip().splitlines()[0] + " …" if "\n" in arg.strip() else arg for arg in argv]
    return cut(" ".join(words), 80)


@check_kind(Command, failure="wrong_state")
def command(
    check: Command, root: Path, fixture: Fixture, answer: str, *, allow_unconfined: bool = False
) -> CheckResult:
    found = require_confinement(allow_unconfined)
    how = f" [confined: {found.mechanism}]" if found.mechanism else " [unconfined]"
    shown = _shown(check.argv)
    ran = run_confined(command_argv(check.argv), root, check.timeout_s, found)
    if ran.not_started is not None:
        return _fail(check.kind, f"`{shown}` could not start: {ran.not_started}{how}")
    if ran.code is None:
        return _fail(check.kind, f"`{shown}` timed out after {check.timeout_s:g}s{how}")
    if ran.code == 0:
        return _ok(check.kind)
    if ran.helper:
        return _fail(check.kind, f"`{shown}` {ran.helper}{how}")
    return _fail(
        check.kind, f"`{shown}` expected exit 0, found exit {ran.code}: {short(ran.last or '(no output)', 120)}{how}"
    )


# --- the registry, read ---

CHECK_KINDS = tuple(KINDS)
# views by kind, for callers that ask about one property of every kind
CHECKERS = {kind: k.judge for kind, k in KINDS.items()}
ANSWER_KINDS = frozenset(kind for kind, k in KINDS.items() if k.failure == "wrong_answer")
COLLATERAL_KINDS = frozenset(kind for kind, k in KINDS.items() if k.failure == "collateral_change")

if TYPE_CHECKING:
    Check = CheckModel  # a type checker sees the base class; narrow with isinstance
else:
    # one [[checks]] table: pydantic picks the model by `kind`, and names the kind in its errors
    Check = Annotated[Union[tuple(k.model for k in KINDS.values())], Field(discriminator="kind")]


def run_check(
    check: Check, workspace: Path, fixture: Fixture, answer: str, *, allow_unconfined: bool = False
) -> CheckResult:
    """One check. A command check refuses (ConfigError) to run unconfined unless allowed."""
    if isinstance(check, Command):
        return command(check, Path(workspace), fixture, answer, allow_unconfined=allow_unconfined)
    return KINDS[check.kind].judge(check, Path(workspace), fixture, answer)


def run_checks(task: Task, workspace: Path, answer: str, *, allow_unconfined: bool = False) -> list[CheckResult]:
    """Every check of `task` on `workspace` and `answer`, in the task's order (commands are
    run last)."""
    outcomes: dict[int, CheckResult] = {}
    order = sorted(range(len(task.checks)), key=lambda i: task.checks[i].kind == "command")
    for i in order:
        outcomes[i] = run_check(task.checks[i], workspace, task.files, answer, allow_unconfined=allow_unconfined)
    return [outcomes[i] for i in range(len(task.checks))]


# --- what a trial's stop and checks make of it ---

# stop reasons that decide the failure mode whatever the checks say
_STOP_FAILURES: dict[str, FailureMode] = {
    "max_steps": "max_steps",
    "timeout": "timeout",
    "context_overflow": "context_overflow",
    "repeated_invalid_call": "malformed_tool_call",
    "engine_error": "runtime_error",
    "api_error": "api_error",
    "unfinished_thinking": "unfinished_thinking",
    "repetition": "repetition",  # a looping reply's text is no answer, whatever the checks find in it
    "runtime_error": "runtime_error",  # the harness failed: its checks may not have run
}


def classify_failure(stop_reason: TrialStopReason, checks: Iterable[CheckResult]) -> FailureMode | None:
    """Why a trial failed, or None when it succeeded.

    A trial succeeds only when the agent ended with an answer and every check holds. A stop
    other than an answer names the failure itself; otherwise each failed check names the
    failure its kind declares, the task's goal first: the workspace's state (wrong_state),
    then things that should not have changed (collateral_change), then the answer
    (wrong_answer). A run that gave up on a repeating failing call has no answer and is
    judged by its checks like any other.
    """
    if stop_reason in _STOP_FAILURES:
        return _STOP_FAILURES[stop_reason]
    failed = {KINDS[c.kind].failure for c in checks if not c.passed}
    for failure in _PRECEDENCE:
        if failure in failed:
            return failure
    return None if stop_reason == "answer" else "wrong_answer"
