"""`models verify`: every installed file hashed again against the sha256 its manifest
recorded. Reads only: what changed is reported, never re-registered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from localagent.store.disk import sha256_file
from localagent.store.installed import selected
from localagent.store.manifests import Manifest, scan


@dataclass(frozen=True)
class Verification:
    """One row of `models verify`: an installed file hashed again against its manifest."""

    alias: str
    quant: str
    status: Literal["ok", "changed", "missing", "broken"]
    path: Path | None
    expected: str | None  # the sha256 recorded when it was installed
    actual: str | None  # the sha256 now; None when there was no file to hash
    problem: str | None  # what is wrong; None when ok


def verify(alias: str | None = None) -> list[Verification]:
    """Hash every installed model file again (or those of `alias`, ALIAS or ALIAS:QUANT) and
    compare it with the sha256 its manifest recorded; broken manifests are reported too."""
    good, broken = selected(alias, None) if alias else scan()
    rows = [_verified(m) for m in good]
    rows += [Verification(b.alias, b.quant, "broken", b.path, None, None, b.problem) for b in broken]
    return rows


def _verified(m: Manifest) -> Verification:
    """The manifest's file, and every other part of a split one, hashed again."""
    path = Path(m.path)
    files = [(path, m.sha256), *((Path(p.path), p.sha256) for p in m.parts)]
    actual_first = None
    for file, expected in files:
        try:
            actual = sha256_file(file)
        except OSError as exc:  # deleted, moved, or no longer readable
            return Verification(m.alias, m.quant, "missing", path, m.sha256, None, f"{file}: {exc.strerror or exc}")
        actual_first = actual_first or actual
        if actual != expected:
            problem = f"{file} has sha256 {actual}, not the {expected} it had when installed"
            return Verification(m.alias, m.quant, "changed", path, m.sha256, actual_first, problem)
    return Verification(m.alias, m.quant, "ok", path, m.sha256, actual_first, None)
