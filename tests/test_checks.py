"""Every check kind, passing and failing, on hand-made workspaces."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from localagent.bench.checks import (
    ANSWER_KINDS,
    CHECK_KINDS,
    CHECKERS,
    COLLATERAL_KINDS,
    Check,
    classify_failure,
    json_mismatch,
    run_check,
    run_checks,
)
from localagent.bench.schema import CheckResult
from localagent.bench.tasks import load_task_file, make_workspace

CHECK = TypeAdapter(Check)

FIXTURE = {
    "a.txt": "alpha\nbeta\n",
    "data/x.csv": "id,n\n1,2\n",
    "data/deep/y.csv": "id,n\n3,4\n",
    "conf.json": '{"name": "demo", "port": 8080, "tags": ["b", "a"], "db": {"host": "h", "pool": 5}, "debug": false}',
}

# (case id, check fields, changes to the fixture: path -> new text or None to delete, answer,
#  passes, a piece of the detail when it fails)
CASES: list[tuple[str, dict[str, Any], dict[str, str | None], str, bool, str]] = [
    ("contains", {"kind": "answer_contains", "text": "42"}, {}, "The answer is 42.", True, ""),
    (
        "contains-missing",
        {"kind": "answer_contains", "text": "42"},
        {},
        "I don't know.",
        False,
        "expected the answer to contain '42', found \"I don't know.\"",
    ),
    ("contains-case", {"kind": "answer_contains", "text": "Juniper"}, {}, "room juniper", False, "'Juniper'"),
    (
        "contains-ignore-case",
        {"kind": "answer_contains", "text": "Juniper", "ignore_case": True},
        {},
        "room JUNIPER",
        True,
        "",
    ),
    ("regex-multiline", {"kind": "answer_regex", "pattern": r"^total: \d+$"}, {}, "sum\ntotal: 42\nok", True, ""),
    ("regex-no-match", {"kind": "answer_regex", "pattern": r"\b42\b"}, {}, "4242", False, r"/\b42\b/"),
    (
        "regex-ignore-case",
        {"kind": "answer_regex", "pattern": r"\bfour\b", "ignore_case": True},
        {},
        "FOUR files",
        True,
        "",
    ),
    ("excludes", {"kind": "answer_excludes", "text": "utils.py"}, {}, "app.py and db.py", True, ""),
    (
        "excludes-present",
        {"kind": "answer_excludes", "text": "utils.py"},
        {},
        "app.py, utils.py",
        False,
        "not to contain 'utils.py'",
    ),
    (
        "excludes-ignore-case",
        {"kind": "answer_excludes", "text": "utils.py", "ignore_case": True},
        {},
        "UTILS.PY",
        False,
        "not to contain",
    ),
    ("exists", {"kind": "file_exists", "path": "out/r.txt"}, {"out/r.txt": "x"}, "", True, ""),
    ("exists-missing", {"kind": "file_exists", "path": "out/r.txt"}, {}, "", False, "expected out/r.txt to exist"),
    ("absent", {"kind": "file_absent", "path": "a.txt"}, {"a.txt": None}, "", True, ""),
    ("absent-file-there", {"kind": "file_absent", "path": "a.txt"}, {}, "", False, "found a file"),
    ("absent-folder-there", {"kind": "file_absent", "path": "data"}, {}, "", False, "found a folder"),
    ("equals", {"kind": "file_equals", "path": "a.txt", "text": "alpha\nbeta"}, {}, "", True, ""),
    (
        "equals-trailing-space-and-crlf",
        {"kind": "file_equals", "path": "a.txt", "text": "alpha\nbeta\n"},
        {"a.txt": "alpha  \r\nbeta\r\n\n"},
        "",
        True,
        "",
    ),
    (
        "equals-differs",
        {"kind": "file_equals", "path": "a.txt", "text": "alpha\ngamma"},
        {},
        "",
        False,
        "a.txt line 2: expected 'gamma', found 'beta'",
    ),
    (
        "equals-leading-space-counts",
        {"kind": "file_equals", "path": "a.txt", "text": "alpha\nbeta"},
        {"a.txt": " alpha\nbeta"},
        "",
        False,
        "line 1",
    ),
    (
        "equals-shorter",
        {"kind": "file_equals", "path": "a.txt", "text": "alpha\nbeta\ngamma"},
        {},
        "",
        False,
        "line 3: expected 'gamma', found the end of the file",
    ),
    (
        "equals-longer",
        {"kind": "file_equals", "path": "a.txt", "text": "alpha"},
        {},
        "",
        False,
        "line 2: expected the end of the file, found 'beta'",
    ),
    (
        "equals-missing",
        {"kind": "file_equals", "path": "b.txt", "text": "x"},
        {},
        "",
        False,
        "expected a file at b.txt, found nothing",
    ),
    ("equals-folder", {"kind": "file_equals", "path": "data", "text": "x"}, {}, "", False, "found a folder"),
    ("contains-file", {"kind": "file_contains", "path": "a.txt", "text": "pha\nbe"}, {}, "", True, ""),
    (
        "contains-file-not",
        {"kind": "file_contains", "path": "a.txt", "text": "gamma"},
        {},
        "",
        False,
        "expected a.txt to contain 'gamma', found 'alpha\\nbeta\\n'",
    ),
    (
        "contains-file-missing",
        {"kind": "file_contains", "path": "nope.txt", "text": "x"},
        {},
        "",
        False,
        "found nothing",
    ),
    (
        "json-subset",
        {"kind": "file_json", "path": "conf.json", "expect": {"db": {"pool": 5}, "port": 8080}},
        {},
        "",
        True,
        "",
    ),
    (
        "json-subset-wrong-value",
        {"kind": "file_json", "path": "conf.json", "expect": {"db": {"pool": 6}}},
        {},
        "",
        False,
        "conf.json at $.db.pool: expected 6, found 5",
    ),
    (
        "json-subset-missing-key",
        {"kind": "file_json", "path": "conf.json", "expect": {"db": {"user": "u"}}},
        {},
        "",
        False,
        "at $.db: expected key 'user'",
    ),
    (
        "json-exact-extra-key",
        {"kind": "file_json", "path": "conf.json", "expect": {"name": "demo"}, "exact": True},
        {},
        "",
        False,
        "unexpected key(s)",
    ),
    (
        "json-exact",
        {
            "kind": "file_json",
            "path": "conf.json",
            "exact": True,
            "expect": {
                "name": "demo",
                "port": 8080,
                "tags": ["b", "a"],
                "db": {"host": "h", "pool": 5},
                "debug": False,
            },
        },
        {},
        "",
        True,
        "",
    ),
    (
        "json-list-order",
        {"kind": "file_json", "path": "conf.json", "expect": {"tags": ["a", "b"]}},
        {},
        "",
        False,
        "at $.tags[0]: expected 'a', found 'b'",
    ),
    (
        "json-list-unordered",
        {"kind": "file_json", "path": "conf.json", "expect": {"tags": ["a", "b"]}, "unordered": True},
        {},
        "",
        True,
        "",
    ),
    (
        "json-list-unordered-extra",
        {"kind": "file_json", "path": "conf.json", "expect": {"tags": ["a"]}, "unordered": True},
        {},
        "",
        False,
        "unexpected element 'b'",
    ),
    (
        "json-list-length",
        {"kind": "file_json", "path": "conf.json", "expect": {"tags": ["b"]}},
        {},
        "",
        False,
        "expected 1 element(s), found 2",
    ),
    (
        "json-bool-is-not-int",
        {"kind": "file_json", "path": "conf.json", "expect": {"debug": 0}},
        {},
        "",
        False,
        "expected 0, found false",
    ),
    ("json-int-equals-float", {"kind": "file_json", "path": "conf.json", "expect": {"port": 8080.0}}, {}, "", True, ""),
    (
        "json-string-is-not-number",
        {"kind": "file_json", "path": "conf.json", "expect": {"port": "8080"}},
        {},
        "",
        False,
        "expected '8080', found 8080",
    ),
    ("json-invalid", {"kind": "file_json", "path": "a.txt", "expect": {}}, {}, "", False, "a.txt is not valid JSON"),
    (
        "json-missing",
        {"kind": "file_json", "path": "out.json", "expect": {}},
        {},
        "",
        False,
        "expected a file at out.json",
    ),
    (
        "json-top-level-list",
        {"kind": "file_json", "path": "l.json", "expect": [{"n": 1}, {"n": 2}], "exact": True},
        {"l.json": '[{"n": 1}, {"n": 2}]'},
        "",
        True,
        "",
    ),
    ("unchanged", {"kind": "unchanged", "paths": ["**"]}, {}, "", True, ""),
    (
        "unchanged-modified",
        {"kind": "unchanged", "paths": ["data/**"]},
        {"data/deep/y.csv": "id,n\n3,5\n"},
        "",
        False,
        "modified: data/deep/y.csv",
    ),
    ("unchanged-deleted", {"kind": "unchanged", "paths": ["*.txt"]}, {"a.txt": None}, "", False, "deleted: a.txt"),
    ("unchanged-outside-globs", {"kind": "unchanged", "paths": ["data/**"]}, {"a.txt": "changed"}, "", True, ""),
    (
        "unchanged-one-byte",
        {"kind": "unchanged", "paths": ["a.txt"]},
        {"a.txt": "alpha\nbeta\n\n"},
        "",
        False,
        "modified: a.txt",
    ),
    ("no-extra", {"kind": "no_extra_files"}, {"a.txt": "edited"}, "", True, ""),
    (
        "no-extra-new-file",
        {"kind": "no_extra_files"},
        {"notes/new.md": "x"},
        "",
        False,
        "unexpected new file(s): notes/new.md",
    ),
    ("no-extra-allowed", {"kind": "no_extra_files", "allowed": ["out/**"]}, {"out/a/b.txt": "x"}, "", True, ""),
    (
        "no-extra-not-allowed",
        {"kind": "no_extra_files", "allowed": ["out/*.txt"]},
        {"out/a/b.txt": "x"},
        "",
        False,
        "out/a/b.txt (allowed: out/*.txt)",
    ),
    ("command", {"kind": "command", "argv": ["python", "-c", "import sys; sys.exit(0)"]}, {}, "", True, ""),
    (
        "command-exit",
        {"kind": "command", "argv": ["python", "-c", "import sys; sys.exit('boom')"]},
        {},
        "",
        False,
        "expected exit 0, found exit 1: 'boom'",
    ),
    (
        "command-in-workspace",
        {"kind": "command", "argv": ["python", "-c", "open('data/x.csv').read()"]},
        {},
        "",
        True,
        "",
    ),
    (
        "command-sees-changes",
        {"kind": "command", "argv": ["python", "-c", "assert open('a.txt').read() == 'new'"]},
        {"a.txt": "new"},
        "",
        True,
        "",
    ),
    (
        "command-project-python",
        {"kind": "command", "argv": ["python", "-c", f"import sys; assert sys.executable == {sys.executable!r}"]},
        {},
        "",
        True,
        "",
    ),
    (
        "command-timeout",
        {"kind": "command", "argv": ["python", "-c", "import time; time.sleep(30)"], "timeout_s": 0.5},
        {},
        "",
        False,
        "timed out after 0.5s",
    ),
    (
        "command-not-found",
        {"kind": "command", "argv": ["no-such-program-localagent"]},
        {},
        "",
        False,
        "could not start",
    ),
]


def build(root: Path, changes: dict[str, str | None]) -> Path:
    root.mkdir()
    for rel, text in FIXTURE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(text.encode())
    for rel, text in changes.items():
        if text is None:
            (root / rel).unlink()
        else:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(text.encode())
    return root


@pytest.mark.parametrize("name, fields, changes, answer, passes, detail", CASES, ids=[c[0] for c in CASES])
def test_check(tmp_path, name, fields, changes, answer, passes, detail):
    root = build(tmp_path / "ws", changes)
    outcome = run_check(CHECK.validate_python(fields), root, FIXTURE, answer)
    assert outcome.kind == fields["kind"]
    assert outcome.passed is passes, outcome.detail
    if passes:
        assert outcome.detail == ""
    else:
        assert detail in outcome.detail


def test_every_kind_has_a_checker_and_a_passing_and_failing_case():
    assert set(CHECKERS) == set(CHECK_KINDS)
    assert ANSWER_KINDS | COLLATERAL_KINDS <= set(CHECK_KINDS)
    seen = {(fields["kind"], passes) for _, fields, _, _, passes, _ in CASES}
    assert seen == {(kind, p) for kind in CHECK_KINDS for p in (True, False)}


def test_details_are_shortened(tmp_path):
    root = build(tmp_path / "ws", {"big.txt": "x" * 5000})
    outcome = run_check(
        CHECK.validate_python({"kind": "file_contains", "path": "big.txt", "text": "y"}), root, FIXTURE, ""
    )
    assert not outcome.passed and len(outcome.detail) < 200 and "…" in outcome.detail
    outcome = run_check(CHECK.validate_python({"kind": "answer_contains", "text": "y"}), root, FIXTURE, "z" * 5000)
    assert not outcome.passed and len(outcome.detail) < 200


@pytest.mark.parametrize(
    "expect, found, exact, unordered, problem",
    [
        ({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2, "c": 3}], "d": 4}, False, False, None),
        ({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2, "c": 3}]}, True, False, "at $.a[1]: unexpected key(s)"),
        ([[1, 2], [3]], [[3], [2, 1]], False, True, None),
        ([1, 1, 2], [2, 1], False, True, None),  # sets: duplicates do not count
        ({"a": None}, {"a": None}, True, False, None),
        ({"a": None}, {"a": 0}, True, False, "at $.a: expected null, found 0"),
        ({"a": {}}, {"a": []}, False, False, "at $.a: expected an object"),
        ({"a": []}, {"a": {}}, False, False, "at $.a: expected a list"),
        (True, 1, False, False, "expected true, found 1"),
        (1.5, 1.5, True, False, None),
    ],
)
def test_json_mismatch(expect, found, exact, unordered, problem):
    got = json_mismatch(expect, found, exact=exact, unordered=unordered)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


TASK = """\
id = "order"
title = "checks keep their order; commands run last"
tier = 1
prompt = "p"

