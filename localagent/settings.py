"""The one place that reads environment variables and decides where things live."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from localagent.errors import ConfigError

TRUTHY = {"1", "true", "yes", "on"}
FALSY = {"0", "false", "no", "off", ""}


def expand_user(path: Path) -> Path:
    """`~` and `~user` expanded; a path naming a user that does not exist is kept as written
    (Path.expanduser raises RuntimeError, which no caller expects)."""
    try:
        return path.expanduser()
    except RuntimeError:
        return path


def home() -> Path:
    """The store root: $LOCALAGENT_HOME, else the platform's per-user data folder."""
    explicit = os.environ.get("LOCALAGENT_HOME")
    if explicit:
        return expand_user(Path(explicit))
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
    """True when nothing may touch the network (HF_HUB_OFFLINE or LOCALAGENT_OFFLINE).

    LOCALAGENT_OFFLINE is ours: its value is read trimmed and in any case, and one that is
    neither on nor off is a ConfigError. `"1 "` from a shell script, or a typo, used to count
    as off and send the run to the network without a word. HF_HUB_OFFLINE belongs to
    huggingface_hub, which reads a value it does not know as off; other tools set it too, so
    it is only trimmed here, never refused."""
    ours = os.environ.get("LOCALAGENT_OFFLINE", "").strip().lower()
    if ours not in TRUTHY | FALSY:
        raise ConfigError(
            f"LOCALAGENT_OFFLINE={os.environ['LOCALAGENT_OFFLINE']!r} is neither on nor off",
            hint="set LOCALAGENT_OFFLINE to 1, true, yes or on (offline), or 0, false, no, off or nothing (online)",
        )
    return ours in TRUTHY or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUTHY


def cluster_address() -> str | None:
    """LOCALAGENT_CLUSTER: the Ray cluster `bench` runs its trials on when --cluster is not
    given (e.g. 127.0.0.1:6379, or ray://host:10001 through Ray Client)."""
    return os.environ.get("LOCALAGENT_CLUSTER", "").strip() or None


def hf_endpoint() -> str:
    """Read at call time (huggingface_hub reads HF_ENDPOINT once, at import)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def env(name: str) -> str | None:
    """An environment variable, empty counted as unset (API keys)."""
    return os.environ.get(name) or None
