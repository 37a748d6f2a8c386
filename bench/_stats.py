"""The figures every benchmark prints: percentiles, and two variants measured in alternating rounds."""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values`` by rank; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def alternating_rounds(
    first: Callable[[], Awaitable[float]], second: Callable[[], Awaitable[float]], rounds: int
) -> tuple[float, float, float]:
    """Median of each measurement and the median of the rounds' ratios ``second / first``.

    Each round measures both, which goes first alternating (ABBA). Speed drifts over a run (a turn is
    a little slower than the one before), so the ratio of two neighbouring measurements is steadier
    than the ratio of the two medians.
    """
    firsts: list[float] = []
    seconds: list[float] = []
    ratios: list[float] = []
    for run in range(rounds):
        if run % 2:
            a, b = await first(), await second()
        else:
            b = await second()
            a = await first()
        firsts.append(a)
        seconds.append(b)
        ratios.append(b / a)
    return statistics.median(firsts), statistics.median(seconds), statistics.median(ratios)
