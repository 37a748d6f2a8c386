"""The one wait the tests use: it returns what became true, and a stall fails saying what it waited for."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.eventually import eventually, eventually_blocking


async def test_eventually_returns_the_first_truthy_result_of_a_sync_or_async_condition() -> None:
    calls: list[int] = []

    def third_call() -> str | None:
        calls.append(1)
        return "ready" if len(calls) == 3 else None

    async def at_once() -> int:
        await asyncio.sleep(0)
        return 42

    assert await eventually(third_call, interval=0) == "ready"
    assert await eventually(at_once) == 42


async def test_eventually_fails_within_its_timeout_saying_what_never_became_true() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"the reader never joined \(not within 0.2 s\)"):
        await eventually(lambda: False, timeout=0.2, message="the reader never joined")
    assert 0.2 <= time.monotonic() - started < 1
    with pytest.raises(AssertionError, match="state: 7"):
        await eventually(lambda: None, timeout=0, message=lambda: "state: 7")


def test_eventually_blocking_is_the_same_wait_for_synchronous_tests() -> None:
    calls: list[int] = []
    assert eventually_blocking(lambda: calls.append(1) or len(calls) >= 2, interval=0) is True
    with pytest.raises(AssertionError, match=r"nothing came \(not within 0.1 s\)"):
        eventually_blocking(lambda: False, timeout=0.1, message="nothing came")
