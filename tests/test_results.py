"""The results store: run folders, the SQLite database and its migrations, export/import."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path

import factories
import pytest
from factories import make_run_info

from localagent import settings
from localagent.bench.database import ResultsDB
from localagent.bench.exchange import export_results, import_results
from localagent.bench.migrations import MIGRATIONS, migration_name
from localagent.bench.rundir import RunDir, locate_run
from localagent.bench.schema import SCHEMA_VERSION, HostInfo, RunInfo, TrialResult
from localagent.errors import ResultsError, ResultsWarning

HOST = HostInfo(
    cpu="test cpu", physical_cores=2, logical_cores=2, ram_bytes=2**33, gpu="none", os="Linux", python="3.11"
)
SHA_A = "a" * 64
SHA_B = "b" * 64


def make_info(run_id: str, started_at: str = "2026-11-20T10:00:00+00:00", models=("oracle",), baselines=()) -> RunInfo:
    return make_run_info(
        run_id=run_id,
        started_at=started_at,
        host=HOST,
        models=list(models),
        baselines=list(baselines),
        task_ids=["read-version", "sum-csv"],
        trials=2,
        price_table="models.toml (prices as of 2025-10)",
    )


def make_trial(
    run_id: str,
    model: str = "oracle",
    task_id: str = "read-version",
    trial: int = 0,
    *,
    sha: str = SHA_A,
    success: bool = True,
    finished_at: str = "2026-11-20T10:01:00+00:00",
) -> TrialResult:
    return factories.make_trial(
        run_id=run_id,
        model=model,
        model_kind="hosted" if model.startswith("gpt") else "pseudo",
        task_id=task_id,
        task_sha256=sha,
        trial=trial,
        finished_at=finished_at,
        success=success,
        answer="1.4.2",
        cost_usd=0.0012,
    )


# --- run folders ---


def test_run_dir_appends_trials_and_reads_them_back(tmp_path):
    run = RunDir.create(tmp_path / "run", make_info("r1"))
    trials = [make_trial("r1", trial=k) for k in range(3)]
    for t in trials:
        run.append(t)
    assert run.read_info().run_id == "r1"
    assert run.read_trials() == trials
    assert run.results_path.read_text().count("\n") == 3


def test_run_dir_refuses_a_folder_holding_another_run(tmp_path):
    RunDir.create(tmp_path / "run", make_info("r1"))
    with pytest.raises(ResultsError, match="already holds bench run r1") as info:
        RunDir.create(tmp_path / "run", make_info("r2"))
    assert "--resume" in info.value.hint


def test_a_torn_last_line_is_skipped_then_cut(tmp_path):
    run = RunDir.create(tmp_path / "run", make_info("r1"))
    run.append(make_trial("r1", trial=0))
    run.append(make_trial("r1", trial=1))
    whole = make_trial("r1", trial=2).model_dump_json()
    with open(run.results_path, "a") as f:
        f.write(whole[: len(whole) // 2])  # what a SIGKILL mid-write leaves
    with pytest.warns(ResultsWarning, match=r"results\.jsonl:3: an incomplete last line"):
        assert [t.trial for t in run.read_trials()] == [0, 1]
    run.repair()
    run.append(make_trial("r1", trial=2))
    assert [t.trial for t in run.read_trials()] == [0, 1, 2]


def test_a_corrupt_line_is_skipped_with_a_warning_naming_file_and_line(tmp_path):
    run = RunDir.create(tmp_path / "run", make_info("r1"))
    run.append(make_trial("r1"))
    with open(run.results_path, "a") as f:
        f.write('{"run_id": "r1"}\n')
    run.append(make_trial("r1", trial=1))
    with pytest.warns(ResultsWarning, match=r"results\.jsonl:2: not a trial record: field 'model'"):
        assert [t.trial for t in run.read_trials()] == [0, 1]


def test_trace_paths_are_one_folder_per_model(tmp_path):
    run = RunDir(tmp_path)
    assert run.trace_path("llama3.2-1b", "sum-csv", 3) == "traces/llama3.2-1b/sum-csv-3.jsonl"
    assert run.trace_path("qwen:Q8_0/x", "t", 0) == "traces/qwen_Q8_0_x/t-0.jsonl"


# --- the database ---


def test_migrations_are_applied_once_and_recorded_in_order():
    names = [migration_name(m) for m in MIGRATIONS]
    with ResultsDB() as db:
        assert db.applied_migrations() == names
        assert db.migrate() == []
    with ResultsDB() as db:  # a second open finds nothing to do
        assert db.migrate() == []
        assert db.applied_migrations() == names
    raw = sqlite3.connect(settings.database())
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "trials", "schema_migrations"} <= tables


def test_an_unmigrated_database_is_brought_up_to_date():
    settings.database().parent.mkdir(parents=True, exist_ok=True)
    raw = sqlite3.connect(settings.database())
    raw.execute("CREATE TABLE notes (x TEXT)")  # a file that exists but has none of our tables
    raw.commit()
    raw.close()
    with ResultsDB() as db:
        assert db.applied_migrations() == [migration_name(m) for m in MIGRATIONS]
        db.save_run(make_info("r1"))
        assert db.run("r1") is not None


def test_database_round_trip(tmp_path):
    info = make_info("r1")
    trials = [
        make_trial("r1", task_id=task, trial=k, success=k == 0)
        for task in ("read-version", "sum-csv")
        for k in range(2)
    ]
    with ResultsDB() as db:
        db.save_run(info, tmp_path)
        assert all(db.add_trial(t) for t in trials)
        assert not db.add_trial(trials[0])  # the same (run, model, task, trial) again
    with ResultsDB() as db:
        stored = db.run("r1")
        assert stored.info == info and stored.run_dir == tmp_path.resolve()
        assert db.trials("r1") == trials
        assert db.trials(model="nobody") == []
        finished = info.model_copy(update={"finished_at": "2026-11-20T11:00:00+00:00"})
        db.save_run(finished)  # no run_dir given: the known one is kept
        assert db.run("r1").info.finished_at == finished.finished_at
        assert db.run("r1").run_dir == tmp_path.resolve()
        count = db.db.execute("SELECT COUNT(*), SUM(success) FROM trials WHERE model = 'oracle'").fetchone()
        assert count == (4, 2)


def test_latest_results_take_the_latest_run_per_task_version():
    with ResultsDB() as db:
        db.save_run(make_info("old", "2026-11-01T00:00:00+00:00", baselines=["gpt-5-mini"]))
        db.save_run(make_info("new", "2026-11-10T00:00:00+00:00", baselines=["gpt-5-mini"]))
        db.add_trial(make_trial("old", "gpt-5-mini", "read-version", success=False))
        db.add_trial(make_trial("old", "gpt-5-mini", "sum-csv", sha=SHA_B))
        db.add_trial(make_trial("new", "gpt-5-mini", "read-version", trial=0))
        db.add_trial(make_trial("new", "gpt-5-mini", "read-version", trial=1))
        db.add_trial(make_trial("new", "oracle", "sum-csv", sha=SHA_B))
        got = db.latest_results("gpt-5-mini", [SHA_A, SHA_B])
        assert sorted((t.run_id, t.task_id, t.trial) for t in got) == [
            ("new", "read-version", 0),
            ("new", "read-version", 1),
            ("old", "sum-csv", 0),  # the newer run did not run this task version
        ]
        assert db.latest_results("gpt-5-mini", ["c" * 64]) == []
        assert db.latest_results("gpt-5", [SHA_A]) == []


def test_locate_run_by_id_or_folder(tmp_path):
    run = RunDir.create(tmp_path / "elsewhere", make_info("r1"))
    with ResultsDB() as db:
        db.save_run(make_info("r1"), run.path)
        assert locate_run("r1", db).path == run.path.resolve()
        assert locate_run(str(run.path), db).path == run.path
        with pytest.raises(ResultsError, match="no bench run 'r9'"):
            locate_run("r9", db)


# --- export / import ---


def _fill_store(home: Path) -> list[TrialResult]:
    trials = []
    with ResultsDB() as db:
        for run_id, started in (("r1", "2026-11-01T00:00:00+00:00"), ("r2", "2026-11-02T00:00:00+00:00")):
            run = RunDir.create(
                home / "runs" / run_id, make_info(run_id, started, models=("oracle",), baselines=("gpt-5-mini",))
            )
            db.save_run(run.read_info(), run.path)
            for model in ("oracle", "gpt-5-mini"):
                for k in range(2):
                    t = make_trial(run_id, model, trial=k)
                    trace = run.path / t.trace_path
                    trace.parent.mkdir(parents=True, exist_ok=True)
                    trace.write_text(json.dumps({"kind": "header", "model": model}) + "\n")
                    run.append(t)
                    db.add_trial(t)
                    trials.append(t)
    return trials


@pytest.mark.parametrize("name", ["shared.json", "shared.jsonl", "shared.tar.gz"])
def test_export_then_import_elsewhere_round_trips(name, localagent_home, tmp_path_factory, monkeypatch):
    trials = _fill_store(localagent_home)
    dest = tmp_path_factory.mktemp("exchange") / name
    with ResultsDB() as db:
        summary = export_results(db, dest)
    assert (summary.runs, summary.trials) == (2, 8)
    assert summary.traces == (8 if name.endswith(".tar.gz") else 0)

    other = tmp_path_factory.mktemp("other-home")
    monkeypatch.setenv("LOCALAGENT_HOME", str(other))
    with ResultsDB() as db:
        first = import_results(db, dest)
        assert (first.runs_added, first.trials_added, first.trials_skipped) == (2, 8, 0)
        again = import_results(db, dest)
        assert (again.runs_added, again.trials_added, again.trials_skipped) == (0, 0, 8)
        assert sorted(db.trials(), key=lambda t: (t.run_id, t.model, t.trial)) == sorted(
            trials, key=lambda t: (t.run_id, t.model, t.trial)
        )
        assert db.run("r2").info.baselines == ["gpt-5-mini"]
        if name.endswith(".tar.gz"):
            assert first.traces == 8
            run_dir = db.run("r1").run_dir
            assert run_dir == other / "runs" / "r1"
            assert json.loads((run_dir / "traces/gpt-5-mini/read-version-1.jsonl").read_text())["model"] == "gpt-5-mini"
            assert len(RunDir(run_dir).read_trials()) == 4
        else:
            assert db.run("r1").run_dir is None


def test_export_narrows_to_a_run_and_a_model(localagent_home, tmp_path):
    _fill_store(localagent_home)
    with ResultsDB() as db:
        summary = export_results(db, tmp_path / "one.jsonl", run_id="r2", model="gpt-5-mini")
        assert (summary.runs, summary.trials) == (1, 2)
        with pytest.raises(ResultsError, match="no stored results for run r3"):
            export_results(db, tmp_path / "none.json", run_id="r3")
        with pytest.raises(ResultsError, match="unknown results file type"):
            export_results(db, tmp_path / "x.csv")
    lines = [json.loads(line) for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    assert lines[0] == {"format": "localagent-results", "schema_version": SCHEMA_VERSION}
    assert [next(iter(rec)) for rec in lines[1:]] == ["run", "trial", "trial"]


def test_import_errors_name_the_file_and_line(tmp_path):
    header = json.dumps({"format": "localagent-results", "schema_version": SCHEMA_VERSION})
    cases = {
        "plain.json": ('{"runs": []}', r"plain\.json: not a localagent results export"),
        "newer.json": (
            json.dumps(
                {"format": "localagent-results", "schema_version": SCHEMA_VERSION + 1, "runs": [], "trials": []}
            ),
            "newer than this localagent",
        ),
        "bad.jsonl": (
            header + "\n" + json.dumps({"trial": {"run_id": "r1"}}) + "\n",
            r"bad\.jsonl:2: not a result record: field '\w+'",
        ),
        "orphan.jsonl": (
            header + "\n" + json.dumps({"trial": make_trial("r1").model_dump(mode="json")}) + "\n",
            "without its run record",
        ),
        "broken.jsonl": (header + "\n{not json\n", r"broken\.jsonl:2: not valid JSON"),
    }
    with ResultsDB() as db:
        for name, (text, message) in cases.items():
            (tmp_path / name).write_text(text)
            with pytest.raises(ResultsError, match=message):
                import_results(db, tmp_path / name)
        assert db.trials() == [] and db.runs() == []


def test_tar_import_writes_nothing_outside_the_run_folder(tmp_path, localagent_home):
    info = make_info("r1")
    trial = make_trial("r1")
    lines = [
        json.dumps({"format": "localagent-results", "schema_version": SCHEMA_VERSION}),
        json.dumps({"run": info.model_dump(mode="json")}),
        json.dumps({"trial": trial.model_dump(mode="json")}),
    ]
    dest = tmp_path / "evil.tar.gz"
    with tarfile.open(dest, "w:gz") as tar:
        for name, data in (
            ("results.jsonl", ("\n".join(lines) + "\n").encode()),
            ("traces/r1/../../../escaped.txt", b"x"),
            ("traces/r1/traces/oracle/read-version-0.jsonl", b"{}\n"),
        ):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    with ResultsDB() as db:
        summary = import_results(db, dest)
    assert summary.traces == 1
    # where the '..' would have led: three folders up from runs/r1
    assert not (localagent_home.parent / "escaped.txt").exists()
    assert not list(localagent_home.parent.rglob("escaped.txt"))
    assert (localagent_home / "runs/r1/traces/oracle/read-version-0.jsonl").is_file()
