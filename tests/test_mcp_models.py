"""`localagent mcp`: which model names a client may give run_agent. The real server over
stdio; runs use the bundled SmolLM2-135M."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

pytest.importorskip("mcp.server.mcpserver", reason="needs the 'mcp' extra (mcp >= 2)")

from fakehub import FakeHub, HubFile, bundled_sha256  # noqa: E402, F401 (fixtures)
from test_mcp import CALL, connect, server_params, text_of  # noqa: E402

RUN = {"prompt": "Say hello.", "tool_mode": "json", "max_steps": 1}
PATH_REFUSAL = "does not load models by path"
UNUSABLE = "is not a model file this server can use"


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    """A root with a project and a text file named like a model; outside it, an existing
    non-model file, a fake .gguf, a folder named .gguf and a path that does not exist."""
    root = tmp_path / "root"
    (root / "proj").mkdir(parents=True)
    (root / "proj" / "notes.txt").write_text("hello\n")
    outside = tmp_path / "outside"
    (outside / "folder.gguf").mkdir(parents=True)
    (outside / "secret.txt").write_text("s3cret\n")
    (outside / "fake.gguf").write_text("not a gguf\n")
    return {
        "root": root,
        "missing": outside / "missing.gguf",
        "text": outside / "secret.txt",
        "fake": outside / "fake.gguf",
        "folder": outside / "folder.gguf",
    }


def same_refusal(texts: dict[str, str]) -> str:
    """The one message all of `texts` (name -> error text) give, with the name taken out."""
    shapes = {text.replace(name, "NAME") for name, text in texts.items()}
    assert len(shapes) == 1, texts
    return shapes.pop()


def test_names_only_without_the_flag(
    places: dict[str, Path], localagent_home: Path, tmp_path: Path, bundled_gguf: Path
) -> None:
    imported = subprocess.run(
        [sys.executable, "-m", "localagent", "models", "import", str(bundled_gguf), "--name", "mysmol"],
        capture_output=True,
        text=True,
        env={**os.environ, "LOCALAGENT_HOME": str(localagent_home)},
        timeout=300,
    )
    assert imported.returncode == 0, imported.stderr
    inside = places["root"] / "proj" / "model.gguf"
    inside.symlink_to(bundled_gguf)
    params = server_params(places["root"], localagent_home, "--offline")

    async def scenario() -> None:
        async with connect(params, tmp_path / "stderr.txt") as client:
            texts = {}
            for name in (
                str(bundled_gguf),
                "proj/model.gguf",
                str(places["missing"]),
                str(places["text"]),
                str(places["fake"]),
            ):
                refused, _ = await client.call("run_agent", model=name, **RUN)
                assert refused.is_error, name
                texts[name] = text_of(refused)
            message = same_refusal(texts)
            assert PATH_REFUSAL in message and "--allow-model-paths" in message and "models import" in message

            typo, _ = await client.call("run_agent", model="mysmoll", **RUN)
            assert typo.is_error and "unknown model 'mysmoll'" in text_of(typo) and "'mysmol'" in text_of(typo)
            pulled, _ = await client.call("pull_model", alias=str(bundled_gguf))
            assert pulled.is_error and "not a path" in text_of(pulled)

            # catalog alias, installed model, pseudo models: admitted
            for name in ("smollm2-135m", "mysmol", "noop"):
                ran, _ = await client.call("run_agent", model=name, **RUN)
                assert not ran.is_error, (name, text_of(ran))
                assert ran.structured_content["model"] == name
            oracle, _ = await client.call("run_agent", model="oracle", **RUN)
            assert oracle.is_error and "only runs inside a bench" in text_of(oracle)
            # an [aliases] name gets as far as the store: offline, it is not downloaded
            qwen, _ = await client.call("run_agent", model="qwen-small", **CALL, prompt="hi")
            assert qwen.is_error
            assert PATH_REFUSAL not in text_of(qwen) and "unknown model" not in text_of(qwen)
            assert "offline mode is on" in text_of(qwen) or "of RAM" in text_of(qwen), text_of(qwen)

    anyio.run(scenario)


def test_paths_with_the_flag(
    places: dict[str, Path], localagent_home: Path, tmp_path: Path, bundled_gguf: Path
) -> None:
    params = server_params(places["root"], localagent_home, "--offline", "--allow-model-paths")

    async def scenario() -> None:
        async with connect(params, tmp_path / "stderr.txt") as client:
            # outside the root: missing, not a model, not a GGUF, a folder: one message
            texts = {}
            for key in ("missing", "text", "fake", "folder"):
                refused, _ = await client.call("run_agent", model=str(places[key]), **RUN)
                assert refused.is_error, key
                texts[str(places[key])] = text_of(refused)
            assert UNUSABLE in same_refusal(texts)

            # inside the root the error may say what is wrong
            not_gguf, _ = await client.call("run_agent", model="proj/notes.txt", **RUN)
            assert not_gguf.is_error and "does not name a .gguf file" in text_of(not_gguf)
            missing, _ = await client.call("run_agent", model="proj/none.gguf", **RUN)
            assert missing.is_error and "no such model file" in text_of(missing)

            ran, _ = await client.call("run_agent", model=str(bundled_gguf), **RUN)
            assert not ran.is_error, text_of(ran)
            assert ran.structured_content["tokens_in"] > 0 and ran.structured_content["model_loaded_fresh"]

    anyio.run(scenario)


def test_hub_names_once_installed_and_only_the_operator_pulls_one(
    places: dict[str, Path], localagent_home: Path, tmp_path: Path, bundled_gguf: Path, bundled_sha256: str
) -> None:
    """A client's hub name not installed is refused with no request to the hub; the operator's
    `--model hf.co/...` is pulled and run; then a client may name it."""
    repo = "fakeorg/Smol-GGUF"
    name = f"hf.co/{repo}"
    hub = FakeHub({repo: {"Smol-Q4_K_M.gguf": HubFile(bundled_gguf, bundled_sha256, bundled_gguf.stat().st_size)}})
    hub.start()
    online = server_params(places["root"], localagent_home, HF_ENDPOINT=hub.url)
    (localagent_home / "models.toml").write_text(
        '[local.fake-huge]\nrepo = "fakeorg/huge"\nfile = "huge.gguf"\nquant = "Q4_K_M"\nsize_mb = 900000000\ncontext = 8192\n'
    )

    async def refused_online() -> None:
        async with connect(online, tmp_path / "stderr-1.txt") as client:
            refused, _ = await client.call("run_agent", model=name, **RUN)
            assert refused.is_error and f"'{name}' is not installed on this server" in text_of(refused)
            assert f"localagent models pull {name}" in text_of(refused) and f"--model {name}" in text_of(refused)
            pulled, _ = await client.call("pull_model", alias=f"hf://{repo}/Smol-Q4_K_M.gguf")
            assert pulled.is_error and "catalog models only" in text_of(pulled)
            too_big, _ = await client.call("pull_model", alias="fake-huge")
            assert too_big.is_error and "fake-huge needs about" in text_of(too_big) and "of RAM" in text_of(too_big)

    async def operator_pulls() -> None:
        params = server_params(places["root"], localagent_home, "--model", name, HF_ENDPOINT=hub.url)
        async with connect(params, tmp_path / "stderr-2.txt") as client:
            ran, _ = await client.call("run_agent", **RUN)
            assert not ran.is_error, text_of(ran)
            assert ran.structured_content["model"] == name and ran.structured_content["tokens_in"] > 0

    async def admitted_offline() -> None:
        params = server_params(places["root"], localagent_home, "--offline")
        async with connect(params, tmp_path / "stderr-3.txt") as client:
            other, _ = await client.call("run_agent", model=f"{name}:Q8_0", **RUN)
            assert other.is_error and "not installed on this server" in text_of(other)
            ran, _ = await client.call("run_agent", model=f"hf.co/{repo}:q4_k_m", **RUN)
            assert not ran.is_error, text_of(ran)
            assert ran.structured_content["tokens_in"] > 0

    try:
        anyio.run(refused_online)
        assert hub.requests == []  # not even a file list
        anyio.run(operator_pulls)
        assert hub.gets >= 1 and hub.sent == bundled_gguf.stat().st_size
        hub.stop()
        anyio.run(admitted_offline)
    finally:
        hub.stop()
