"""Stream tokens: short-lived signed grants to read one turn (or one session) of a stream, for browsers.

A browser's ``EventSource`` cannot send headers, so an app-wide key would have to travel in the URL,
into histories and logs, and would open every session. Instead the app's own backend starts a turn
with its key and hands the browser a token: ``<payload>.<signature>``, both base64url, where the
payload names the session, the turn (or none, for the whole session), the expiry and the signing
key's period, and the signature is HMAC-SHA256 over the payload.

No secret is stored in app settings: the signing keys live in Valkey, one per rotation period
(``agent-stream-token-key:<period>``), created by whichever instance first needs it (``SET NX``, so
racing instances end up with the same key) and kept until the last token it signed has expired.
A key is therefore as well protected as the streams themselves (Entra ID in Azure), and whoever
can read Valkey could mint tokens, but could read the streams directly anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from glide import ConditionalChange, ExpirySet, ExpiryType

from valkey_buffer import StreamInputError, validate_id

if TYPE_CHECKING:
    from valkey_buffer import ValkeyStreamBuffer

KEY_PREFIX = "agent-stream-token-key:"
# Signed and compared when a token cannot be read, so that every refusal costs the same work.
_DUMMY_KEY = secrets.token_bytes(32)


class StreamTokenError(StreamInputError):
    """A token that grants nothing here: missing, malformed, tampered, expired or for something else.

    Attributes:
        status_code: 401 for a token that is not valid at all, 403 for a valid one for another stream.
    """

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class StreamGrant:
    """What a valid token grants.

    Attributes:
        session_id: The session whose stream may be read.
        correlation_id: The one turn that may be followed; ``None`` for every turn of the session.
        expires_at: When the token expires, in seconds since the epoch.
    """

    session_id: str
    correlation_id: str | None
    expires_at: int

    def allows(self, session_id: str, correlation_id: str | None) -> bool:
        """Whether the grant covers reading ``session_id``, following ``correlation_id`` (``None``: any turn)."""
        if session_id != self.session_id:
            return False
        return self.correlation_id is None or correlation_id == self.correlation_id


class StreamTokens:
    """Issues and checks stream tokens, with signing keys kept in Valkey.

    Args:
        buffer: The stream buffer whose Valkey holds the signing keys.
        ttl_seconds: How long a token is valid.
        rotation_seconds: How long a signing key signs new tokens; it is accepted for ``ttl_seconds``
            more, so a rotation never cuts a token short.

    Raises:
        ValueError: If a number is out of range.
    """

    def __init__(self, buffer: ValkeyStreamBuffer, *, ttl_seconds: int = 3600, rotation_seconds: int = 86_400) -> None:
        if not 1 <= ttl_seconds <= 7 * 86_400:
            raise ValueError("ttl_seconds must be from 1 to 604800")
        if not 60 <= rotation_seconds <= 365 * 86_400:
            raise ValueError("rotation_seconds must be from 60 to 31536000")
        self.ttl_seconds = ttl_seconds
        self.rotation_seconds = rotation_seconds
        self._buffer = buffer
        self._keys: dict[int, bytes] = {}  # period -> key, as read from Valkey

    async def issue(self, session_id: str, correlation_id: str | None = None, *, now: float | None = None) -> str:
        """A token for one turn of ``session_id`` (or for the whole session when ``correlation_id`` is None).

        Raises:
            InvalidIdError: If an id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached to get the signing key.
        """
        validate_id(session_id, "session_id")
        if correlation_id is not None:
            validate_id(correlation_id, "correlation_id")
        now = time.time() if now is None else now
        period = int(now // self.rotation_seconds)
        key = await self._key(period, create=True)
        assert key is not None
        payload = {"s": session_id, "c": correlation_id, "e": int(now) + self.ttl_seconds, "k": period}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{_b64(_sign(key, body))}"

    async def check(self, token: str | None, *, now: float | None = None) -> StreamGrant:
        """What ``token`` grants; the same work is done whatever is wrong with it.

        Raises:
            StreamTokenError: 401 when it is missing, malformed, tampered, signed by an unknown key or
                expired.
            ValkeyUnavailableError: If Valkey cannot be reached to read a signing key.
        """
        now = time.time() if now is None else now
        body, _, signature = (token or "").partition(".")
        payload = _payload(body)
        period = payload.get("k") if payload is not None else None
        key = (
            await self._key(period, create=False) if isinstance(period, int) and self._is_recent(period, now) else None
        )
        expected = _sign(key or _DUMMY_KEY, body)
        genuine = hmac.compare_digest(expected, _unb64(signature) or b"") and key is not None
        if payload is None or not genuine:
            raise StreamTokenError("The stream token is missing, malformed or not valid.", 401)
        session_id, correlation_id, expires_at = payload.get("s"), payload.get("c"), payload.get("e")
        if not isinstance(session_id, str) or not isinstance(expires_at, int) or expires_at <= now:
            raise StreamTokenError("The stream token has expired.", 401)
        if correlation_id is not None and not isinstance(correlation_id, str):
            raise StreamTokenError("The stream token is missing, malformed or not valid.", 401)
        return StreamGrant(session_id=session_id, correlation_id=correlation_id, expires_at=expires_at)

    def _is_recent(self, period: int, now: float) -> bool:
        # Only the current and the previous period's keys can have signed an unexpired token.
        current = int(now // self.rotation_seconds)
        return not isinstance(period, bool) and current - 1 <= period <= current

    async def _key(self, period: int, *, create: bool) -> bytes | None:
        cached = self._keys.get(period)
        if cached is not None:
            return cached
        name = f"{KEY_PREFIX}{period}"
        # Kept until the last token it signs (at the end of its period) has expired, and a minute more.
        lifetime = (period + 1) * self.rotation_seconds + self.ttl_seconds + 60 - int(time.time())
        async with self._buffer.valkey() as client:
            if create:
                await client.set(
                    name,
                    secrets.token_hex(32),
                    conditional_set=ConditionalChange.ONLY_IF_DOES_NOT_EXIST,
                    expiry=ExpirySet(ExpiryType.SEC, max(60, lifetime)),
                )
            raw = await client.get(name)
        if raw is None:
            return None
        key = bytes.fromhex(raw.decode() if isinstance(raw, bytes) else raw)
        self._keys = {p: k for p, k in self._keys.items() if p >= period - 1}  # older keys are of no use
        self._keys[period] = key
        return key


def _payload(body: str) -> dict[str, object] | None:
    raw = _unb64(body)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _sign(key: bytes, body: str) -> bytes:
    return hmac.new(key, body.encode("ascii", "replace"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    if not text or len(text) > 4096 or not text.isascii():
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
