"""Energy a trial used, beside (never inside) its API dollars.

On Linux, Intel and AMD CPUs count the energy of each package in RAPL counters,
/sys/class/powercap/intel-rapl:N/energy_uj, in microjoules, wrapping at max_energy_range_uj.
They count the whole package, not one process, and are often readable by root only; where
none can be read, a configured power draw (--watts) times the wall time stands in. Either way
the figure is an estimate of what the machine drew while the trial ran, and says how it was
measured: `rapl` or `estimate`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

RAPL_ROOT = Path("/sys/class/powercap")
JOULES_PER_KWH = 3.6e6

EnergyMethod = Literal["rapl", "estimate"]


@dataclass(frozen=True)
class Zone:
    """One package's counter: its energy_uj file and where the counter wraps."""

    energy_file: Path
    max_range_uj: int


def rapl_zones(root: Path = RAPL_ROOT) -> list[Zone]:
    """The packages whose counters can be read (intel-rapl:N; their sub-zones intel-rapl:N:M,
    the cores and uncore, are inside a package's count and left out so nothing counts twice)."""
    zones = []
    for folder in sorted(root.glob("intel-rapl:*")) if root.is_dir() else []:
        if folder.name.count(":") != 1:
            continue
        try:
            int((folder / "energy_uj").read_text())
            max_range = int((folder / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue  # unreadable (root only since 2020 on most kernels) or not a counter
        zones.append(Zone(folder / "energy_uj", max_range))
    return zones


def counted_uj(before: int, after: int, max_range_uj: int) -> int:
    """Microjoules between two readings of one counter, across one wrap at max_range_uj."""
    return after - before if after >= before else after + max_range_uj - before


@dataclass(frozen=True)
class Energy:
    joules: float
    method: EnergyMethod


class EnergyMeter:
    """`with EnergyMeter(watts) as meter: ...` then `meter.result`: RAPL when readable, else
    `watts` x the elapsed time, else None (nothing to measure with)."""

    def __init__(self, watts: float | None = None, root: Path = RAPL_ROOT):
        self.watts = watts
        self.zones = rapl_zones(root)
        self.result: Energy | None = None
        self._start: list[int] = []
        self._t0 = 0.0

    def _read(self) -> list[int] | None:
        try:
            return [int(z.energy_file.read_text()) for z in self.zones]
        except (OSError, ValueError):
            return None

    def __enter__(self) -> EnergyMeter:
        self._start = (self._read() or []) if self.zones else []
        self._t0 = time.monotonic()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed = time.monotonic() - self._t0
        end = self._read() if self._start else None
        if end is not None and len(end) == len(self._start):
            uj = sum(counted_uj(a, b, z.max_range_uj) for a, b, z in zip(self._start, end, self.zones, strict=True))
            self.result = Energy(uj / 1e6, "rapl")
        elif self.watts is not None:
            self.result = Energy(self.watts * elapsed, "estimate")


def energy_usd(joules: float, price_per_kwh: float) -> float:
    """The electricity's price: joules at $/kWh. Never added to API dollars."""
    return joules / JOULES_PER_KWH * price_per_kwh


def setting(name: str, flag: str) -> float | None:
    """A positive number from the environment (LOCALAGENT_WATTS, LOCALAGENT_ENERGY_PRICE), the
    setting behind `flag`; None when unset. A value that is no such number is a ConfigError."""
    from localagent import settings
    from localagent.errors import ConfigError

    text = settings.env(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:  # also refuses nan and inf
        raise ConfigError(
            f"{name}={text!r} is not a positive number", hint=f"e.g. {name}=35 (the setting behind {flag}), or unset it"
        )
    return value
