"""Energy beside API dollars: RAPL counters read from a powercap tree (a folder laid out as
the kernel's /sys/class/powercap, since these VMs have none), the watts estimate where none
is readable, and the report's own column that never adds to the API cost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from factories import make_run_info, make_trial
from test_cli_run import localagent

from localagent.bench.summary import summarize
from localagent.bench.tables import tables_of
from localagent.energy import EnergyMeter, counted_uj, energy_usd, rapl_zones


def _zone(root: Path, name: str, energy_uj: int, max_range: int = 1000) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "energy_uj").write_text(f"{energy_uj}\n")
    (folder / "max_energy_range_uj").write_text(f"{max_range}\n")
    return folder


@pytest.mark.parametrize(
    "before, after, max_range, expected",
    [(100, 400, 1000, 300), (900, 200, 1000, 300), (0, 0, 1000, 0)],  # the middle one wrapped
)
def test_counted_uj_across_a_wrap(before: int, after: int, max_range: int, expected: int) -> None:
    assert counted_uj(before, after, max_range) == expected


def test_packages_are_summed_and_their_subzones_left_out(tmp_path: Path) -> None:
    pkg0 = _zone(tmp_path, "intel-rapl:0", 900_000, max_range=1_000_000)
    pkg1 = _zone(tmp_path, "intel-rapl:1", 10)
    _zone(tmp_path, "intel-rapl:0:0", 5)  # the cores, inside package 0's count
    (tmp_path / "intel-rapl:2").mkdir()  # a zone whose counter cannot be read
    assert [z.energy_file.parent.name for z in rapl_zones(tmp_path)] == ["intel-rapl:0", "intel-rapl:1"]
    with EnergyMeter(watts=35.0, root=tmp_path) as meter:
        (pkg0 / "energy_uj").write_text("100000\n")  # wrapped: 100_000 + 1_000_000 - 900_000
        (pkg1 / "energy_uj").write_text("500010\n")
    assert meter.result is not None and meter.result.method == "rapl"  # RAPL wins over --watts
    assert meter.result.joules == pytest.approx(0.2 + 0.5)


def test_watts_stand_in_where_no_counter_is_readable(tmp_path: Path) -> None:
    with EnergyMeter(watts=100.0, root=tmp_path / "none") as meter:
        time.sleep(0.05)
    assert meter.result is not None and meter.result.method == "estimate"
    assert 5.0 <= meter.result.joules < 100.0  # 100 W for about 0.05 s
    with EnergyMeter(watts=None, root=tmp_path / "none") as bare:
        pass
    assert bare.result is None  # nothing to measure with: not measured, not zero


def test_the_report_shows_energy_apart_from_api_dollars() -> None:
    info = make_run_info(energy_price_per_kwh=0.30)
    trials = [
        make_trial(model="small", model_kind="local", trial=i, energy_joules=36_000.0, energy_method="estimate")
        for i in range(2)
    ] + [make_trial(model="big", model_kind="hosted", cost_usd=0.02)]
    summary = summarize(info, trials)
    small = next(m for m in summary.models if m.name == "small")
    assert small.total_cost_usd == 0  # the energy is not in the API dollars
    assert small.median_energy_j == 36_000.0 and small.energy_method == "estimate"
    assert small.suite_energy_usd == pytest.approx(energy_usd(36_000.0, 0.30)) == pytest.approx(0.003)
    table = next(t for t in tables_of(summary) if t.title.startswith("Energy"))
    assert "estimate" in table.title and "not in the $" in table.title
    assert [row[0] for row in table.rows] == ["small"]  # hosted models have no energy figure
    assert table.rows[0][1:] == ("36,000.0", "estimate", "$0.0030")


def test_a_bad_watts_setting_is_refused_before_the_bench(monkeypatch) -> None:
    monkeypatch.setenv("LOCALAGENT_WATTS", "lots")
    done = localagent("bench", "--model", "noop", "--task", "read-version")
    assert done.returncode == 1
    assert "error: LOCALAGENT_WATTS='lots' is not a positive number" in done.stderr and "hint:" in done.stderr


def test_a_real_local_trial_records_its_energy(monkeypatch) -> None:
    from localagent.bench.runner import BenchConfig, run_bench

    monkeypatch.setenv("LOCALAGENT_WATTS", "35")
    outcome = run_bench(
        BenchConfig(models=("smollm2-135m", "noop"), task_ids=("read-version",), max_steps=1, max_tokens=32)
    )
    local = next(t for t in outcome.trials if t.model == "smollm2-135m")
    noop = next(t for t in outcome.trials if t.model == "noop")
    assert local.energy_method in ("rapl", "estimate") and (local.energy_joules or 0) > 0
    if local.energy_method == "estimate":
        assert local.energy_joules == pytest.approx(35 * local.wall_s, rel=0.2)
    assert local.cost_usd == 0 and noop.energy_joules is None
    assert outcome.info.watts == 35.0


def test_the_map_gives_energy_a_column_of_its_own() -> None:
    from localagent.bench.capability import build_map, observations
    from localagent.bench.map_render import group_table

    trials = [
        make_trial(
            model="small", model_kind="local", engine={"tool_mode": "json"}, energy_joules=j, energy_method="rapl"
        )
        for j in (10.0, 30.0, 20.0)
    ] + [make_trial(model="big", model_kind="hosted", cost_usd=0.02)]
    obs, _ = observations([make_run_info()], trials, {})
    table = group_table(build_map(obs).groups[0])
    assert table.headers[-1] == "Energy J/trial\n(estimate)" and table.headers[-3] == "Peak RSS"
    energy = {row[0]: row[-1] for row in table.rows}
    assert energy == {"small json": "20.0", "big": "—"}
    # the dollar column is the API's alone: the local variant's energy is not priced into it
    dollars = {row[0]: row[table.headers.index("$ per\nsolved")] for row in table.rows}
    assert dollars["small json"] == "$0"
