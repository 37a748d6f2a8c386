"""ValkeySettings: every connection and behaviour setting, read from the environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

AuthMode = Literal["password", "entra"]

ENTRA_SCOPE = "https://redis.azure.com/.default"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class ValkeySettings:
    """Connection and behaviour settings of the Valkey stream buffer.

    Attributes:
        host: The Valkey host (``VALKEY_HOST``).
        port: The Valkey port (``VALKEY_PORT``); Azure Managed Redis listens on 10000.
        tls: Whether to connect with TLS (``VALKEY_TLS``).
        cluster: Whether the server is a cluster (``VALKEY_CLUSTER``): a cluster-aware client is used.
        username: The ACL user (``VALKEY_USERNAME``); with Entra ID, the identity's object id.
        password: The password (``VALKEY_PASSWORD``); unused with Entra ID.
        auth: ``password`` or ``entra`` (``VALKEY_AUTH``): Entra ID takes tokens for
            ``https://redis.azure.com/.default`` from an ``azure-identity`` credential.
        stream_ttl_seconds: How long a stream lives after its last write (``VALKEY_STREAM_TTL_SECONDS``).
        stream_maxlen: Approximate cap on entries per stream, ``None`` for no cap (``VALKEY_STREAM_MAXLEN``).
        read_block_ms: How long the live feed's blocking read waits per call (``VALKEY_READ_BLOCK_MS``).
        read_idle_timeout_seconds: How long a reader waits for a new entry before it gives up with
            an error (``VALKEY_READ_IDLE_TIMEOUT_SECONDS``).
        read_reconcile_seconds: How long a reader of one turn waits for the turn's next entry before
            it asks the turn's committed outcome (``VALKEY_READ_RECONCILE_SECONDS``).
        request_timeout_ms: Timeout of each non-blocking request (``VALKEY_REQUEST_TIMEOUT_MS``).
    """

    host: str = "localhost"
    port: int = 6379
    tls: bool = False
    cluster: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    auth: AuthMode = "password"
    stream_ttl_seconds: int = 3600
    stream_maxlen: int | None = 10_000
    read_block_ms: int = 5_000
    read_idle_timeout_seconds: float = 120.0
    read_reconcile_seconds: float = 10.0
    request_timeout_ms: int = 1_000

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host is required")
        _check_range("port", self.port, 1, 65535)
        if self.auth not in ("password", "entra"):
            raise ValueError(f"auth must be 'password' or 'entra', got {self.auth!r}")
        if self.auth == "entra" and self.password:
            raise ValueError("password must not be set when auth is 'entra': the token is the password")
        _check_range("stream_ttl_seconds", self.stream_ttl_seconds, 1, 365 * 24 * 3600)
        if self.stream_maxlen is not None:
            _check_range("stream_maxlen", self.stream_maxlen, 1, 10**9)
        _check_range("read_block_ms", self.read_block_ms, 1, 600_000)
        _check_range("read_idle_timeout_seconds", self.read_idle_timeout_seconds, 0.01, 86_400)
        _check_range("read_reconcile_seconds", self.read_reconcile_seconds, 0.01, 86_400)
        _check_range("request_timeout_ms", self.request_timeout_ms, 1, 600_000)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ValkeySettings:
        """Build settings from ``VALKEY_*`` environment variables.

        ``VALKEY_URL`` (``valkey://`` or ``valkeys://user:password@host:port?cluster=true``)
        supplies host, port, TLS, credentials and cluster mode; the separate variables override it.

        Args:
            environ: The variables to read; the process environment by default.

        Returns:
            The settings; unset variables keep their defaults.

        Raises:
            ValueError: If a variable holds an invalid value; the message names the variable.
        """
        env = os.environ if environ is None else environ
        settings = cls.from_url(env["VALKEY_URL"], variable="VALKEY_URL") if env.get("VALKEY_URL") else cls()
        changes: dict[str, Any] = {}
        for variable, (name, parse) in _ENV_FIELDS.items():
            raw = env.get(variable)
            # An empty VALKEY_STREAM_MAXLEN means "no cap"; any other empty variable means "unset".
            if raw is None or (not raw.strip() and name != "stream_maxlen"):
                continue
            try:
                changes[name] = parse(raw.strip())
            except ValueError as error:
                raise ValueError(f"{variable} is invalid: {error}") from None
        try:
            return replace(settings, **changes)
        except ValueError as error:
            # __post_init__ messages start with the field name: report the variable instead.
            field_name = str(error).split(" ", 1)[0]
            variable = _VARIABLE_OF_FIELD.get(field_name, "VALKEY_URL")
            raise ValueError(f"{variable} is invalid: {error}") from None

    @classmethod
    def from_url(cls, url: str, *, variable: str = "url") -> ValkeySettings:
        """Build settings from a connection string.

        Args:
            url: ``valkey://[user[:password]@]host[:port][?cluster=true]``; ``valkeys://`` (or
                ``rediss://``) turns TLS on. ``redis://`` is accepted as an alias of ``valkey://``.
            variable: The name used in error messages.

        Raises:
            ValueError: If the string is not such a URL.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("valkey", "valkeys", "redis", "rediss"):
            raise ValueError(f"{variable} must start with valkey:// or valkeys://, got {parts.scheme or url!r}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{variable} has an invalid port") from None
        if not parts.hostname:
            raise ValueError(f"{variable} has no host")
        query = parse_qs(parts.query)
        try:
            cluster = parse_flag(query.get("cluster", ["false"])[-1])
        except ValueError as error:
            raise ValueError(f"{variable} has an invalid cluster flag: {error}") from None
        return cls(
            host=parts.hostname,
            port=port or 6379,
            tls=parts.scheme in ("valkeys", "rediss"),
            cluster=cluster,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    @property
    def address(self) -> str:
        """``host:port``, for logs and health output (never includes credentials)."""
        return f"{self.host}:{self.port}"


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number from {low} to {high}, got {value!r}")


def parse_flag(raw: str) -> bool:
    """A boolean setting: ``true``, ``1``, ``yes``, ``on`` or ``false``, ``0``, ``no``, ``off``; empty is false.

    The one reader of boolean app settings, so that every setting accepts the same words (any case).

    Raises:
        ValueError: If ``raw`` is none of these words.
    """
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _parse_auth(raw: str) -> AuthMode:
    lowered = raw.lower()
    if lowered == "password":
        return "password"
    if lowered == "entra":
        return "entra"
    raise ValueError(f"expected 'password' or 'entra', got {raw!r}")


def _parse_optional_int(raw: str) -> int | None:
    # An empty value or 0 turns the cap off.
    if raw == "" or raw == "0":
        return None
    return int(raw)


# Environment variable -> (field, parser). The same names appear in local.settings.sample.json,
# the Bicep app settings and docs/configuration.md.
_ENV_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "VALKEY_HOST": ("host", str),
    "VALKEY_PORT": ("port", int),
    "VALKEY_TLS": ("tls", parse_flag),
    "VALKEY_CLUSTER": ("cluster", parse_flag),
    "VALKEY_USERNAME": ("username", str),
    "VALKEY_PASSWORD": ("password", str),
    "VALKEY_AUTH": ("auth", _parse_auth),
    "VALKEY_STREAM_TTL_SECONDS": ("stream_ttl_seconds", int),
    "VALKEY_STREAM_MAXLEN": ("stream_maxlen", _parse_optional_int),
    "VALKEY_READ_BLOCK_MS": ("read_block_ms", int),
    "VALKEY_READ_IDLE_TIMEOUT_SECONDS": ("read_idle_timeout_seconds", float),
    "VALKEY_READ_RECONCILE_SECONDS": ("read_reconcile_seconds", float),
    "VALKEY_REQUEST_TIMEOUT_MS": ("request_timeout_ms", int),
}
_VARIABLE_OF_FIELD = {name: variable for variable, (name, _) in _ENV_FIELDS.items()}
ENV_VARIABLES = (*_ENV_FIELDS, "VALKEY_URL")
