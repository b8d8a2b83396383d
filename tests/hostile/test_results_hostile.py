"""Hostile results files and run folders (issue 10): `results import` checks every record
before it writes anything, and `results export` and `report --html` read only regular files
inside a run's folder, bounded in size. Real files, a real SQLite store, real tar archives and
the real CLI in a subprocess; the next hardening pass extends this module."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import tarfile
from pathlib import Path

import pytest
from test_cli_run import localagent
from test_results import make_info, make_trial

from localagent import settings
from localagent.bench.database import ResultsDB
from localagent.bench.exchange import TRACE_FILE_LIMIT, export_results, import_results
from localagent.bench.html_page import TRACE_EMBED_LIMIT, render_html
from localagent.bench.report import load_report
from localagent.bench.rundir import RunDir
from localagent.bench.schema import SCHEMA_VERSION
from localagent.bench.summary import summarize
from localagent.bench.tracepaths import clean_trace_path
from localagent.errors import ResultsError

CANARY = "CANARY-4c1d9e outside every run folder"
HEADER = json.dumps({"format": "localagent-results", "schema_version": SCHEMA_VERSION})


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside the home and its runs, that no trace path may reach."""
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text(CANARY + "\n")
    return path


def _up_to(target: Path, run_dir: Path) -> str:
    """A '..' path from `run_dir` to `target`, as a hostile export would carry it."""
    return os.path.relpath(target, run_dir)


def _export_text(run_id: str, trace_paths: list[str | None]) -> str:
    lines = [HEADER, json.dumps({"run": make_info(run_id).model_dump(mode="json")})]
    for k, path in enumerate(trace_paths):
        trial = make_trial(run_id, trial=k).model_copy(update={"trace_path": path})
        lines.append(json.dumps({"trial": trial.model_dump(mode="json")}))
    return "\n".join(lines) + "\n"


def _write_tar(dest: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for name, data in members.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return dest


def _legit_store(home: Path) -> None:
    """A run already stored, folder and database, that a bad import must leave as it was."""
    run = RunDir.create(home / "runs" / "r0", make_info("r0"))
    with ResultsDB() as db:
        db.save_run(run.read_info(), run.path)
        for k in range(2):
            t = make_trial("r0", trial=k)
            (run.path / t.trace_path).parent.mkdir(parents=True, exist_ok=True)
            (run.path / t.trace_path).write_text('{"kind": "header"}\n')
            run.append(t)
            db.add_trial(t)


def _snapshot(home: Path) -> dict[str, bytes]:
    """Every file under the home, byte for byte (the database included)."""
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


HOSTILE_PATHS = {
    "dot-dot": "../../etc/hostname",
    "dot-dot-inside-first": "traces/../../../etc/hostname",
    "absolute": "/etc/hostname",
    "double-slash-absolute": "//etc/hostname",
    "nul": "traces/oracle/a\x00b.jsonl",
    "newline": "traces/oracle/a\nb.jsonl",
    "backslash": "traces\\..\\..\\etc\\hostname",
    "very-long": "a/" * 3000 + "x",
}


@pytest.mark.parametrize("kind", ["jsonl", "tar.gz"])
@pytest.mark.parametrize("name", list(HOSTILE_PATHS))
def test_an_import_with_an_escaping_trace_path_is_refused_and_changes_nothing(name, kind, localagent_home, tmp_path):
    _legit_store(localagent_home)
    before = _snapshot(localagent_home)
    text = _export_text("r1", ["traces/oracle/read-version-0.jsonl", HOSTILE_PATHS[name]])
    src = tmp_path / f"evil.{kind}"
    if kind == "jsonl":
        src.write_text(text)
    else:
        _write_tar(src, {"results.jsonl": text.encode(), "traces/r1/traces/oracle/read-version-0.jsonl": b"{}\n"})
    with ResultsDB() as db, pytest.raises(ResultsError) as caught:
        import_results(db, src)
    # the record is named (file and line), and the way out is given
    assert caught.value.message.startswith(f"{src}:4: ")
    assert "trace path" in caught.value.message
    assert caught.value.hint.startswith("nothing was imported")
    assert len(caught.value.message) < 300  # a 6,000-character path is not echoed whole
    assert _snapshot(localagent_home) == before
    assert not (localagent_home / "runs" / "r1").exists()


@pytest.mark.parametrize("run_id", ["../evil", "a/b", "..", ".", "", "r1\x00"])
def test_an_import_whose_run_id_is_not_a_folder_name_is_refused(run_id, localagent_home, tmp_path):
    _legit_store(localagent_home)
    before = _snapshot(localagent_home)
    src = _write_tar(tmp_path / "evil.tar.gz", {"results.jsonl": _export_text(run_id, ["traces/x.jsonl"]).encode()})
    with ResultsDB() as db, pytest.raises(ResultsError, match=r"evil\.tar\.gz:2: run id .* is not a plain folder name"):
        import_results(db, src)
    assert _snapshot(localagent_home) == before
    assert not (localagent_home.parent / "evil").exists()


def test_trace_paths_are_normalised_on_import(localagent_home, tmp_path):
    src = _write_tar(
        tmp_path / "ok.tar.gz",
        {
            "results.jsonl": _export_text("r1", ["./traces//oracle/./read-version-0.jsonl"]).encode(),
            "traces/r1/traces/oracle/read-version-0.jsonl": b'{"kind": "header"}\n',
            # not a trace of any trial: ignored, not written into the run folder
            "traces/r1/evil.sh": b"#!/bin/sh\n",
        },
    )
    with ResultsDB() as db:
        summary = import_results(db, src)
        (trial,) = db.trials()
    assert (summary.runs_added, summary.trials_added, summary.traces) == (1, 1, 1)
    assert trial.trace_path == "traces/oracle/read-version-0.jsonl"
    run_dir = localagent_home / "runs" / "r1"
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()) == [
        "results.jsonl",
        "run.json",
        "traces/oracle/read-version-0.jsonl",
    ]
    assert [t.trace_path for t in RunDir(run_dir).read_trials()] == ["traces/oracle/read-version-0.jsonl"]


