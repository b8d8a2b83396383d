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
