"""How the report writes its figures: percentages, intervals, dollars, durations, counts,
speed ratios and tier ranges, with a dash for what is not known. Byte sizes are
`localagent.units.format_bytes`, given DASH."""

from __future__ import annotations

DASH = "—"


def fmt_pct(x: float | None) -> str:
    return DASH if x is None else f"{x * 100:.0f}%"


def fmt_interval(lo: float, hi: float) -> str:
    return f"{lo * 100:.0f}–{hi * 100:.0f}%"


def fmt_usd(x: float | None) -> str:
    if x is None:
        return DASH
    if x == 0:
        return "$0"
    return f"${x:.4f}" if x < 0.01 else f"${x:.2f}"


def fmt_seconds(x: float | None) -> str:
    if x is None:
        return DASH
    if x < 0.01:
        return f"{x * 1000:.1f} ms"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.1f} s"


def fmt_number(x: float | None, digits: int = 0) -> str:
    return DASH if x is None else f"{x:,.{digits}f}"


def fmt_speed(ratio: float) -> str:
    if f"{ratio:.1f}" == "1.0":
        return "as fast"
    return f"{ratio:.1f}x slower" if ratio > 1 else f"{1 / ratio:.1f}x faster"


def fmt_tiers(tiers: list[int]) -> str:
    """[1, 2] -> 'tier 1–2'; [1, 3, 4] -> 'tiers 1 and 3–4'."""
    runs: list[list[int]] = []
    for t in tiers:
        if runs and t == runs[-1][-1] + 1:
            runs[-1].append(t)
        else:
            runs.append([t])
    texts = [str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs]
    word = "tier" if len(runs) == 1 else "tiers"
    joined = texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]
    return f"{word} {joined}"
