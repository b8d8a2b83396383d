"""Task files: loading, selection, fixtures, and errors that name file, task, field and line."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from localagent.bench.checks import CHECK_KINDS
from localagent.bench.paths import glob_match
from localagent.bench.tasks import (
    TOOL_NAMES,
    default_tasks_dir,
    line_of,
    load_task_file,
    load_tasks,
    make_workspace,
)
from localagent.errors import TaskFileError

VALID = """\
id = "demo-task"
title = "A demo"
tier = 1
tags = ["read"]
max_steps = 5
prompt = "What is in a.txt?"

[files]
"a.txt" = "hello\\n"
"data/b.csv" = "x,y\\n1,2\\n"

[[checks]]
kind = "answer_contains"
text = "hello"

[[checks]]
kind = "unchanged"
paths = ["data/**"]

[[solution]]
tool = "read_file"
arguments = { path = "a.txt" }

[[solution]]
answer = "It says hello."
"""


def write(tmp_path: Path, text: str, name: str = "task.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_number(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line that contains `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


# --- the shipped suite ---


def test_shipped_suite_loads_with_every_tier_and_unique_ids():
    tasks = load_tasks()
    assert len(tasks) >= 24
    assert {t.tier for t in tasks} == {1, 2, 3, 4}
    assert len({t.id for t in tasks}) == len(tasks)
    assert [(t.tier, t.id) for t in tasks] == sorted((t.tier, t.id) for t in tasks)
    assert default_tasks_dir() == Path(__file__).resolve().parent.parent / "benchmarks" / "tasks"
    for task in tasks:
        assert task.source.parent == default_tasks_dir()
        assert task.sha256 == hashlib.sha256(task.source.read_bytes()).hexdigest()
        assert task.solution[-1].answer is not None
        assert all(step.tool in TOOL_NAMES for step in task.tool_steps)


def test_quick_subset_is_a_handful_of_easy_tasks():
    quick = [t for t in load_tasks() if "quick" in t.tags]
    assert 4 <= len(quick) <= 8
    assert {t.tier for t in quick} <= {1, 2}


def test_suite_uses_every_tool_and_the_main_check_kinds():
    tasks = load_tasks()
    used_tools = {step.tool for t in tasks for step in t.tool_steps}
    assert used_tools == set(TOOL_NAMES)
    used_kinds = {c.kind for t in tasks for c in t.checks}
    assert used_kinds >= set(CHECK_KINDS) - {"file_exists", "file_absent"}


def test_select_by_id_and_tier():
    picked = load_tasks(ids=["write-hello", "sum-csv"])
    assert [t.id for t in picked] == ["write-hello", "sum-csv"]
    tier4 = load_tasks(tier=4)
    assert tier4 and all(t.tier == 4 for t in tier4)
    assert [t.id for t in load_tasks(ids=["sum-csv"], tier=2)] == ["sum-csv"]


def test_unknown_task_id_suggests_close_ids():
    with pytest.raises(TaskFileError) as info:
        load_tasks(ids=["read-versoin"])
    assert "no task 'read-versoin'" in info.value.message
    assert "read-version" in info.value.hint


def test_selection_that_matches_nothing_is_an_error():
    with pytest.raises(TaskFileError, match="tier 4"):
        load_tasks(ids=["write-hello"], tier=4)


def test_single_file_and_missing_or_empty_folder(tmp_path):
    path = write(tmp_path, VALID)
    assert [t.id for t in load_tasks(path)] == ["demo-task"]
    with pytest.raises(TaskFileError, match="no such folder"):
        load_tasks(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskFileError, match=r"no \*\.toml task files"):
        load_tasks(tmp_path / "empty")


def test_make_workspace_writes_the_fixture_bytes(tmp_path):
    task = load_task_file(write(tmp_path, VALID))
    root = make_workspace(task, tmp_path / "runs" / "ws")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["a.txt", "data/b.csv"]
    assert (root / "data" / "b.csv").read_bytes() == b"x,y\n1,2\n"
    with pytest.raises(FileExistsError):
        make_workspace(task, root)


def test_solution_steps_are_what_the_oracle_replays(tmp_path):
    task = load_task_file(write(tmp_path, VALID))
    assert [(step.tool, step.arguments, step.answer) for step in task.solution] == [
        ("read_file", {"path": "a.txt"}, None),
        (None, {}, "It says hello."),
    ]
    assert task.answer == "It says hello."


@pytest.mark.parametrize(
    "pattern, path, matches",
    [
        ("data/**", "data/a.csv", True),
        ("data/**", "data/x/y.csv", True),
        ("data/**", "other/a.csv", False),
        ("data/*", "data/x/y.csv", False),
        ("*.py", "a.py", True),
        ("*.py", "pkg/a.py", False),
        ("**/*.py", "a.py", True),
        ("**/*.py", "pkg/sub/a.py", True),
        ("**", "any/thing", True),
        ("q?.csv", "q1.csv", True),
        ("q?.csv", "q10.csv", False),
        ("[!a]*.txt", "b.txt", True),
        ("[!a]*.txt", "a.txt", False),
        ("a.txt", "a.txt", True),
        ("a.txt", "a_txt", False),
    ],
)
def test_glob_match(pattern, path, matches):
    assert glob_match(pattern, path) is matches


# --- errors: each names the file, the task, the field and the line ---


def edit(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new, 1)


ERROR_CASES = [
    # (id, task text, the field named, what the message says, the text on the reported line)
    ("bad-tier", edit("tier = 1", "tier = 7"), "tier", "less than or equal to 4", "tier = 7"),
    ("bad-id", edit('id = "demo-task"', 'id = "Demo Task"'), "id", "is not kebab-case", 'id = "Demo Task"'),
    ("typo-top-level", edit('prompt = "', 'promt = "'), "promt", "did you mean 'prompt'", "promt ="),
    (
        "typo-check-field",
        edit('text = "hello"', 'txt = "hello"'),
        "checks[0].txt",
        "did you mean 'text'",
        'txt = "hello"',
    ),
    (
        "unknown-kind",
        edit('kind = "unchanged"', 'kind = "unchanged_files"'),
        "checks[1].kind",
        "unknown check kind 'unchanged_files' (did you mean 'unchanged'?)",
        'kind = "unchanged_files"',
    ),
    ("missing-kind", edit('kind = "answer_contains"\n', ""), "checks[0]", "a check needs a 'kind'", "[[checks]]"),
    (
        "unknown-tool",
        edit('tool = "read_file"', 'tool = "read_fil"'),
        "solution[0].tool",
        "unknown tool 'read_fil' (did you mean 'read_file'?)",
        'tool = "read_fil"',
    ),
    (
        "bad-tool-arguments",
        edit('arguments = { path = "a.txt" }', 'arguments = { pth = "a.txt" }'),
        "solution[0].arguments",
        "missing required argument 'path'; unknown argument 'pth'. Expected read_file(path: string",
        "arguments = { pth",
    ),
    (
        "no-answer",
        edit('[[solution]]\nanswer = "It says hello."\n', ""),
        "solution",
        "must end with exactly one [[solution]] step holding 'answer'",
        "[[solution]]",
    ),
    (
        # the oracle replays steps as they are: an answer before the last step is refused here
        "answer-not-last",
        edit('[[solution]]\ntool = "read_file"', '[[solution]]\nanswer = "early"\n\n[[solution]]\ntool = "read_file"'),
        "solution",
        "must end with exactly one [[solution]] step holding 'answer' (and only the last step)",
        "[[solution]]",
    ),
    (
        "tool-and-answer",
        edit('arguments = { path = "a.txt" }', 'arguments = { path = "a.txt" }\nanswer = "x"'),
        "solution[0]",
        "either 'tool'",
        "[[solution]]",
    ),
    (
        "bad-regex",
        edit('kind = "answer_contains"\ntext = "hello"', 'kind = "answer_regex"\npattern = "(unclosed"'),
        "checks[0].pattern",
        "not a valid regular expression",
        'pattern = "(unclosed"',
    ),
    (
        "escaping-path",
        edit('"a.txt" = "hello\\n"', '"../a.txt" = "hello\\n"'),
        'files."../a.txt"',
        "inside the workspace",
        '"../a.txt" =',
    ),
    (
        "absolute-check-path",
        edit('kind = "answer_contains"\ntext = "hello"', 'kind = "file_exists"\npath = "/etc/passwd"'),
        "checks[0].path",
        "relative to the workspace",
        'path = "/etc/passwd"',
    ),
    (
        "glob-matches-nothing",
        edit('paths = ["data/**"]', 'paths = ["dta/**"]'),
        "checks[1].paths",
        "'dta/**' matches no file",
        'paths = ["dta/**"]',
    ),
    (
        "file-and-folder",
        edit('"a.txt" = "hello\\n"', '"a.txt" = "hello\\n"\n"a.txt/b" = "x"'),
        'files."a.txt/b"',
        "both a file and the folder",
        '"a.txt/b" =',
    ),
    ("too-few-steps", edit("max_steps = 5", "max_steps = 1"), "max_steps", "below the 2 steps", "max_steps = 1"),
    (
        "reserved-field",
        edit('tags = ["read"]', 'tags = ["read"]\nsha256 = "abc"'),
        "sha256",
        "set by the loader",
        'sha256 = "abc"',
    ),
    ("wrong-type", edit('tags = ["read"]', 'tags = "read"'), "tags", "valid list", 'tags = "read"'),
]


@pytest.mark.parametrize("name, text, field, message, line_text", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_task_file_errors_name_file_task_field_and_line(tmp_path, name, text, field, message, line_text):
    path = write(tmp_path, text)
    with pytest.raises(TaskFileError) as info:
        load_task_file(path)
    got = info.value.message
    task_id = "Demo Task" if name == "bad-id" else "demo-task"
    expected_line = line_number(text, line_text)
    assert got.startswith(f"{path}:{expected_line}: task '{task_id}', field '{field}': "), got
    assert message in got
    assert info.value.hint


def test_missing_field_names_it_without_a_line(tmp_path):
    path = write(tmp_path, edit('prompt = "What is in a.txt?"\n', ""))
    with pytest.raises(TaskFileError) as info:
        load_task_file(path)
    assert info.value.message == f"{path}: task 'demo-task', field 'prompt': Field required"


def test_toml_syntax_error_names_line_and_column(tmp_path):
    text = edit('title = "A demo"', 'title = "A demo')
    path = write(tmp_path, text)
    with pytest.raises(TaskFileError) as info:
        load_task_file(path)
    assert re.match(rf"{re.escape(str(path))}:2:\d+: not valid TOML: ", info.value.message), info.value.message


def test_several_errors_are_counted_in_the_hint(tmp_path):
    path = write(tmp_path, edit("tier = 1", "tier = 0").replace('title = "A demo"', "title = 3"))
    with pytest.raises(TaskFileError) as info:
        load_task_file(path)
    assert "1 more error(s)" in info.value.hint


def test_duplicate_ids_across_files_name_both(tmp_path):
    first = write(tmp_path, VALID, "a.toml")
    second = write(tmp_path, VALID, "b.toml")
    with pytest.raises(TaskFileError) as info:
        load_tasks(tmp_path)
    assert str(second) in info.value.message and str(first.resolve()) in info.value.message
    assert "'demo-task' is already used" in info.value.message


def test_not_utf8_is_an_error(tmp_path):
    path = tmp_path / "task.toml"
    path.write_bytes(VALID.encode("utf-8") + b"\xff\xfe")
    with pytest.raises(TaskFileError, match="not UTF-8"):
        load_task_file(path)


def test_line_of_finds_inline_and_nested_locations():
    text = VALID
    assert line_of(text, ("tier",)) == line_number(text, "tier = 1")
    assert line_of(text, ("checks", 1, "unchanged", "paths")) == line_number(text, "paths = ")
    assert line_of(text, ("solution", 1)) == line_number(text, "[[solution]]", 2)
    assert line_of(text, ("files", "data/b.csv")) == line_number(text, '"data/b.csv"')
    assert line_of(text, ("nowhere",)) is None
