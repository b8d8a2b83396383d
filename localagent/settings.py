"""The one place that reads environment variables and decides where things live."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TRUTHY = {"1", "true", "yes", "on"}


def home() -> Path:
    """The store root: $LOCALAGENT_HOME, else the platform's per-user data folder."""
    explicit = os.environ.get("LOCALAGENT_HOME")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "localagent"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "localagent"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "localagent"


def models_dir() -> Path:
    return home() / "models"


def user_catalog() -> Path:
    return home() / "models.toml"


def database() -> Path:
    return home() / "results.db"


def runs_dir() -> Path:
    return home() / "runs"


def offline() -> bool:
    """True when nothing may touch the network (HF_HUB_OFFLINE or LOCALAGENT_OFFLINE)."""
    return any(os.environ.get(v, "").lower() in TRUTHY for v in ("HF_HUB_OFFLINE", "LOCALAGENT_OFFLINE"))


def hf_endpoint() -> str:
    """Read at call time (huggingface_hub reads HF_ENDPOINT once, at import)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def env(name: str) -> str | None:
    """An environment variable, empty counted as unset (API keys)."""
    return os.environ.get(name) or None
