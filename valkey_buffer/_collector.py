"""Python's cyclic garbage collector, tuned for a process that streams many turns at once.

Every chunk a turn streams allocates a few objects on its way to Valkey and to its readers, and
most of them live only until the next round trip. With a thousand turns in flight the collector's
young generation fills hundreds of times a second, each collection finds the turns, readers and
pending writes alive and promotes them, and the older generations' collections then walk the whole
heap: the app's imports (the Functions worker, Agent Framework, its model clients) as well. On a
2-core machine that was a quarter of the host's CPU at 1,000 concurrent turns, with pauses of over
100 ms (``bench/bench_scale.py``; figures in ``docs/deploy.md``).
"""

from __future__ import annotations

import gc

DEFAULT_FIRST_THRESHOLD = 50_000
"""Tracked allocations (net of deallocations) between two young collections; Python's: 700 (3.13: 2,000)."""


def tune_collector(first_threshold: int = DEFAULT_FIRST_THRESHOLD) -> None:
    """Freeze the heap built so far and make young collections rarer. Call it once the app is imported.

    What was imported before the call (modules, classes, the app's wiring) lives as long as the
    process: ``gc.freeze`` moves it out of every later collection's way. The first threshold then
    counts net allocations, which a streaming process mostly frees again by reference counting: a
    collection runs when garbage really builds up, not hundreds of times a second. Garbage in cycles
    is still collected, only in larger, rarer collections. Calling it again freezes what was built
    since.

    Args:
        first_threshold: The young generation's threshold (``gc.set_threshold``'s first value).

    Raises:
        ValueError: If ``first_threshold`` is below 1 (0 would turn the collector off).
    """
    if first_threshold < 1:
        raise ValueError("first_threshold must be at least 1")
    # The imports' own garbage goes first, so that it is not frozen (and kept) with the live heap.
    gc.collect()
    gc.freeze()
    gc.set_threshold(first_threshold, *gc.get_threshold()[1:])