def test_an_import_never_writes_into_an_existing_run_folder(localagent_home, tmp_path):
    """A folder the database does not know (a bench whose database was reset, a folder put
    there by hand) is not overwritten by an import that brings a run of the same id."""
    mine = localagent_home / "runs" / "r1"
    mine.mkdir(parents=True)
    (mine / "run.json").write_text("mine\n")
    ResultsDB().close()  # the database exists before, so its bytes can be compared
    before = _snapshot(localagent_home)
    src = _write_tar(
        tmp_path / "theirs.tar.gz",
        {
            "results.jsonl": _export_text("r1", ["traces/oracle/read-version-0.jsonl"]).encode(),
            "traces/r1/traces/oracle/read-version-0.jsonl": b"{}\n",
        },
    )
    with (
        ResultsDB() as db,
        pytest.raises(ResultsError, match="already exists, but the results database does not know run r1") as caught,
    ):
        import_results(db, src)
    assert "move that folder away" in caught.value.hint
    assert _snapshot(localagent_home) == before


def test_an_import_with_an_oversized_trace_member_is_refused(localagent_home, tmp_path):
    _legit_store(localagent_home)
    before = _snapshot(localagent_home)
    src = _write_tar(
        tmp_path / "big.tar.gz",
        {
            "results.jsonl": _export_text("r1", ["traces/oracle/read-version-0.jsonl"]).encode(),
            "traces/r1/traces/oracle/read-version-0.jsonl": bytes(TRACE_FILE_LIMIT + 1),
        },
    )
    with ResultsDB() as db, pytest.raises(ResultsError, match=r"read-version-0\.jsonl is \d+ bytes, over the 64 MiB"):
        import_results(db, src)
    assert _snapshot(localagent_home) == before


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"runs": 5}, "not a localagent results export"),
        ({"format": "localagent-results", "schema_version": SCHEMA_VERSION, "runs": 5}, "'runs' is not a list"),
        (
            {"format": "localagent-results", "schema_version": SCHEMA_VERSION, "trials": {"a": 1}},
            "'trials' is not a list",
        ),
        (
            {"format": "localagent-results", "schema_version": SCHEMA_VERSION, "runs": ["x"]},
            r"runs\[0\]: not a result record",
        ),
        ([1, 2], "not a localagent results export"),
    ],
)
def test_a_malformed_json_export_is_an_error_not_a_traceback(doc, message, tmp_path):
    src = tmp_path / "odd.json"
    src.write_text(json.dumps(doc))
    with ResultsDB() as db, pytest.raises(ResultsError, match=message):
        import_results(db, src)