[files]
"a.txt" = "a\\n"

[[checks]]
kind = "command"
argv = ["python", "-c", "open('made-by-command.txt', 'w').write('x')"]

[[checks]]
kind = "no_extra_files"

[[checks]]
kind = "answer_contains"
text = "done"

[[checks]]
kind = "unchanged"
paths = ["a.txt"]

[[solution]]
answer = "done"
"""


def test_run_checks_keeps_order_and_runs_commands_after_state_checks(tmp_path):
    path = tmp_path / "order.toml"
    path.write_text(TASK)
    task = load_task_file(path)
    root = make_workspace(task, tmp_path / "ws")
    outcomes = run_checks(task, root, "all done")
    assert [o.kind for o in outcomes] == ["command", "no_extra_files", "answer_contains", "unchanged"]
    assert all(o.passed for o in outcomes), outcomes
    assert (root / "made-by-command.txt").exists()  # the command did run, after no_extra_files
    # a second look sees the command's file, and the wrong answer
    assert [o.passed for o in run_checks(task, root, "not yet")] == [True, False, False, True]


def test_python_commands_leave_no_bytecode(tmp_path):
    root = build(tmp_path / "ws", {"mod.py": "X = 1\n"})
    check = CHECK.validate_python({"kind": "command", "argv": ["python", "-c", "import mod"]})
    assert run_check(check, root, FIXTURE, "").passed
    assert not list(root.rglob("__pycache__"))


def test_answer_regex_is_linear_on_a_hostile_answer():
    """A catastrophic pattern against a model's answer hung a bench with Python's re (0 trials
    recorded); in RE2 it returns. The watchdog only guards against a hang."""
    import threading

    from localagent.bench import checks

    check = checks.AnswerRegex(kind="answer_regex", pattern="^(a+)+$")
    outcome: list = []
    worker = threading.Thread(
        target=lambda: outcome.append(checks.answer_regex(check, Path("."), {}, "a" * 50_000 + "b")), daemon=True
    )
    worker.start()
    worker.join(60)
    assert outcome and not outcome[0].passed
    assert checks.answer_regex(check, Path("."), {}, "x\n" + "a" * 40).passed  # multi-line, as the format says


def test_answer_regex_rejects_what_re2_lacks_at_load():
    from localagent.bench.checks import AnswerRegex

    with pytest.raises(ValueError, match="backreferences"):
        AnswerRegex(kind="answer_regex", pattern=r"(a)\1")
    assert (
        AnswerRegex(kind="answer_regex", pattern="total", ignore_case=True).compiled("total", True).search("TOTAL: 3")
    )


# --- what a trial's stop and checks make of it ---


def C(kind: str, passed: bool) -> CheckResult:
    return CheckResult(kind=kind, passed=passed)


@pytest.mark.parametrize(
    "stop_reason, checks, mode",
    [
        ("answer", [C("answer_contains", True), C("file_equals", True)], None),
        ("answer", [C("answer_contains", False), C("unchanged", True)], "wrong_answer"),
        ("answer", [C("answer_regex", False), C("file_equals", False)], "wrong_state"),
        ("answer", [C("command", False), C("no_extra_files", False)], "wrong_state"),
        ("answer", [C("file_json", True), C("unchanged", False), C("answer_contains", False)], "collateral_change"),
        ("answer", [C("no_extra_files", False)], "collateral_change"),
        ("max_steps", [C("file_equals", True)], "max_steps"),
        ("timeout", [], "timeout"),
        ("context_overflow", [C("answer_contains", False)], "context_overflow"),
        ("repeated_invalid_call", [C("file_exists", False)], "malformed_tool_call"),
        ("engine_error", [], "runtime_error"),
        ("api_error", [C("answer_contains", False)], "api_error"),
        # a looping reply is no answer even where its text holds what the checks look for
        ("repetition", [C("answer_contains", True)], "repetition"),
        ("unfinished_thinking", [C("answer_contains", True)], "unfinished_thinking"),
        # gave up on a failing call: no answer, judged by what it left behind
        ("repeated_failing_call", [C("file_exists", False)], "wrong_state"),
        ("repeated_failing_call", [C("file_exists", True)], "wrong_answer"),
    ],
)
def test_classify_failure(stop_reason, checks, mode):
    assert classify_failure(stop_reason, checks) == mode
