"""Settings of the HTTP routes (streams, run input), read from the app settings once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from valkey_buffer import parse_flag

DEFAULT_STREAM_MAX_DURATION_SECONDS = 200.0
DEFAULT_STREAM_HEARTBEAT_SECONDS = 15.0
DEFAULT_STREAM_TOKEN_TTL_SECONDS = 3600
DEFAULT_STREAM_TOKEN_ROTATION_SECONDS = 86_400


@dataclass(frozen=True)
class StreamSettings:
    """How long a stream response may last and how often it sends heartbeats.

    Attributes:
        max_duration_seconds: ``STREAM_MAX_DURATION_SECONDS``: a stream response ends itself after this
            long with a ``retry:`` hint, well before Azure's front end cuts responses at about 230 s.
        heartbeat_seconds: ``STREAM_HEARTBEAT_SECONDS``: an SSE comment is sent after this long without
            an event, so proxies keep the idle connection open.
        retry_ms: The reconnect delay suggested to clients when a stream response ends on time.
        token_ttl_seconds: ``STREAM_TOKEN_TTL_SECONDS``: how long a stream token (``stream_url``) is valid.
        token_rotation_seconds: ``STREAM_TOKEN_ROTATION_SECONDS``: how long one signing key signs new
            tokens; it is still accepted for ``token_ttl_seconds`` after that.
    """

    max_duration_seconds: float = DEFAULT_STREAM_MAX_DURATION_SECONDS
    heartbeat_seconds: float = DEFAULT_STREAM_HEARTBEAT_SECONDS
    retry_ms: int = 1000
    token_ttl_seconds: int = DEFAULT_STREAM_TOKEN_TTL_SECONDS
    token_rotation_seconds: int = DEFAULT_STREAM_TOKEN_ROTATION_SECONDS

    def __post_init__(self) -> None:
        if not 0 < self.max_duration_seconds <= 3600:
            raise ValueError("max_duration_seconds must be more than 0 and at most 3600.")
        if not 0 < self.heartbeat_seconds <= 3600:
            raise ValueError("heartbeat_seconds must be more than 0 and at most 3600.")
        if self.retry_ms < 0:
            raise ValueError("retry_ms must not be negative.")
        if not 1 <= self.token_ttl_seconds <= 7 * 86_400:
            raise ValueError("token_ttl_seconds must be from 1 to 604800.")
        if not 60 <= self.token_rotation_seconds <= 365 * 86_400:
            raise ValueError("token_rotation_seconds must be from 60 to 31536000.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StreamSettings:
        """Read the ``STREAM_*`` settings (default: process environment).

        Raises:
            ValueError: If a value is not a number in range; the message names the setting.
        """
        env = os.environ if environ is None else environ
        return cls(
            max_duration_seconds=_seconds(env, "STREAM_MAX_DURATION_SECONDS", DEFAULT_STREAM_MAX_DURATION_SECONDS),
            heartbeat_seconds=_seconds(env, "STREAM_HEARTBEAT_SECONDS", DEFAULT_STREAM_HEARTBEAT_SECONDS),
            token_ttl_seconds=_whole_seconds(
                env, "STREAM_TOKEN_TTL_SECONDS", DEFAULT_STREAM_TOKEN_TTL_SECONDS, 1, 7 * 86_400
            ),
            token_rotation_seconds=_whole_seconds(
                env, "STREAM_TOKEN_ROTATION_SECONDS", DEFAULT_STREAM_TOKEN_ROTATION_SECONDS, 60, 365 * 86_400
            ),
        )


@dataclass(frozen=True)
class RunInputSettings:
    """What a request that starts a turn may ask for.

    Attributes:
        allow_system_role_messages: ``ALLOW_SYSTEM_ROLE_MESSAGES``: whether a client may send its
            message with ``role: system``. Off by default: a system message steers the agent above
            its instructions, which only a trusted caller should do.
    """

    allow_system_role_messages: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RunInputSettings:
        """Read ``ALLOW_SYSTEM_ROLE_MESSAGES`` (default: process environment; empty or unset: false).

        Raises:
            ValueError: If the value is not a boolean word; the message names the setting.
        """
        env = os.environ if environ is None else environ
        return cls(allow_system_role_messages=_flag(env, "ALLOW_SYSTEM_ROLE_MESSAGES"))


def _flag(env: Mapping[str, str], name: str) -> bool:
    try:
        return parse_flag(env.get(name) or "")
    except ValueError as error:
        raise ValueError(f"{name} is invalid: {error}") from None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}.") from None
    if not 0 < value <= 3600:
        raise ValueError(f"{name} must be more than 0 and at most 3600, got {raw!r}.")
    return value


def _whole_seconds(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ValueError(f"{name} must be a whole number of seconds from {low} to {high}, got {raw!r}.")
    return int(raw)