def test_a_failed_database_write_leaves_no_run_folder_behind(localagent_home, tmp_path):
    """The run folder is written first, the database second, in one transaction: when the
    database refuses (here: a trials table another program made read-only by a trigger),
    the folder the import wrote goes again and no row stays."""
    _legit_store(localagent_home)
    db_path = settings.database()
    with sqlite3.connect(db_path) as raw:
        raw.execute(
            "CREATE TRIGGER no_more BEFORE INSERT ON trials BEGIN SELECT RAISE(ABORT, 'trials are frozen'); END"
        )
    src = _write_tar(
        tmp_path / "ok.tar.gz",
        {
            "results.jsonl": _export_text("r1", ["traces/oracle/read-version-0.jsonl"]).encode(),
            "traces/r1/traces/oracle/read-version-0.jsonl": b"{}\n",
        },
    )
    with ResultsDB() as db:
        with pytest.raises(ResultsError, match="cannot write the results database .*trials are frozen"):
            import_results(db, src)
        assert db.run("r1") is None
        assert [r.info.run_id for r in db.runs()] == ["r0"]
    assert not (localagent_home / "runs" / "r1").exists()
    assert not [p for p in (localagent_home / "runs").iterdir() if p.name.startswith(".import-")]


@pytest.mark.parametrize(
    "value, clean",
    [
        ("traces/oracle/x-0.jsonl", "traces/oracle/x-0.jsonl"),
        ("./traces//oracle/./x-0.jsonl", "traces/oracle/x-0.jsonl"),
        ("traces/oracle/x-0.jsonl/", "traces/oracle/x-0.jsonl"),
    ],
)
def test_clean_trace_path_normalises(value, clean):
    assert clean_trace_path(value) == clean


@pytest.mark.parametrize("value", [*HOSTILE_PATHS.values(), "", ".", "./", "traces/\x7f", "a/.."])
def test_clean_trace_path_refuses(value):
    with pytest.raises(ResultsError):
        clean_trace_path(value)


# --- reading: export and report --html on a store that holds hostile paths ---------------------


@pytest.fixture
def poisoned(localagent_home, secret, tmp_path) -> dict[str, str]:
    """A run folder and database as an import before this check could leave them, plus a
    bench's own folder with a symlink, a FIFO and a huge file where traces should be."""
    run = RunDir.create(localagent_home / "runs" / "r1", make_info("r1"))
    (run.path / "traces/oracle").mkdir(parents=True)
    (run.path / "traces/oracle/good.jsonl").write_text('{"kind": "header", "ok": true}\n')
    (run.path / "traces/oracle/link-out.jsonl").symlink_to(secret)
    (run.path / "traces/oracle/link-in.jsonl").symlink_to(run.path / "traces/oracle/good.jsonl")
    (run.path / "traces/dir-out").symlink_to(secret.parent, target_is_directory=True)
    os.mkfifo(run.path / "traces/oracle/fifo.jsonl")
    with open(run.path / "traces/oracle/huge.jsonl", "wb") as f:
        f.write(b'{"kind": "step"}\n' * 40_000)  # 680 KB of text, then
        f.truncate(TRACE_FILE_LIMIT + 1)  # sparse: 64 MiB that take no disk
    paths = {
        "good": "traces/oracle/good.jsonl",
        "dot-dot": _up_to(secret, run.path),
        "absolute": str(secret),
        "link-out": "traces/oracle/link-out.jsonl",
        "dir-out": "traces/dir-out/secret.txt",
        "link-in": "traces/oracle/link-in.jsonl",
        "fifo": "traces/oracle/fifo.jsonl",
        "huge": "traces/oracle/huge.jsonl",
        "nul": "traces/a\x00b",
        "very-long": "a/" * 3000 + "x",
        "missing": "traces/oracle/gone.jsonl",
    }
    with ResultsDB() as db:
        db.save_run(run.read_info(), run.path)
        for k, path in enumerate(paths.values()):
            t = make_trial("r1", trial=k).model_copy(update={"trace_path": path})
            run.append(t)
            db.add_trial(t)
    return paths


