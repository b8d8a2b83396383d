"""The CLI side of issue 12: `models pull hf.co/...`, `models scan`, doctor's line on other
tools' models, and hosted models in `models list`."""

from __future__ import annotations

import json

from fakehub import FILE, REPO, bundled_sha256, fake_hub  # noqa: F401 (fixtures)
from test_cli_models import assert_user_error, cli  # noqa: F401 (fixture)
from test_scan import ollama_model


def test_pull_a_hub_name_says_which_quant_it_chose(fake_hub, bundled_sha256, cli, monkeypatch):
    done = cli("models", "pull", f"hf.co/{REPO}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"note: {REPO} has no Q4_K_M; using Q4_1, the nearest (its quants: Q4_1, Q8_0)"
    assert lines[1].startswith(f"hf.co/{REPO} (Q4_1) ready: ") and bundled_sha256 in lines[2]

    fake_hub.stop()
    listed = json.loads(cli("models", "list", "--json").stdout)
    row = next(r for r in listed["models"] if r["alias"] == f"hf.co/{REPO}")
    assert row["status"] == "installed" and row["source"] == "hub" and FILE in row["description"]
    info = json.loads(cli("models", "info", f"hf.co/{REPO}", "--json").stdout)
    assert info["sha256"] == bundled_sha256 and info["quant"] == "Q4_1" and info["parts"] is None


def test_hub_names_that_cannot_be_used_are_one_line(cli, monkeypatch):
    assert_user_error(
        cli("models", "pull", "hf.co/not-a-repo"), "does not name a Hugging Face repository", "hf.co/USER/REPO"
    )
    assert_user_error(cli("models", "info", "hf.co/someone/Model-GGUF"), "is not installed", "models pull")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_user_error(cli("models", "pull", "hf.co/someone/Model-GGUF:Q8_0"), "offline mode is on", "models scan")


def test_scan_list_rm_and_doctor(other_tools, bundled_gguf, bundled_sha256, cli):
    ollama_model(other_tools.ollama, "smol", "latest", bundled_gguf.read_bytes())
    ollama_model(other_tools.ollama, "gone", "latest", None)

    doctor = cli("doctor")
    assert doctor.returncode == 0
    assert "models of other tools: 1 in Ollama; 1 not registered: `localagent models scan`" in doctor.stdout
    others = json.loads(cli("doctor", "--json").stdout)["other_tools"]
    assert {(o["alias"], o["problem"] is None) for o in others} == {
        ("ollama:smol:latest", True),
        ("ollama:gone:latest", False),
    }

    scanned = cli("models", "scan")
    assert scanned.returncode == 0, scanned.stderr
    table = scanned.stdout.splitlines()
    assert table[0].split() == ["MODEL", "QUANT", "FOUND", "IN", "STATUS", "FILE"]
    assert any(line.split()[:4] == ["ollama:smol:latest", "Q4_1", "ollama", "registered"] for line in table)
    assert any(
        line.startswith("skipped: ollama:gone:latest: its model blob") and "ollama pull" in line for line in table
    )

    again = json.loads(cli("models", "scan", "--json").stdout)
    statuses = {m["alias"]: m["status"] for m in again["models"]}
    assert statuses == {"ollama:smol:latest": "known", "ollama:gone:latest": "skipped"}
    assert str(other_tools.ollama) in again["places"]
    assert "all registered" in cli("doctor").stdout

    listed = json.loads(cli("models", "list", "--json").stdout)
    row = next(r for r in listed["models"] if r["alias"] == "ollama:smol:latest")
    assert row["source"] == "ollama" and row["status"] == "installed"

    removed = cli("models", "rm", "ollama:smol")
    blob = other_tools.ollama / "blobs" / f"sha256-{bundled_sha256}"
    assert (
        removed.returncode == 0 and f"unregistered ollama:smol:latest (Q4_1); its file stays: {blob}" in removed.stdout
    )
    assert blob.is_file()


def test_hosted_models_in_list(cli, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-value-0123")
    listed = cli("models", "list", "--json")
    assert "sk-test-secret-value-0123" not in listed.stdout
    hosted = {h["alias"]: h for h in json.loads(listed.stdout)["hosted"]}
    gpt = hosted["gpt-5-mini"]
    assert (gpt["provider"], gpt["api_key_env"], gpt["key_set"]) == ("openai", "OPENAI_API_KEY", True)
    assert gpt["model"] and gpt["input_usd_per_mtok"] == 0.25 and gpt["price_as_of"] == "2025-10"
    assert hosted["claude-haiku-4.5"]["key_set"] is False

    table = cli("models", "list")
    assert table.returncode == 0 and "sk-test-secret-value-0123" not in table.stdout
    assert "Hosted models (prices in USD per 1M tokens: input / cached input / output)" in table.stdout
    line = next(x for x in table.stdout.splitlines() if x.startswith("gpt-5-mini "))
    assert "$0.25 / $0.025 / $2" in line and "2025-10" in line and "OPENAI_API_KEY set" in line
    line = next(x for x in table.stdout.splitlines() if x.startswith("claude-haiku-4.5 "))
    assert "ANTHROPIC_API_KEY NOT set" in line
