"""Cancel requests: asked by any instance, learned by the one that writes the turn (see ``_cancel_watch``)."""

from __future__ import annotations

from ._cancel_watch import CancelWatch, cancel_key
from ._glide import ClientScope, atomic_batch
from ._ids import stream_key, validate_id
from ._settings import ValkeySettings


class CancelRequests:
    """Requests cancels, answers whether one was requested, and keeps the watches of running turns.

    Args:
        settings: The stream TTL (a request lives as long as the stream) and the server kind.
        valkey: Opens the running loop's client with errors translated.
    """

    def __init__(self, settings: ValkeySettings, valkey: ClientScope) -> None:
        self._settings = settings
        self._valkey = valkey
        self._watches: dict[tuple[str, str], CancelWatch] = {}  # (stream key, correlation id)

    async def request(self, session_id: str, correlation_id: str) -> None:
        """Ask the instance that runs a turn to stop it.

        Raises:
            InvalidIdError: If an id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached (nothing was requested).
        """
        key = cancel_key(stream_key(session_id))
        validate_id(correlation_id, "correlation_id")
        batch = atomic_batch(cluster=self._settings.cluster)
        batch.sadd(key, [correlation_id])
        batch.expire(key, self._settings.stream_ttl_seconds)
        async with self._valkey() as client:
            await client.exec(batch, raise_on_error=True)

    async def is_requested(self, session_id: str, correlation_id: str) -> bool:
        """Whether a cancel was requested for a turn.

        Raises:
            InvalidIdError: If an id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        key = cancel_key(stream_key(session_id))
        validate_id(correlation_id, "correlation_id")
        async with self._valkey() as client:
            return bool(await client.sismember(key, correlation_id))

    def watch(self, session_id: str, correlation_id: str) -> CancelWatch:
        """The cancellation of a running turn, to enter around the agent's run; forgotten when left.

        Raises:
            InvalidIdError: If an id is invalid.
        """
        turn = (stream_key(session_id), validate_id(correlation_id, "correlation_id"))
        watch = CancelWatch(
            lambda: self.is_requested(session_id, correlation_id),
            on_exit=lambda: self._watches.pop(turn, None),
        )
        self._watches[turn] = watch
        return watch

    def watch_of(self, key: str, correlation_id: str) -> CancelWatch | None:
        """The watch of a turn being written to stream ``key``, if one is entered."""
        return self._watches.get((key, correlation_id))

    def forget(self, key: str, correlation_id: str) -> None:
        """Drop a turn's watch: the turn has ended."""
        self._watches.pop((key, correlation_id), None)
