"""`localagent models ...` and `localagent doctor` as a user runs them: the real entry point
(in a subprocess where the process boundary matters, in-process otherwise, for speed), exit
codes, `error:`/`hint:` lines without tracebacks, and --json that parses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import pytest
from fakehub import bundled_sha256, fake_hub  # noqa: F401 (fixtures)

from localagent.cli import main


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def subprocess_cli(*args: str, home, endpoint: str | None = None) -> Done:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "LOCALAGENT_OFFLINE", "HF_ENDPOINT")}
    env["LOCALAGENT_HOME"] = str(home)
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    done = subprocess.run(
        [sys.executable, "-m", "localagent", *args], env=env, capture_output=True, text=True, timeout=120
    )
    return Done(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(monkeypatch, capsys):
    """Runs `localagent ARGS` through the console script's main() in this process."""

    def run(*args: str) -> Done:
        monkeypatch.setattr(sys, "argv", ["localagent", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return run


def assert_user_error(done: Done, *fragments: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), done.stderr
    for fragment in fragments:
        assert fragment in done.stderr


def test_pull_info_list_rm_round_trip(fake_hub, bundled_sha256, localagent_home, cli):
    pulled = subprocess_cli("models", "pull", "fake-smol", home=localagent_home, endpoint=fake_hub.url)
    assert pulled.returncode == 0, pulled.stderr
    assert bundled_sha256 in pulled.stdout and "ready" in pulled.stdout
    assert pulled.stderr == ""  # no progress bar when stderr is not a terminal

    fake_hub.stop()  # everything below works without the hub
    info = json.loads(cli("models", "info", "fake-smol", "--json").stdout)
    assert info["installed"] and info["sha256"] == bundled_sha256 and info["size_bytes"] == 98362432
    assert info["gguf"]["architecture"] == "llama" and info["gguf"]["context_length"] == 8192
    assert info["gguf"]["template_knows_tools"] is False and info["default_n_ctx"] == 8192
    assert info["kv_bytes_at_default_n_ctx"] == 23040 * 8192

    table = cli("models", "info", "fake-smol")
    assert table.returncode == 0 and "architecture" in table.stdout and bundled_sha256 in table.stdout

    listed = json.loads(cli("models", "list", "--json").stdout)
    rows = {r["alias"]: r for r in listed["models"]}
    assert listed["available_ram"] > 0
    assert rows["fake-smol"]["status"] == "installed" and rows["fake-smol"]["kv_estimated"] is False
    assert isinstance(rows["fake-smol"]["fits"], bool)
    assert rows["smollm2-135m"]["status"] == "bundled" and rows["qwen2.5-1.5b"]["status"] == "not installed"
    assert listed["aliases"] == {"qwen-small": "qwen3.5-4b", "qwen-tiny": "qwen3.5-0.8b"}

    removed = cli("models", "rm", "fake-smol")
    assert removed.returncode == 0 and "removed fake-smol" in removed.stdout
    gone = json.loads(cli("models", "list", "--json").stdout)
    assert {r["alias"]: r["status"] for r in gone["models"]}["fake-smol"] == "not installed"


def test_list_table(cli):
    done = cli("models", "list")
    assert done.returncode == 0
    assert done.stdout.splitlines()[0].split()[:2] == ["MODEL", "QUANT"]
    assert any(line.startswith("qwen3.5-4b ") for line in done.stdout.splitlines())
    assert "Aliases: qwen-small = qwen3.5-4b" in done.stdout


def test_info_of_a_model_not_installed_uses_only_the_catalog(cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    done = cli("models", "info", "qwen-small", "--json")
    data = json.loads(done.stdout)
    assert data["installed"] is False and data["catalog"]["repo"] == "unsloth/Qwen3.5-4B-GGUF"
    assert data["catalog"]["architecture"] == "qwen35" and data["catalog"]["thinking"] == "on"


def test_doctor_json(cli, localagent_home):
    done = cli("doctor", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    host = data["host"]
    assert host["cpu"] and host["logical_cores"] >= 1 and host["ram_total"] >= host["ram_available"] > 0
    assert host["backend"] in ("CPU only", "CUDA", "Metal", "Vulkan", "ROCm", "SYCL", "GPU")
    assert "CPU" in host["system_info"] and host["store"] == str(localagent_home / "models")
    assert {r["alias"] for r in data["models"]} >= {"smollm2-135m", "qwen3.5-4b"}


def test_doctor_table(cli):
    done = cli("doctor")
    assert done.returncode == 0
    assert "llama.cpp system info" in done.stdout and "fit in available RAM" in done.stdout


@pytest.mark.parametrize(
    "args, fragments",
    [
        (("models", "pull", "qwen-smal"), ("error: unknown model 'qwen-smal'", "'qwen-small'")),
        (("models", "info", "nope-model"), ("unknown model 'nope-model'",)),
        (("models", "rm", "qwen-small"), ("'qwen-small' is not installed",)),
        (("models", "pull", "qwen-small", "--quant", "Q1"), ("has no quant 'Q1'", "Q8_0")),
    ],
)
def test_user_errors(cli, args, fragments):
    assert_user_error(cli(*args), *fragments)


def test_user_error_from_the_console_script(localagent_home):
    assert_user_error(subprocess_cli("models", "pull", "qwen-smal", home=localagent_home), "'qwen-small'")


def test_offline_pull_is_one_line(cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_user_error(
        cli("models", "pull", "qwen-small"),
        "model 'qwen-small' is not on this machine and offline mode is on",
        "models import",
    )


def test_unreachable_hub_is_one_line(cli, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert_user_error(cli("models", "pull", "qwen-small"), "cannot reach the hub")


def test_import_truncated_gguf(cli, localagent_home, bundled_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    with bundled_gguf.open("rb") as fh:
        cut.write_bytes(fh.read(1_000_000))
    assert_user_error(cli("models", "import", str(cut), "--name", "cut"), "truncated", str(cut))
    assert not (localagent_home / "models" / "imported").exists() or not any(
        (localagent_home / "models" / "imported").rglob("*.gguf")
    )


def test_unwritable_store(cli, localagent_home, bundled_gguf):
    (localagent_home / "models").write_text("not a folder")
    assert_user_error(
        cli("models", "import", str(bundled_gguf), "--name", "smol"),
        "cannot write to the model store",
        "LOCALAGENT_HOME",
    )
