"""The bench runner end to end: the real task suite, tools, checks, store and engines (scripted
models, the bundled GGUF, and llama_cpp.server on loopback standing in for a hosted API)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from factories import make_run_info, make_trial
from fixtures_tasks import copy_suite
from llama_server import llama_server  # noqa: F401 - the session fixture

from localagent import settings
from localagent.bench import runner
from localagent.bench.database import ResultsDB
from localagent.bench.rundir import RunDir
from localagent.bench.runner import BenchConfig, run_bench
from localagent.bench.schema import TrialResult
from localagent.bench.tasks import load_tasks
from localagent.catalog import Price, cost_usd
from localagent.errors import ConfigError, ResultsError
from localagent.records import Usage

# a few tasks of each of the first tiers of the shipped suite
TASKS = tuple(t.id for tier in (1, 2, 3) for t in load_tasks(tier=tier)[:2])
TIER1 = tuple(t.id for t in load_tasks(tier=1))


def _suite(folder: Path, max_steps: int | None = 5) -> Path:
    line = f"max_steps = {max_steps}" if max_steps else ""
    return copy_suite(folder, "two-steps", "Read then write", header=line, read_first=True)


def test_oracle_passes_and_noop_fails_every_task():
    events = []
    outcome = run_bench(BenchConfig(models=("oracle", "noop"), task_ids=TASKS), on_event=events.append)
    tasks = {t.id: t for t in load_tasks(ids=TASKS)}
    assert isinstance(events[0], runner.RunStarted)
    done = [e for e in events if isinstance(e, runner.TrialDone)]
    n = 2 * len(TASKS)
    assert [e.done for e in done] == list(range(1, n + 1)) and {e.total for e in done} == {n}

    oracle = [t for t in outcome.trials if t.model == "oracle"]
    noop = [t for t in outcome.trials if t.model == "noop"]
    assert len(oracle) == len(noop) == len(TASKS)
    for t in oracle:
        task = tasks[t.task_id]
        assert t.success and t.failure_mode is None and t.stop_reason == "answer"
        assert len(t.checks) == len(task.checks) and all(c.passed for c in t.checks)
        assert t.task_sha256 == task.sha256 and t.tier == task.tier
        assert t.tool_calls == len(task.tool_steps) and t.steps == len(task.solution)
        assert t.model_kind == "pseudo" and t.engine["engine"] == "scripted"
        # the stored form of EngineInfo: a scripted engine's keys, as it always wrote them
        assert t.engine == {"engine": "scripted", "model": "oracle", "tool_mode": None, "replies": len(task.solution)}
        assert t.seed == 0 and t.temperature == 0.0 and t.cost_usd == 0.0
        assert t.peak_rss_bytes and t.peak_anon_bytes and t.peak_rss_bytes >= t.peak_anon_bytes
    for t in noop:
        assert not t.success and t.failure_mode in ("wrong_answer", "wrong_state")
        assert t.answer == "I don't know." and t.tool_calls == 0
        assert any(not c.passed and c.detail for c in t.checks)

    run = RunDir(outcome.run_dir)
    assert run.read_trials() == outcome.trials
    assert run.read_info().finished_at == outcome.info.finished_at is not None
    trace = [json.loads(line) for line in (outcome.run_dir / oracle[0].trace_path).read_text().splitlines()]
    assert trace[0]["kind"] == "header" and trace[0]["task_sha256"] == oracle[0].task_sha256
    assert [r["kind"] for r in trace].count("model") == oracle[0].steps and trace[-1]["kind"] == "final"
    with ResultsDB() as db:
        assert db.trials(outcome.info.run_id) == sorted(
            outcome.trials, key=lambda t: (t.model, tasks[t.task_id].tier, t.task_id)
        )
    assert outcome.info.host.logical_cores >= 1 and outcome.info.host.ram_bytes > 0
    assert outcome.info.limits["max_steps"] == 20


def test_repeated_trials_get_a_seed_each_and_record_the_temperature():
    outcome = run_bench(BenchConfig(models=("oracle",), task_ids=TIER1[:1], trials=3, temperature=0.7))
    assert [(t.trial, t.seed, t.temperature) for t in outcome.trials] == [(0, 0, 0.7), (1, 1, 0.7), (2, 2, 0.7)]
    assert outcome.info.trials == 3 and outcome.info.temperature == 0.7
    assert len({t.trace_path for t in outcome.trials}) == 3


def test_the_step_limit_ends_a_trial_as_max_steps(tmp_path):
    # the task sets no max_steps, so the bench's applies
    outcome = run_bench(
        BenchConfig(models=("oracle",), tasks_dir=_suite(tmp_path / "tasks", max_steps=None), max_steps=2)
    )
    (trial,) = outcome.trials
    assert (trial.success, trial.stop_reason, trial.failure_mode) == (False, "max_steps", "max_steps")
    assert trial.steps == 2 and trial.checks[0].passed  # the file was right; the agent never answered


def test_resuming_a_finished_run_runs_nothing_and_a_changed_task_is_refused(tmp_path):
    tasks = _suite(tmp_path / "tasks")
    first = run_bench(BenchConfig(models=("oracle", "noop"), tasks_dir=tasks, out=tmp_path / "run"))
    again = run_bench(BenchConfig(resume=str(tmp_path / "run")))
    assert again.info.run_id == first.info.run_id
    assert again.trials == first.trials
    assert again.notices == [f"resuming run {first.info.run_id}: 2 of 2 trials already done"]
    assert len(RunDir(tmp_path / "run").read_trials()) == 2

    _suite(tasks, max_steps=6)  # the task changed
    with pytest.raises(ResultsError, match="task 'two-steps' changed since run"):
        run_bench(BenchConfig(resume=first.info.run_id))


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(trials=0), "--trials must be at least 1"),
        (dict(jobs=0), "--jobs must be at least 1"),
        (dict(temperature=3.0), "--temperature must be between 0 and 2"),
    ],
)
def test_bad_settings_are_config_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        BenchConfig(**config)


def test_quick_keeps_only_tasks_tagged_quick(tmp_path):
    with pytest.raises(ConfigError, match="tagged 'quick'"):
        run_bench(BenchConfig(models=("oracle",), tasks_dir=_suite(tmp_path / "tasks"), quick=True))
    assert not (settings.runs_dir()).exists()  # nothing was started


# --- hosted baselines ---


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _user_catalog(entries: str) -> None:
    settings.user_catalog().parent.mkdir(parents=True, exist_ok=True)
    settings.user_catalog().write_text(entries)


PRICE = 'price = { input = 2.0, cached_input = 0.5, output = 8.0, source = "test price table", as_of = "2026-11" }'


def _stored_baseline(model: str, task_id: str, run_id: str = "20261120-100000-beef") -> TrialResult:
    from localagent.bench.runner import host_info
    from localagent.units import utc_now

    (task,) = load_tasks(ids=(task_id,))
    info = make_run_info(
        run_id=run_id,
        finished_at="2026-11-20T10:05:00+00:00",
        host=host_info(),
        models=[],
        baselines=[model],
        tasks_dir="elsewhere",
        task_ids=[task_id],
        price_table="test",
    )
    trial = make_trial(
        run_id=run_id,
        model=model,
        model_kind="hosted",
        task_id=task_id,
        task_sha256=task.sha256,
        tier=task.tier,
        finished_at="2026-11-20T10:04:00+00:00",
        cost_usd=0.0021,
        price_as_of="2026-11",
        trace_path=None,
    )
    assert utc_now() > info.started_at
    with ResultsDB() as db:
        db.save_run(info)
        db.add_trial(trial)
    return trial


def test_an_unreachable_baseline_is_one_line_and_falls_back_to_stored_results():
    _user_catalog(
        f'[hosted.loopback]\nprovider = "test"\nmodel = "m"\nbase_url = "http://127.0.0.1:{_closed_port()}/v1"\n{PRICE}\n'
    )
    stored = _stored_baseline("loopback", TIER1[0])
    outcome = run_bench(BenchConfig(models=("oracle",), baselines=("loopback",), task_ids=(TIER1[0], TIER1[1])))
    assert len(outcome.notices) == 1
    notice = outcome.notices[0]
    assert "\n" not in notice and notice.startswith("baseline loopback not run (")
    assert notice.endswith("comparing with its stored results from 2026-11-20 (1 of 2 tasks)")
    assert outcome.baseline_trials == [stored]
    assert {t.model for t in outcome.trials} == {"oracle"} and len(outcome.trials) == 2
    assert outcome.info.baselines == ["loopback"] and outcome.info.finished_at
    assert "prices as of 2026-11" in outcome.info.price_table


def test_a_baseline_without_its_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("LOCALAGENT_TEST_KEY", raising=False)
    _user_catalog(
        '[hosted.keyed]\nprovider = "test"\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\n'
        f'api_key_env = "LOCALAGENT_TEST_KEY"\n{PRICE}\n'
    )
    outcome = run_bench(BenchConfig(models=("noop",), baselines=("keyed",), task_ids=TIER1[:1]))
    (notice,) = outcome.notices
    assert "LOCALAGENT_TEST_KEY" in notice
    assert notice.endswith("no stored results on these task versions to compare with")
    assert [t.model for t in outcome.trials] == ["noop"]


def test_a_hosted_baseline_on_a_loopback_server_is_run_and_priced(llama_server):
    _user_catalog(f'[hosted.loopback]\nprovider = "test"\nmodel = "smollm2"\nbase_url = "{llama_server}/v1"\n{PRICE}\n')
    events = []
    outcome = run_bench(
        BenchConfig(
            models=("noop",), baselines=("loopback",), task_ids=(TIER1[0], TIER1[1]), max_tokens=24, max_steps=2, jobs=2
        ),
        on_event=events.append,
    )
    assert outcome.notices == []
    hosted = [t for t in outcome.trials if t.model == "loopback"]
    assert len(hosted) == 2 and outcome.baseline_trials == []
    price = Price(input=2.0, cached_input=0.5, output=8.0, source="test price table", as_of="2026-11")
    for t in hosted:
        assert t.model_kind == "hosted" and t.price_as_of == "2026-11"
        assert t.input_tokens > 0 and t.steps >= 1
        usage = Usage(t.input_tokens, t.cached_input_tokens, t.output_tokens, t.reasoning_tokens)
        assert t.cost_usd == pytest.approx(cost_usd(usage, price))
        fresh = t.input_tokens - t.cached_input_tokens
        assert t.cost_usd == pytest.approx((fresh * 2.0 + t.cached_input_tokens * 0.5 + t.output_tokens * 8.0) / 1e6)
        assert t.cost_usd > 0
        assert t.peak_rss_bytes is None  # threads share this process: its memory is not the model's
        assert t.success == (t.failure_mode is None)
    assert sum(isinstance(e, runner.TrialDone) for e in events) == 4


# --- the bundled model, end to end ---


def test_the_bundled_model_on_tier_one_tasks(bundled_gguf):
    events = []
    outcome = run_bench(
        BenchConfig(models=("smollm2-135m",), task_ids=TIER1[:2], max_tokens=32, max_steps=2, n_ctx=2048),
        on_event=events.append,
    )
    assert sum(isinstance(e, runner.ModelLoading) for e in events) == 1  # loaded once for both tasks
    assert outcome.info.load_s["smollm2-135m"] > 0
    assert len(outcome.trials) == 2
    from localagent import ggufinfo

    per_token = ggufinfo.read(bundled_gguf).kv_bytes_per_token
    for t in outcome.trials:
        assert t.model_kind == "local" and t.engine["engine"] == "llama.cpp" and t.engine["n_ctx"] == 2048
        assert list(t.engine) == [
            *("engine", "model", "path", "sha256", "tool_mode", "n_ctx", "n_threads", "n_gpu_layers", "gpu_offload"),
            *("load_s", "llama_cpp", "think", "grammar", "stop_loops", "memory", "checkpoints"),
        ]
        assert t.model_file_bytes == bundled_gguf.stat().st_size
        assert t.kv_cache_bytes == per_token * 2048
        assert t.steps >= 1 and t.input_tokens > 0 and t.output_tokens > 0
        assert 0 < t.prompt_tokens_evaluated <= t.input_tokens
        assert t.ttft_s_mean is not None and t.ttft_s_mean > 0
        assert t.peak_rss_bytes >= t.peak_anon_bytes > 0
        assert t.cost_usd == 0.0 and t.price_as_of is None
        assert t.success == (t.failure_mode is None)
        assert t.failure_mode != "runtime_error", t.error


def test_a_catalog_model_too_big_for_ram_is_refused_before_its_download_and_run_folder(
    tmp_path, localagent_home, monkeypatch
):
    from localagent.errors import ModelLoadError

    (localagent_home / "models.toml").write_text(
        '[local.fake-huge]\nrepo = "fakeorg/huge"\nfile = "huge.gguf"\nquant = "Q4_K_M"\n'
        'size_mb = 900000000\nparams = "1T"\ncontext = 8192\n'
    )
    # a closed port: a download attempt would fail with a DownloadError, not this refusal
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelLoadError, match="fake-huge needs about .* of RAM") as caught:
        run_bench(BenchConfig(models=("fake-huge",), tasks_dir=_suite(tmp_path / "suite")))
    assert "models list" in (caught.value.hint or "")
    assert not settings.models_dir().exists() or not any(p.is_file() for p in settings.models_dir().rglob("*"))
    assert not settings.runs_dir().exists() or not any(settings.runs_dir().iterdir())
