"""tune_collector: the heap frozen, young collections rarer, in a process of its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from valkey_buffer import tune_collector

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_tune_collector_freezes_what_exists_and_sets_the_first_threshold_only() -> None:
    out = _run(
        """
        import gc
        from valkey_buffer import tune_collector
        second, third = gc.get_threshold()[1:]
        tune_collector(12_345)
        frozen = gc.get_freeze_count()
        print(gc.get_threshold() == (12_345, second, third), frozen > 1_000, gc.isenabled())
        later = [[] for _ in range(10)]  # built after the call: tracked, not frozen
        print(gc.get_freeze_count() == frozen, all(gc.is_tracked(item) for item in later))
        """
    )
    assert out == ["True", "True", "True", "True", "True"]


def test_tune_collector_collects_the_garbage_it_would_otherwise_freeze() -> None:
    out = _run(
        """
        import gc, weakref
        from valkey_buffer import tune_collector
        class Node: pass
        node = Node(); node.me = node  # a cycle: only the collector frees it
        alive = weakref.ref(node)
        gc.disable()
        del node
        tune_collector()
        print(alive() is None)
        """
    )
    assert out == ["True"]


@pytest.mark.parametrize("threshold", [0, -1])
def test_tune_collector_refuses_a_threshold_that_would_turn_the_collector_off(threshold: int) -> None:
    with pytest.raises(ValueError, match="first_threshold"):
        tune_collector(threshold)
