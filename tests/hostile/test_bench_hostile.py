"""Hostile stores under a bench (the reliability pass after issue 10): a damaged, read-only or
locked results database; a disk that fills while a bench writes; bad lines in a run's
results.jsonl; wrong-shaped imports; two benches on one run; task files that cannot be read or
name fixtures that are no file. Each becomes `error:`/`hint:` naming the file (or a warning
naming file and line), with nothing already written lost. Real subprocesses of the real CLI,
real SQLite locks, real file size limits, real flocks."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli_bench import _slow_suite, _wait_for_lines
from test_results import make_info, make_trial

from localagent import settings
from localagent.bench.database import BUSY_TIMEOUT_S
from localagent.bench.rundir import LOCK_FILE, RunDir
from localagent.bench.schema import SCHEMA_VERSION
from localagent.bench.tasks import default_tasks_dir, load_task_file
from localagent.errors import TaskFileError

TASK = "file-size"  # a tier-1 task of the shipped suite
HOSTILE_DB = {
    "truncated": lambda good: good[:3000],  # cut inside the first page
    "garbage": lambda good: os.urandom(len(good)),
}


def cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess; LOCALAGENT_HOME comes from the environment."""
    return subprocess.run(
        [sys.executable, "-m", "localagent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        **kwargs,
    )


def start(*args: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "localagent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        **kwargs,
    )


def assert_error(done: subprocess.CompletedProcess[str], message: str) -> list[str]:
    """Exit 1, `error: ...message...` then `hint: ...`, no traceback; the stderr lines."""
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith(("error: ", "hint: "))]
    assert lines and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert len(lines) == 2 and lines[1].startswith("hint: "), done.stderr
    return lines


def snapshot(home: Path) -> dict[str, bytes]:
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


