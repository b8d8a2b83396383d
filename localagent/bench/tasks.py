"""Benchmark tasks: TOML files (benchmarks/tasks/FORMAT.md) loaded into validated pydantic models.

Users write their own task files, so every error names the file, the task, the field and,
where it can be found, the line. `make_workspace` turns a task's [files] into a fresh folder.
The check kinds a task holds are declared in bench/checks.py, each with its judge.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from localagent.bench.checks import CHECK_KINDS, KINDS, Check, Unchanged
from localagent.bench.paths import glob_match, relative_path
from localagent.bench.tasklines import field_name, line_of, syntax_line
from localagent.errors import TaskFileError
from localagent.strict import Strict
from localagent.tools import TOOLS, InvalidToolCall

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOOL_NAMES = tuple(tool.name for tool in TOOLS)


class SolutionStep(Strict):
    """One step of a reference solution: a tool call (`tool` + `arguments`) or, last, the
    final `answer`. Validated here only: the oracle (engines/scripted.py) replays it as it is."""

    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    answer: str | None = None

    @field_validator("tool")
    @classmethod
    def _known_tool(cls, v: str | None) -> str | None:
        if v is not None and v not in TOOL_NAMES:
            raise ValueError(f"unknown tool '{v}'{_did_you_mean(v, TOOL_NAMES)}; tools: {', '.join(TOOL_NAMES)}")
        return v

    @field_validator("arguments")
    @classmethod
    def _fit_the_tool(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        tool = next((t for t in TOOLS if t.name == info.data.get("tool")), None)
        if tool is not None:
            try:
                tool.parse_arguments(v)
            except InvalidToolCall as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _one_of(self) -> SolutionStep:
        if (self.tool is None) == (self.answer is None):
            raise ValueError("a step has either 'tool' (with 'arguments') or 'answer', not both or neither")
        if self.answer is not None and self.arguments:
            raise ValueError("an 'answer' step takes no 'arguments'")
        return self


class Task(Strict):
    id: str = Field(description="kebab-case, unique in the suite")
    title: str = Field(min_length=1)
    tier: int = Field(ge=1, le=4)
    tags: list[str] = Field(default_factory=list)
    max_steps: int | None = Field(default=None, gt=0)
    prompt: str = Field(min_length=1)
    files: dict[Annotated[str, AfterValidator(relative_path)], str] = Field(
        default_factory=dict, description="the workspace before the run"
    )
    checks: list[Check] = Field(min_length=1)
    solution: list[SolutionStep] = Field(min_length=1)
    source: Path = Field(description="the task file")
    sha256: str = Field(description="of the task file's bytes: results compare only on equal versions")

    @field_validator("id")
    @classmethod
    def _kebab_case(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", v):
            raise ValueError(f"'{v}' is not kebab-case (lowercase letters and digits joined by '-', e.g. 'sum-csv')")
        return v

    @field_validator("solution")
    @classmethod
    def _ends_with_answer(cls, v: list[SolutionStep]) -> list[SolutionStep]:
        answers = [i for i, step in enumerate(v) if step.answer is not None]
        if answers != [len(v) - 1]:
            raise ValueError(
                "the solution must end with exactly one [[solution]] step holding 'answer' (and only the last step)"
            )
        return v

    @property
    def tool_steps(self) -> list[SolutionStep]:
        return [step for step in self.solution if step.tool is not None]

    @property
    def answer(self) -> str:
        """The reference solution's final answer."""
        return self.solution[-1].answer or ""


FILE_KEYS = set(Task.model_fields) - {"source", "sha256"}


Located = tuple[tuple[str | int, ...], str]  # (pydantic-style location, problem)


