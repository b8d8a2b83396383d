"""How quantities and times are written for people and stored for programs: byte sizes
(1.5 KiB) and timestamps (ISO 8601, UTC, whole seconds). Stored figures stay in bytes and
seconds; these are for what is shown and for the timestamps records carry."""

from __future__ import annotations

from datetime import datetime, timezone


def format_bytes(n: int | None, unknown: str = "?") -> str:
    """1536 -> '1.5 KiB'; `unknown` for None."""
    if n is None:
        return unknown
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def utc_now() -> str:
    """Now, as stored: '2026-11-30T04:50:00+00:00'."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
