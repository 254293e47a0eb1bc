"""``cycles.txt``: the headline metrics, one ``name value`` per line, easy to grep."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"cycles.txt: non-finite metric value {value!r}")
        return f"{value:.3f}"
    raise TypeError(f"cycles.txt: metric value {value!r} is not a number")


def format_cycles_txt(metrics: Mapping[str, Any]) -> str:
    """One ``name value`` line per metric, sorted by name; ints as ints, floats with 3
    decimals (``12.500``), booleans as 1/0. Same metrics -> same bytes."""
    for name in metrics:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"cycles.txt: bad metric name {name!r}")
    return "".join(f"{name} {_fmt(metrics[name])}\n" for name in sorted(metrics))


def parse_cycles_txt(text: str) -> dict[str, int | float]:
    """Inverse of :func:`format_cycles_txt` (values with a '.' are floats)."""
    out: dict[str, int | float] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            name, value = line.split()
            out[name] = float(value) if "." in value else int(value)
        except ValueError:
            raise ValueError(f"cycles.txt:{lineno}: bad line {line!r}") from None
    return out
