"""Local first, a bigger model after: what decides that a run failed and the next model should
try, and the record each try leaves.

A run fails when it stops without an answer, or when the user's `--check CMD` fails on the
workspace it left. The check is the bench's command check (bench.checks.command): the same
confinement, the same scrubbed environment, the same wording of what went wrong.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from localagent.bench.schema import CheckResult
from localagent.errors import ConfigError
from localagent.records import FinalStep, StopReason, Usage, as_dict

CHECK_TIMEOUT_S = 60.0


def parse_check(text: str) -> list[str]:
    """`--check 'python -m pytest -q'` -> its argv (shell words, no shell). A ConfigError
    for an empty or unbalanced command."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"--check '{text}' is not a command: {exc}", hint="quote it as a shell would") from None
    if not argv:
        raise ConfigError("--check needs a command", hint="e.g. --check 'python -m pytest -q'")
    return argv


def run_check(argv: list[str], root: Path, allow_unconfined: bool) -> CheckResult:
    """The check run in the workspace `root`, confined as the bench confines a task's
    command checks (refused where nothing can confine it, unless allowed)."""
    from localagent.bench.checks import Command, command

    check = Command(kind="command", argv=argv, timeout_s=CHECK_TIMEOUT_S)
    return command(check, root, {}, "", allow_unconfined=allow_unconfined)


@dataclass(frozen=True)
class Attempt:
    """One model's try at the run: how it ended, the check's verdict, what it spent."""

    model: str
    stop_reason: StopReason
    check: CheckResult | None  # None: no --check, or the run stopped without an answer
    usage: Usage
    steps: int
    wall_s: float
    load_s: float
    cost_usd: float  # API dollars; 0 for local models

    @property
    def succeeded(self) -> bool:
        return self.stop_reason == "answer" and (self.check is None or self.check.passed)

    @property
    def why_failed(self) -> str:
        """'' when it succeeded; else what made the next model try."""
        if self.stop_reason != "answer":
            return f"stopped without an answer ({self.stop_reason})"
        if self.check is not None and not self.check.passed:
            return f"the check failed: {self.check.detail}"
        return ""

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "stop_reason": self.stop_reason,
            "succeeded": self.succeeded,
            "why_failed": self.why_failed or None,
            "check": self.check.model_dump() if self.check else None,
            "steps": self.steps,
            "usage": as_dict(self.usage),
            "wall_s": self.wall_s,
            "load_s": self.load_s,
            "cost_usd": self.cost_usd,
        }


def attempt_of(model: str, final: FinalStep, check: CheckResult | None, load_s: float, cost: float) -> Attempt:
    return Attempt(model, final.stop_reason, check, final.usage, final.step, final.wall_s, load_s, cost)
