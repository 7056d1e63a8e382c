"""Sizes as people read them: the one byte formatter every report uses."""

from __future__ import annotations

_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def format_bytes(n: int | None, digits: int = 1, unit: str | None = None) -> str:
    """`n` bytes in `unit` (KiB, MiB, GiB), or in the largest unit it reaches when `unit` is None;
    thousands separated, so 1,234.5 KiB and 87.3 KiB line up with their neighbours."""
    if n is None:
        return "unknown"
    scales = dict(_UNITS)
    if unit is None:
        unit = next((name for name, scale in _UNITS if abs(n) >= scale), "B")
    if unit == "B":
        return f"{n:,} B"
    return f"{n / scales[unit]:,.{digits}f} {unit}"
