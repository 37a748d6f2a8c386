"""Wait for a condition with a bound: the one way tests wait for something to become true.

A stall must still fail the test, so every wait has a timeout and fails with a message that says
what never became true. ``eventually`` is for async tests (it sleeps without blocking the loop,
whose tasks may be what makes the condition true); ``eventually_blocking`` is the same wait for
synchronous tests that drive a host in another process or thread.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _describe(message: str | Callable[[], str], timeout: float) -> str:
    text = message() if callable(message) else message
    return f"{text} (not within {timeout:g} s)"


async def eventually(
    condition: Callable[[], T | Awaitable[T | None] | None],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 (the wait fails saying what never became true)
    interval: float = 0.01,
    message: str | Callable[[], str] = "the condition never became true",
) -> T:
    """Await ``condition`` (sync or async) until it returns something truthy, and return that.

    Args:
        condition: Called again every ``interval`` seconds; may return an awaitable.
        timeout: Seconds before the wait fails.
        interval: Seconds between calls.
        message: What never became true (or a callable that says so, called once on failure with
            the state as it is then).

    Returns:
        The condition's first truthy result.

    Raises:
        AssertionError: If the condition is not true within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(_describe(message, timeout))
        await asyncio.sleep(interval)


def eventually_blocking(
    condition: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "the condition never became true",
) -> T:
    """``eventually`` for synchronous tests: the same bound and message, sleeping the thread.

    Raises:
        AssertionError: If the condition is not true within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(_describe(message, timeout))
        time.sleep(interval)