def _inconsistencies(task: Task) -> list[Located]:
    """What no single field can see wrong."""
    out: list[Located] = []
    # one model call per solution step: fewer steps allowed means even the oracle fails
    if task.max_steps is not None and len(task.solution) > task.max_steps:
        out.append(
            (("max_steps",), f"{task.max_steps} is below the {len(task.solution)} steps of the reference solution")
        )
    for path in task.files:
        folders = {"/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 1)}
        clash = sorted(folders & set(task.files))
        if clash:
            out.append((("files", path), f"'{clash[0]}' cannot be both a file and the folder of '{path}'"))
    for i, check in enumerate(task.checks):
        if isinstance(check, Unchanged):
            for pattern in check.paths:
                if not any(glob_match(pattern, path) for path in task.files):
                    out.append((("checks", i, "paths"), f"the glob '{pattern}' matches no file in [files]"))
    return out


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _located(err: ErrorDetails) -> Located:
    """A pydantic error as (location, message) in the words of the task format."""
    loc = tuple(err["loc"])
    if err["type"] == "union_tag_invalid" and loc and loc[0] == "checks":
        kind = str(err.get("ctx", {}).get("tag"))
        return loc + (
            "kind",
        ), f"unknown check kind '{kind}'{_did_you_mean(kind, CHECK_KINDS)}; kinds: {', '.join(CHECK_KINDS)}"
    if err["type"] == "union_tag_not_found":
        return loc, f"a check needs a 'kind' ({', '.join(CHECK_KINDS)})"
    if err["type"] == "extra_forbidden":
        name = str(loc[-1])
        return loc, f"unknown field '{name}'{_did_you_mean(name, _known_fields(loc))}"
    return loc, err["msg"].removeprefix("Value error, ")


def _known_fields(loc: Sequence[str | int]) -> list[str]:
    if len(loc) == 1:
        return sorted(FILE_KEYS)
    if loc[0] == "solution":
        return list(SolutionStep.model_fields)
    if loc[0] == "checks" and len(loc) > 2 and loc[2] in KINDS:
        return list(KINDS[loc[2]].model.model_fields)
    return []


def format_hint() -> str:
    """Where the task format is described: FORMAT.md beside the shipped suite."""
    try:
        return f"the task format is described in {default_tasks_dir() / 'FORMAT.md'}"
    except TaskFileError:
        return "the task format is described in benchmarks/tasks/FORMAT.md"


def load_task_file(path: Path) -> Task:
    """One task file, validated. Raises TaskFileError naming file, task, field and line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TaskFileError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TaskFileError(
            f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start})",
            hint="TOML files are UTF-8: save the file in that encoding",
        ) from exc
    try:
        data = tomllib.loads(text)
    except RecursionError:
        # tomllib parses nested arrays and inline tables by recursion: a few thousand levels
        # exhaust the interpreter's stack, which is no TOMLDecodeError
        raise TaskFileError(f"{path}: not valid TOML: values nested too deeply to read", hint=format_hint()) from None
    except tomllib.TOMLDecodeError as exc:
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise TaskFileError(
            f"{path}{syntax_line(exc)}: not valid TOML: {message}",
            hint=format_hint(),
        ) from exc
    given_id = data.get("id")
    task_id = given_id if isinstance(given_id, str) else path.stem
    for reserved in ("source", "sha256"):
        if reserved in data:
            reserved_line = line_of(text, [reserved])
            where = f"{path}:{reserved_line}" if reserved_line else str(path)
            raise TaskFileError(
                f"{where}: task '{task_id}', field '{reserved}': set by the loader, not in the file",
                hint=f"remove '{reserved}'",
            )
    try:
        task = Task(**data, source=path.resolve(), sha256=hashlib.sha256(raw).hexdigest())
    except ValidationError as exc:
        # an unknown field first: a typo also makes the intended field "missing"
        errors = sorted(exc.errors(), key=lambda err: err["type"] != "extra_forbidden")
        raise _task_error(path, text, task_id, [_located(err) for err in errors]) from exc
    problems = _inconsistencies(task)
    if problems:
        raise _task_error(path, text, task_id, problems)
    return task


def _task_error(path: Path, text: str, task_id: str, errors: Sequence[Located]) -> TaskFileError:
    """The first error, located; the count of the others in the hint."""
    loc, message = errors[0]
    line = line_of(text, loc)
    where = f"{path}:{line}" if line else str(path)
    more = len(errors) - 1
    return TaskFileError(
        f"{where}: task '{task_id}', field '{field_name(loc)}': {message}",
        hint=(f"{more} more error(s) in this file; " if more else "") + format_hint(),
    )


def default_tasks_dir() -> Path:
    """The shipped suite: inside an installed wheel, else benchmarks/tasks in a checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "data" / "tasks", package.parent / "benchmarks" / "tasks"):
        if candidate.is_dir():
            return candidate
    raise TaskFileError("the shipped task suite is missing", hint="reinstall localagent, or pass --tasks DIR")


def load_tasks(directory: Path | None = None, *, ids: Sequence[str] = (), tier: int | None = None) -> list[Task]:
    """Every *.toml under `directory` (a folder, searched recursively, or one file), sorted by
    (tier, id), optionally narrowed to `ids` and/or one `tier`."""
    root = Path(directory) if directory is not None else default_tasks_dir()
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(root.rglob("*.toml"))
    else:
        raise TaskFileError(f"{root}: no such folder", hint="pass --tasks a folder of *.toml task files")
    if not files:
        raise TaskFileError(f"{root}: no *.toml task files", hint=format_hint())
    tasks: dict[str, Task] = {}
    for file in files:
        task = load_task_file(file)
        if task.id in tasks:
            raise TaskFileError(
                f"{file}: task id '{task.id}' is already used by {tasks[task.id].source}",
                hint="task ids must be unique in a suite",
            )
        tasks[task.id] = task
    for wanted in ids:
        if wanted not in tasks:
            close = difflib.get_close_matches(wanted, list(tasks), n=3, cutoff=0.5)
            hint = (
                "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
                if close
                else f"task ids in {root}: {', '.join(sorted(tasks))}"
            )
            raise TaskFileError(f"no task '{wanted}' in {root}", hint=hint)
    selected = [t for t in tasks.values() if (not ids or t.id in ids) and (tier is None or t.tier == tier)]
    if not selected:
        raise TaskFileError(
            f"no task in {root} matches"
            + (f" tier {tier}" if tier is not None else "")
            + (f" ids {', '.join(ids)}" if ids else ""),
            hint="tiers go from 1 to 4",
        )
    return sorted(selected, key=lambda t: (t.tier, t.id))


def make_workspace(task: Task, root: Path) -> Path:
    """Write the task's fixture files into `root` (created; it must be empty) and return it.

    Files are written as UTF-8 bytes with the newlines exactly as in the task file, so
    'unchanged' checks compare against the same bytes."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"workspace {root} is not empty")
    for rel, content in task.files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode("utf-8"))
    return root.resolve()