def test_export_packs_only_regular_files_inside_the_run_folder(poisoned, tmp_path, tmp_path_factory, monkeypatch):
    dest = tmp_path / "out.tar.gz"
    with ResultsDB() as db:
        summary = export_results(db, dest)
    with tarfile.open(dest) as tar:
        members = {m.name: m for m in tar.getmembers()}
        packed = {name: tar.extractfile(m).read() for name, m in members.items() if m.isfile()}
    assert sorted(members) == [
        "results.jsonl",
        "traces/r1/traces/oracle/good.jsonl",
        "traces/r1/traces/oracle/link-in.jsonl",  # a symlink that stays inside: its content
    ]
    assert all(m.isfile() for m in members.values())  # no symlink or other special member
    assert not any(CANARY.encode() in data for data in packed.values())
    assert summary.traces == 2
    left_out = "\n".join(summary.notices)
    for name in ("dot-dot", "absolute", "link-out", "dir-out", "fifo", "huge", "nul", "very-long"):
        k = list(poisoned).index(name)
        assert f"read-version trial {k}: trace left out" in left_out, name
    assert "trial 10" not in left_out  # a trace that is merely gone is not worth a warning
    # the export is one another localagent accepts: the escaping paths are dropped from it
    records = [json.loads(line) for line in packed["results.jsonl"].decode().splitlines()[1:]]
    paths = [r["trial"]["trace_path"] for r in records if "trial" in r]
    assert paths[list(poisoned).index("absolute")] is None
    monkeypatch.setenv("LOCALAGENT_HOME", str(tmp_path_factory.mktemp("elsewhere")))
    with ResultsDB() as db:
        again = import_results(db, dest)
    assert (again.runs_added, again.trials_added, again.traces) == (1, len(poisoned), 2)


@pytest.mark.parametrize("kind", ["json", "jsonl"])
def test_text_exports_drop_escaping_trace_paths(kind, poisoned, tmp_path):
    dest = tmp_path / f"out.{kind}"
    with ResultsDB() as db:
        summary = export_results(db, dest)
    assert CANARY not in dest.read_text()
    assert len(summary.notices) == 4  # dot-dot, absolute, nul, very-long: no path inside a folder
    with ResultsDB(tmp_path / "other.db") as db:
        assert import_results(db, dest).trials_added == len(poisoned)


def test_report_html_embeds_only_traces_inside_the_run_folder(poisoned, tmp_path):
    with ResultsDB() as db:
        stored = load_report(db, "r1")
    page = render_html(
        summarize(stored.info, stored.trials, stored.baseline_trials), stored.run_dir, tmp_path / "p.html"
    )
    text = page.read_text()
    assert CANARY not in text
    assert not [href for href in re.findall(r"href='([^']*)'", text) if "secret" in href]  # never linked
    assert text.count("{&quot;kind&quot;: &quot;header&quot;, &quot;ok&quot;: true}") == 2  # good and link-in
    assert text.count("not shown: ") == 7  # dot-dot, absolute, link-out, dir-out, fifo, nul, very-long
    assert "missing: " in text
    assert "\x00" not in text
    # the huge one is embedded, but only its first TRACE_EMBED_LIMIT bytes
    assert "(clipped; open the file)" in text
    assert len(text.encode()) < 3 * TRACE_EMBED_LIMIT


# --- the CLI: error/hint, never a traceback ----------------------------------------------------


def test_cli_import_of_a_hostile_file_is_an_error_and_hint(localagent_home, tmp_path):
    _legit_store(localagent_home)
    before = _snapshot(localagent_home)
    src = tmp_path / "evil.jsonl"
    src.write_text(_export_text("r1", ["../../etc/hostname"]))
    done = localagent("results", "import", str(src))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == f"error: {src}:3: trace path '../../etc/hostname' leads outside its run folder"
    assert lines[1].startswith("hint: nothing was imported")
    assert _snapshot(localagent_home) == before


def test_cli_export_and_report_of_a_poisoned_store_warn_and_never_leak(poisoned, tmp_path):
    done = localagent("results", "export", str(tmp_path / "out.tar.gz"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        sum(line.startswith("warning: run r1, oracle on read-version trial") for line in done.stderr.splitlines()) == 8
    )
    assert done.stdout.strip().endswith(f"2 trace(s) to {tmp_path / 'out.tar.gz'}")
    done = localagent("report", "r1", "--html", str(tmp_path / "page.html"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert CANARY not in (tmp_path / "page.html").read_text()