def bench_json(*args: str) -> dict:
    done = cli("bench", "--model", "oracle", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def valid_export(path: Path) -> Path:
    """An export `results import` takes: one run, one trial."""
    lines = [
        {"format": "localagent-results", "schema_version": SCHEMA_VERSION},
        {"run": make_info("r9").model_dump(mode="json")},
        {"trial": make_trial("r9").model_dump(mode="json")},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def size_limited(limit: int):
    """preexec_fn: a file size limit, with SIGXFSZ ignored so a write past it fails with
    EFBIG ("File too large") as a full disk fails with ENOSPC, instead of killing the process."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


# --- 1. the results database: damaged, read-only, locked --------------------------------------


@pytest.mark.parametrize("damage", sorted(HOSTILE_DB))
def test_a_damaged_database_is_an_error_and_left_as_it_is(damage, localagent_home, tmp_path):
    """Before: a traceback (sqlite3.DatabaseError) from every command."""
    bench_json("--task", TASK)
    db = settings.database()
    db.write_bytes(HOSTILE_DB[damage](db.read_bytes()))
    before = snapshot(localagent_home)
    src = valid_export(tmp_path / "in.jsonl")
    for args in (
        ["report"],
        ["bench", "--model", "oracle", "--task", TASK],
        ["results", "export", str(tmp_path / "out.json")],
        ["results", "import", str(src)],
    ):
        lines = assert_error(cli(*args), f"the results database {db} is damaged")
        assert f"mv {db} {db}.damaged" in lines[1]
    assert snapshot(localagent_home) == before  # not overwritten, not deleted, no new run folder
    assert not (tmp_path / "out.json").exists()


@pytest.fixture
def read_only():
    """Makes a file or folder read-only for this user, and writable again afterwards. Root
    ignores file modes, so under root the file is made immutable (chattr +i), which binds
    root as well."""
    made: list[Path] = []

    def make(path: Path) -> None:
        if os.geteuid() == 0:
            if (
                shutil.which("chattr") is None
                or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode
            ):
                pytest.skip("running as root, and chattr +i is not available here")
        else:
            path.chmod(0o555 if path.is_dir() else 0o444)
        made.append(path)

    yield make
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_database_refuses_writes_by_name_and_still_serves_reads(what, read_only, localagent_home, tmp_path):
    """Before: bench and import ended in a traceback (attempt to write a readonly database),
    the bench after making its run folder. Now a bench checks that the database can be
    written before it makes anything; report and export only read, and still work."""
    bench_json("--task", TASK)
    db = settings.database()
    read_only(db if what == "file" else db.parent)  # a folder: no journal can be made beside it
    before = snapshot(localagent_home)
    src = valid_export(tmp_path / "in.jsonl")
    lines = assert_error(cli("bench", "--model", "oracle", "--task", TASK), f"the results database {db}")
    assert lines[0].startswith("error: cannot write") and "writ" in lines[1]
    lines = assert_error(cli("results", "import", str(src)), f"cannot write the results database {db}")
    assert lines[1].startswith("hint: nothing was imported")
    assert cli("report").returncode == 0
    done = cli("results", "export", str(tmp_path / "out.json"))
    assert done.returncode == 0, done.stderr
    assert snapshot(localagent_home) == before


def test_a_locked_database_is_waited_for_then_named(localagent_home, tmp_path):
    """Another process holds the database in an exclusive transaction (a sqlite3 shell left
    open). Before: each command hung for 30 s, then a traceback ("database is locked"). Now
    each waits BUSY_TIMEOUT_S, then says so."""
    bench_json("--task", TASK)
    db = settings.database()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "print('holding', flush=True)\n"
            "time.sleep(120)\n",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        before = snapshot(localagent_home)
        src = valid_export(tmp_path / "in.jsonl")
        commands = (
            ["report"],
            ["bench", "--model", "oracle", "--task", TASK],
            ["results", "export", str(tmp_path / "out.json")],
            ["results", "import", str(src)],
        )
        began = time.monotonic()
        waiting = [start(*args) for args in commands]  # at once: one wait, not four
        for proc in waiting:
            stdout, stderr = proc.communicate(timeout=60)
            lines = assert_error(
                subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr),
                f"the results database {db} is locked: another process",
            )
            assert "run this again" in lines[1]
        elapsed = time.monotonic() - began
        assert BUSY_TIMEOUT_S <= elapsed < BUSY_TIMEOUT_S + 20
        assert snapshot(localagent_home) == before
    finally:
        holder.kill()
        holder.wait()
    assert cli("report").returncode == 0


# --- 2. a disk that fills while a bench writes ------------------------------------------------


def test_a_full_results_file_is_the_error_reported_and_is_left_whole(localagent_home):
    """The append of a trial to results.jsonl fails part-way (a file size limit just past the
    file's end: EFBIG, as a full disk gives ENOSPC). Before: a traceback from closing the
    file (the second failure, without the file's name) and 100 bytes of a torn line left
    behind. Now: that first error, naming results.jsonl, and the file byte for byte as it
    was; lifting the limit and resuming finishes the run."""
    run_dir = Path(bench_json("--task", TASK, "--trials", "3")["run_dir"])
    results = run_dir / "results.jsonl"
    first = results.read_text().splitlines(True)[0]
    # two trials pending again, and the file's end far beyond the database's
    results.write_text(first + "\n" * 200_000)
    before = results.read_bytes()
    done = cli("bench", "--resume", str(run_dir), preexec_fn=size_limited(len(before) + 100))
    lines = assert_error(done, f"cannot write {results}: File too large")
    assert "ulimit -f" in lines[1] and "--resume" in lines[1]
    assert results.read_bytes() == before
    done = cli("bench", "--resume", str(run_dir), "--json")
    assert done.returncode == 0, done.stderr
    trials = RunDir(run_dir).read_trials()
    assert sorted(t.trial for t in trials) == [0, 1, 2] and all(t.success for t in trials)


def test_a_trace_that_cannot_be_written_stops_the_bench_instead_of_failing_every_trial(localagent_home, tmp_path):
    """The trace file is the first to outgrow the limit (its header holds a 300 kB prompt).
    Before: every trial was recorded as a runtime_error 'OSError: File too large' and the
    bench exited 0. Now the bench stops at that write, naming the trace file, and records no
    trial the disk failed."""
    text = (default_tasks_dir() / f"{TASK}.toml").read_text()
    task = tmp_path / "huge.toml"
    task.write_text(text.replace('prompt = "', 'prompt = "' + "x" * 300_000 + " ", 1))
    done = cli("bench", "--model", "oracle", "--tasks", str(task), "--trials", "2", preexec_fn=size_limited(200_000))
    assert_error(done, "cannot write ")
    [run_dir] = (localagent_home / "runs").iterdir()
    assert f"error: cannot write {run_dir / 'traces' / 'oracle' / TASK}-0.jsonl: File too large" in done.stderr
    assert RunDir(run_dir).read_trials() == []
    assert cli("report", "--json").returncode == 0


@pytest.mark.parametrize("kind", ["json", "tar.gz"])
def test_an_export_to_a_full_disk_names_the_file_and_leaves_none(kind, localagent_home, tmp_path):
    """Before: a traceback (OSError: File too large)."""
    bench_json("--task", TASK, "--trials", "3")
    dest = tmp_path / f"out.{kind}"
    lines = assert_error(
        cli("results", "export", str(dest), preexec_fn=size_limited(1000)), f"cannot write {dest}: File too large"
    )
    assert "ulimit -f" in lines[1]
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary sibling


# --- 3. bad lines in a run's results.jsonl ----------------------------------------------------

BAD_LINES = {
    "not-utf8": b'{"run_id": "caf\xe9"}\n',
    "not-json": b"{not json\n",
    "wrong-fields": b'{"run_id": "r1", "trial": "zero"}\n',
}


@pytest.fixture
def three_trials(localagent_home) -> RunDir:
    return RunDir(Path(bench_json("--task", TASK, "--trials", "3")["run_dir"]))


@pytest.mark.parametrize("bad", sorted(BAD_LINES))
def test_report_skips_a_bad_line_with_a_warning_naming_file_and_line(bad, three_trials):
    """Before: a traceback (UnicodeDecodeError) for a non-UTF-8 line; an error for the others,
    so no report of the run at all."""
    lines = three_trials.results_path.read_bytes().splitlines(True)
    three_trials.results_path.write_bytes(lines[0] + BAD_LINES[bad] + lines[2])
    done = cli("report", str(three_trials.path), "--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"warning: {three_trials.results_path}:2: ")
    assert ": skipped (`localagent bench --resume` runs its trial again)" in done.stderr
    [model] = json.loads(done.stdout)["models"]
    assert model["trials"] == 2


def test_report_skips_a_torn_last_line_with_a_warning(three_trials):
    data = three_trials.results_path.read_bytes()
    three_trials.results_path.write_bytes(data[: len(data) - 40])  # a kill in the last append
    done = cli("report", str(three_trials.path), "--json")
    assert done.returncode == 0, done.stderr
    assert (
        f"warning: {three_trials.results_path}:3: an incomplete last line (a write cut short): skipped" in done.stderr
    )
    assert json.loads(done.stdout)["models"][0]["trials"] == 2


def test_resume_keeps_a_bad_line_and_reruns_its_trial(three_trials):
    lines = three_trials.results_path.read_bytes().splitlines(True)
    three_trials.results_path.write_bytes(lines[0] + BAD_LINES["not-utf8"] + lines[2])
    done = cli("bench", "--resume", str(three_trials.path), "--json")
    assert done.returncode == 0, done.stderr
    notices = json.loads(done.stdout)["notices"]
    assert (
        f"{three_trials.results_path}:2: not UTF-8 text (byte 16 of the line): skipped (`localagent bench --resume` runs its trial again)"
        in notices
    )
    # the line stays where it was (nothing written is dropped); its trial is appended again
    assert three_trials.results_path.read_bytes().startswith(lines[0] + BAD_LINES["not-utf8"] + lines[2])
    with pytest.warns(match="not UTF-8"):
        assert sorted(t.trial for t in three_trials.read_trials()) == [0, 1, 2]


def test_resume_keeps_a_whole_last_record_that_lost_its_newline(three_trials):
    data = three_trials.results_path.read_bytes()
    three_trials.results_path.write_bytes(data[:-1])
    done = cli("bench", "--resume", str(three_trials.path), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["notices"] == [
        "resuming run " + three_trials.read_info().run_id + ": 3 of 3 trials already done"
    ]
    assert three_trials.results_path.read_bytes() == data


# --- 4. imports of the wrong shape ------------------------------------------------------------


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"runs": 5}, "not a localagent results export"),
        ([], "not a localagent results export"),
        (None, "not a localagent results export"),
        ({"runs": [5]}, "not a localagent results export"),
        (
            {"format": "localagent-results", "schema_version": SCHEMA_VERSION, "runs": [5]},
            "runs[0]: not a result record",
        ),
    ],
)
def test_an_import_of_the_wrong_shape_names_the_file_and_writes_nothing(doc, message, localagent_home, tmp_path):
    """Already refused before this pass (test_results_hostile covers the parser); here through
    the CLI, with the store untouched."""
    bench_json("--task", TASK)
    before = snapshot(localagent_home)
    src = tmp_path / "odd.json"
    src.write_text(json.dumps(doc))
    lines = assert_error(cli("results", "import", str(src)), f"error: {src}")
    assert message in lines[0] and lines[1].startswith("hint: nothing was imported")
    assert snapshot(localagent_home) == before


# --- 5. two benches on one run ----------------------------------------------------------------


def test_a_second_bench_on_a_running_run_is_refused_at_once(localagent_home, tmp_path):
    """Before: two `bench --resume RUN` at once both ran every pending trial (846 records for
    580 trials, all counted by report). Now the bench holding the run's lock is named."""
    tasks = _slow_suite(tmp_path / "tasks", 3)
    out = tmp_path / "run"
    first = start("bench", "--model", "oracle", "--tasks", str(tasks), "--trials", "8", "--out", str(out))
    try:
        _wait_for_lines(out / "results.jsonl", 1, first)
        run_id = RunDir(out).read_info().run_id
        began = time.monotonic()
        second = cli("bench", "--resume", str(out))
        assert time.monotonic() - began < 10  # refused at once, not after waiting
        assert first.poll() is None, "the first bench ended before the second tried"
        lines = assert_error(second, f"run {run_id} is being run by pid {first.pid} on {socket.gethostname()} since 20")
        assert f"--resume {run_id}" in lines[1]
    finally:
        first.communicate(timeout=300)
    assert first.returncode == 0
    trials = RunDir(out).read_trials()
    assert len(trials) == 24 == len(out.joinpath("results.jsonl").read_text().splitlines())
    # the lock file stays, with no holder: it blocks no one
    assert (out / LOCK_FILE).read_text() == ""
    assert cli("bench", "--resume", str(out)).returncode == 0


def test_two_resumes_at_once_run_each_trial_once(localagent_home, tmp_path):
    tasks = _slow_suite(tmp_path / "tasks", 3)
    out = tmp_path / "run"
    killed = start("bench", "--model", "oracle", "--tasks", str(tasks), "--trials", "8", "--out", str(out))
    _wait_for_lines(out / "results.jsonl", 1, killed)
    os.kill(killed.pid, signal.SIGKILL)  # its lock goes with it: a stale lock file blocks no one
    killed.communicate(timeout=60)
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == killed.pid
    both = [start("bench", "--resume", str(out)) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in both]
    done = [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(both, outputs, strict=False)]
    assert sorted(d.returncode for d in done) == [0, 1], [d.stderr for d in done]
    refused = next(d for d in done if d.returncode == 1)
    assert_error(refused, "is being run by pid")
    lines = out.joinpath("results.jsonl").read_text().splitlines()
    keys = [(t["model"], t["task_id"], t["trial"]) for t in map(json.loads, lines)]
    assert len(keys) == len(set(keys)) == 24


def test_report_counts_a_trial_recorded_twice_once_as_its_last_record(three_trials):
    """A results.jsonl written by two benches at once (before runs were locked) holds trials
    twice: report counts each trial once, its last record."""
    lines = three_trials.results_path.read_text().splitlines(True)
    again = json.loads(lines[0]) | {"success": False, "failure_mode": "wrong_answer"}
    three_trials.results_path.write_text("".join(lines) + lines[1] + lines[2] + json.dumps(again) + "\n")
    done = cli("report", str(three_trials.path), "--json")
    assert done.returncode == 0, done.stderr
    assert f"warning: {three_trials.results_path}: 3 record(s) repeat a trial already recorded" in done.stderr
    [model] = json.loads(done.stdout)["models"]
    assert model["trials"] == 3 and model["passed"]["successes"] == 2


# --- 6. task files that cannot be read, fixtures that are no file -----------------------------


def test_a_task_file_nested_too_deep_is_an_error_naming_it(localagent_home, tmp_path):
    """Before: a traceback (RecursionError from tomllib)."""
    task = tmp_path / "deep.toml"
    task.write_text('id = "deep"\nexpect = ' + "[" * 5000 + "]" * 5000 + "\n")
    assert_error(
        cli("bench", "--model", "oracle", "--tasks", str(task)), f"{task}: not valid TOML: values nested too deeply"
    )
    assert not (localagent_home / "runs").exists()


def test_a_task_file_not_in_utf8_is_an_error_naming_file_and_line(localagent_home, tmp_path):
    task = tmp_path / "latin1.toml"
    task.write_bytes(b'id = "latin"\ntitle = "caf\xe9"\n')
    lines = assert_error(cli("bench", "--model", "oracle", "--tasks", str(task)), f"{task}:2: not UTF-8 text")
    assert "UTF-8" in lines[1]


FIXTURE = """id = "fixture"
title = "A fixture with a strange name"
tier = 1
prompt = "Answer ok."

[files]
"a.txt" = "a"
{key} = "x"

[[checks]]
kind = "answer_contains"
text = "ok"

[[solution]]
answer = "ok"
"""


@pytest.mark.parametrize(
    "key",
    [
        '"."',
        '".."',
        '""',
        '"a\\u0000b"',
        '"../x"',
        '"a/../../x"',
        '"/etc/x"',
        '"a/"',
        '"a//b"',
        '"./b"',
        '"a/./b"',
        '"a\\nb"',
    ],
)
def test_a_fixture_that_names_no_file_below_the_workspace_is_refused_at_load(key, tmp_path):
    """Before: '.', 'a/', a NUL and the like loaded, and every trial of the task failed
    writing its workspace (IsADirectoryError, ValueError) as the model's runtime error."""
    path = tmp_path / "fixture.toml"
    path.write_text(FIXTURE.format(key=key))
    with pytest.raises(TaskFileError) as info:
        load_task_file(path)
    line = FIXTURE.splitlines().index('{key} = "x"') + 1
    header = FIXTURE.splitlines().index("[files]") + 1
    assert info.value.message.startswith(
        (f"{path}:{line}: task 'fixture', field 'files.", f"{path}:{header}: task 'fixture', field 'files.")
    )
    assert info.value.hint


def test_a_fixture_named_dot_is_refused_by_the_cli_before_any_trial(localagent_home, tmp_path):
    path = tmp_path / "fixture.toml"
    path.write_text(FIXTURE.format(key='"."'))
    assert_error(
        cli("bench", "--model", "oracle", "--tasks", str(path)), f"{path}:8: task 'fixture', field 'files.\".\"'"
    )
    assert not (localagent_home / "runs").exists()


# --- 7. task files and flags past what the machine can hold (red-team F17-F22) ----------------

WRITER = """id = "writer"
title = "The oracle writes one file"
tier = 1
prompt = "Write the file."

[files]
"README.md" = "x"

[[checks]]
{check}

[[solution]]
tool = "write_file"
arguments = {{ path = "{path}", content = "{content}" }}

[[solution]]
answer = "done"
"""


def writer(tmp_path: Path, check: str, path: str = "out.txt", content: str = "x") -> Path:
    task = tmp_path / "writer.toml"
    task.write_text(WRITER.format(check=check, path=path, content=content))
    return task


def test_a_glob_with_a_reversed_range_is_an_error_naming_file_and_line(localagent_home, tmp_path):
    """Before: a traceback (re.error: bad character range) at load, naming no file."""
    task = writer(tmp_path, 'kind = "unchanged"\npaths = ["data/[z-a].txt", "README.md"]')
    line = WRITER.splitlines().index("{check}") + 2
    assert_error(
        cli("bench", "--model", "oracle", "--tasks", str(task)),
        f"{task}:{line}: task 'writer', field 'checks[0].paths': the glob 'data/[z-a].txt' has the reversed range 'z-a'",
    )
    assert not (localagent_home / "runs").exists()


def test_a_glob_longer_than_the_limit_is_refused_at_load(tmp_path):
    from localagent.bench.paths import MAX_GLOB_CHARS

    glob = "/".join(["*a" * 100] * (MAX_GLOB_CHARS // 200 + 1))
    task = writer(tmp_path, f'kind = "no_extra_files"\nallowed = ["{glob}"]')
    with pytest.raises(TaskFileError) as info:
        load_task_file(task)
    assert f"a glob holds at most {MAX_GLOB_CHARS}" in info.value.message
    assert info.value.message.startswith(
        f"{task}:{WRITER.splitlines().index('{check}') + 2}: task 'writer', field 'checks[0].allowed'"
    )


def test_a_catastrophic_glob_against_a_path_the_model_wrote_is_matched_at_once(localagent_home, tmp_path):
    """Before: the glob became a backtracking Python regex; 4.9 s at 60 characters, and this
    bench (a 100-character name) hung in no_extra_files past the timeout."""
    glob = "**a" * 10 + "**b"
    task = writer(tmp_path, f'kind = "no_extra_files"\nallowed = ["{glob}"]', path="a" * 100)
    started = time.monotonic()
    done = cli("bench", "--model", "oracle", "--tasks", str(task), "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    [trial] = json.loads(done.stdout)["trials"]
    assert trial["failure_mode"] == "collateral_change"
    assert "unexpected new file(s): aaaa" in trial["checks"][0]["detail"]


@pytest.mark.parametrize(
    "content, reason",
    [("[" * 100_000 + "]" * 100_000, "nested too deeply to read"), ("9" * 5000, "Exceeds the limit (4300 digits)")],
    ids=["100k-deep", "5000-digits"],
)
def test_json_the_model_wrote_that_python_cannot_read_is_a_wrong_state(content, reason, localagent_home, tmp_path):
    """Before: json.loads raised RecursionError / ValueError out of the check, and the trial
    was the harness's runtime_error instead of the model's wrong_state."""
    task = writer(
        tmp_path, 'kind = "file_json"\npath = "out.json"\nexpect = { total = 1 }', path="out.json", content=content
    )
    [trial] = bench_json("--tasks", str(task))["trials"]
    assert (trial["failure_mode"], trial["error"]) == ("wrong_state", None)
    detail = trial["checks"][0]["detail"]
    assert detail.startswith("out.json is not valid JSON: ") and reason in detail
    assert "set_int_max_str_digits" not in detail


def test_a_detail_shows_json_nested_past_the_stack_without_raising():
    """JSON that parsed just below the stack's limit is shown from deeper frames; short()
    says it is too deep instead of raising RecursionError out of the check."""
    from localagent.bench.checks import short

    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert short(deep) == "a list nested too deeply to show"


@pytest.mark.parametrize(
    "key, message",
    [
        ('"' + "n" * 300 + '.txt"', "is 304 bytes long; a file or folder name holds at most 255 bytes"),
        (
            '"' + "é" * 130 + '"',
            "is 260 bytes long; a file or folder name holds at most 255 bytes",
        ),  # 130 characters, 260 bytes
        ('"' + "/".join(["d" * 200] * 16) + '"', "is 3215 bytes long; a path holds at most 3072 bytes"),
    ],
    ids=["name-304-bytes", "name-260-utf8-bytes", "path-3215-bytes"],
)
def test_a_fixture_path_the_file_system_cannot_hold_is_refused_at_load(key, message, tmp_path):
    """Before: it loaded, then every trial, the oracle's too, was a runtime_error "File name
    too long" while writing the workspace."""
    path = tmp_path / "fixture.toml"
    path.write_text(FIXTURE.format(key=key))
    with pytest.raises(TaskFileError) as info:
        load_task_file(path)
    line = FIXTURE.splitlines().index('{key} = "x"') + 1
    assert info.value.message.startswith(f"{path}:{line}: task 'fixture', field 'files.")
    assert message in info.value.message
    assert len(info.value.message) < 400  # the name is shortened, not repeated whole


def test_a_fixture_name_too_long_is_refused_by_the_cli_before_any_trial(localagent_home, tmp_path):
    path = tmp_path / "fixture.toml"
    path.write_text(FIXTURE.format(key='"' + "n" * 300 + '"'))
    assert_error(cli("bench", "--model", "oracle", "--tasks", str(path)), f"{path}:8: task 'fixture', field 'files.")
    assert not (localagent_home / "runs").exists()


def test_a_check_path_too_long_is_refused_at_load(tmp_path):
    """Before: Path.exists() raised "File name too long" inside file_exists: a runtime_error."""
    task = writer(tmp_path, f'kind = "file_exists"\npath = "{"n" * 300}"')
    with pytest.raises(TaskFileError) as info:
        load_task_file(task)
    assert "field 'checks[0].path'" in info.value.message and "at most 255 bytes" in info.value.message


@pytest.mark.parametrize("trials", ["1001", "1000000000", "100000000000000000000"])
def test_trials_past_the_maximum_are_an_error_before_any_run(trials, localagent_home):
    """Before: --trials 1000000000 grew to 3.4 GB in 60 s, listing the plan, with no trial run."""
    done = cli("bench", "--model", "oracle", "--task", TASK, "--trials", trials, timeout=60)
    lines = assert_error(done, f"--trials must be at most 1000, got {trials}")
    assert "trials" in lines[1]
    assert not (localagent_home / "runs").exists()


def test_a_resumed_run_whose_trials_were_edited_past_the_maximum_is_refused(localagent_home):
    run_dir = Path(bench_json("--task", TASK)["run_dir"])
    info = json.loads((run_dir / "run.json").read_text())
    info["trials"] = 1_000_000_000
    (run_dir / "run.json").write_text(json.dumps(info))
    assert_error(cli("bench", "--resume", str(run_dir), timeout=60), "--trials must be at most 1000, got 1000000000")


@pytest.mark.parametrize("ctx", ["4294967296", "1000000000", "4194305"])
def test_ctx_past_the_maximum_is_an_error_before_any_load(ctx, localagent_home):
    """Before: 2^32 was a 16 GiB numpy allocation traceback; 10^9 a std::bad_alloc whose hint
    said the model file might be truncated."""
    done = cli("bench", "--task", TASK, "--ctx", ctx, timeout=60)
    lines = assert_error(done, f"--ctx must be between 256 and 4,194,304 tokens, got {int(ctx):,}")
    assert "truncated" not in lines[1]
    assert not (localagent_home / "runs").exists()


def test_ctx_past_the_models_trained_context_is_an_error_naming_it(localagent_home):
    """Before: the bundled model was loaded at 100,000 tokens, past the 8,192 it was trained on."""
    done = cli("bench", "--task", TASK, "--ctx", "100000", timeout=120)
    lines = assert_error(done, "--ctx 100,000 is past the 8,192 tokens smollm2-135m was trained on")
    assert "--ctx 8192" in lines[1]
    assert not (localagent_home / "runs").exists()


def test_ctx_whose_cache_does_not_fit_says_the_ram_it_needs(localagent_home):
    from localagent import hardware, store
    from localagent.bench.runner import check_context
    from localagent.errors import ConfigError
    from localagent.units import format_bytes

    resolved = store.resolve("smollm2-135m")
    check_context(resolved, 8192, hardware.available_ram())  # the real machine holds it
    needed = hardware.required_bytes(resolved.size_bytes, resolved.gguf.kv_bytes_per_token * 8192)
    with pytest.raises(ConfigError) as info:
        check_context(resolved, 8192, needed - 1)
    assert info.value.message == (
        f"smollm2-135m at --ctx 8,192 needs about {format_bytes(needed)} of RAM (weights, KV cache, headroom); "
        f"{format_bytes(needed - 1)} is available"
    )
    assert "lower --ctx" in info.value.hint


def test_a_name_not_in_utf8_is_matched_by_globs_without_an_error(tmp_path):
    """Globs match in RE2, which takes only UTF-8 text: a name the file system gives back with
    surrogate escapes is matched with U+FFFD for its undecodable bytes, not raised on."""
    from localagent.bench import checks

    (tmp_path / "out").mkdir()
    (tmp_path / os.fsdecode(b"out/\xff.txt")).write_bytes(b"x")
    allowed = lambda *globs: checks.NoExtraFiles(kind="no_extra_files", allowed=list(globs))  # noqa: E731
    assert checks.no_extra_files(allowed("out/*.txt"), tmp_path, {}, "").passed
    assert checks.no_extra_files(allowed("out/?.txt"), tmp_path, {}, "").passed
    outcome = checks.no_extra_files(allowed("out/a*"), tmp_path, {}, "")
    assert not outcome.passed and "unexpected new file(s): out/" in outcome.detail
