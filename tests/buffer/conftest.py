"""Fixtures of the buffer tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from valkey_buffer import ValkeySettings, ValkeyStreamBuffer


@pytest.fixture
def buffer(make_buffer: Callable[..., ValkeyStreamBuffer], valkey_settings: ValkeySettings) -> ValkeyStreamBuffer:
    """A buffer on the session's standalone server with the default options."""
    return make_buffer(valkey_settings)
