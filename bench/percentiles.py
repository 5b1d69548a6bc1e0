"""The percentile every bench/ script reports (nearest rank on the sorted values)."""

from __future__ import annotations

from collections.abc import Sequence


def pct(values: Sequence[float], q: float) -> float:
    """The value at quantile `q` (0..1) of `values`, by nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]
