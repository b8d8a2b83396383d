"""A bench over a matrix of variants (`--model A --model B --tool-mode json,native`): every
combination runs, every record names its variant, and the map shows each; a matrix that
contradicts itself is refused before any model loads. The local model is a tiny random-weight
Qwen2 GGUF (tests/archmodels.py) that the real llama.cpp runs in seconds."""

from __future__ import annotations

import json

import pytest
from archmodels import build
from fixtures_cli import cli

from localagent.bench.matrix import parse_tool_modes
from localagent.errors import ConfigError


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tool-mode", "json,json"], "--tool-mode names 'json' twice"),
        (["--tool-mode", "jsno"], "--tool-mode 'jsno' is not a tool mode"),
        (["--tool-mode", "auto,native"], "--tool-mode auto is one of json or native already"),
        (
            ["--model", "oracle", "--tool-mode", "json,native"],
            "--tool-mode json,native changes only local models, and none is asked for",
        ),
        (
            ["--model", "smollm2-135m:q4_1", "--model", "smollm2-135m:Q4_1"],
            "--model 'smollm2-135m:q4_1' and --model 'smollm2-135m:Q4_1' are the same variant",
        ),
        (
            ["--model", "smollm2-135m", "--tool-mode", "json,native", "--out", "x"],
            "--tool-mode json,native makes 2 runs, and --out names one",
        ),
    ],
)
def test_a_matrix_at_odds_with_itself_is_refused_before_anything_runs(
    args, message, localagent_home, monkeypatch, capsys
):
    code, out, err = cli(monkeypatch, capsys, "bench", *args)
    assert code == 1 and out == ""
    assert err.startswith(f"error: {message}") and "\nhint: " in err
    assert not (localagent_home / "runs").exists()  # no run folder, no model loaded


@pytest.mark.parametrize(
    "text, modes", [("json", ("json",)), ("json,native", ("json", "native")), (" native , json ", ("native", "json"))]
)
def test_tool_modes_parse_in_the_order_given(text, modes):
    assert parse_tool_modes(text) == modes


def test_an_empty_tool_mode_is_refused():
    with pytest.raises(ConfigError, match="--tool-mode needs a mode"):
        parse_tool_modes(" , ")


def test_every_combination_runs_and_the_map_names_each_variant(monkeypatch, capsys):
    model = str(build("qwen2"))
    code, out, err = cli(
        monkeypatch,
        capsys,
        *["bench", "--model", "oracle", "--model", model, "--tool-mode", "json,native", "--task", "write-hello"],
        *["--max-steps", "2", "--max-tokens", "16", "--ctx", "2048", "--json"],
    )
    assert code == 0, err
    runs = json.loads(out)["runs"]
    assert [r["run"]["tool_mode"] for r in runs] == ["json", "native"]
    assert runs[0]["run"]["models"] == ["oracle", model]
    assert runs[1]["run"]["models"] == [model]  # the scripted oracle has no tool mode to vary
    for r in runs:
        for t in r["trials"]:
            if t["model"] == model:
                assert t["engine"]["tool_mode"] == r["run"]["tool_mode"]
    code, out, err = cli(monkeypatch, capsys, "map", "--json")
    assert code == 0, err
    labels = set(json.loads(out)["variants"])
    assert labels == {"oracle", f"{model} json ctx=2048", f"{model} native ctx=2048"}
