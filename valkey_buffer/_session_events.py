"""Session events: entries about a session rather than one turn's text, each appended exactly once.

A workflow's stream, for one, carries entries that no turn writes: a step started, the workflow waits
for a person, the workflow ended. Several processes may learn such a fact at once (every reader of
the instance and every route that reads the orchestration's committed status), so an event has an
id of its own and one Lua script appends it only if that id was never appended to the stream
before: it claims the id in the stream's marks hash (``HSETNX``, the hash the turn writers keep
their high-water marks in, under an ``event:`` field), appends the entry, refreshes both keys' TTL
and publishes the notification that wakes live readers, atomically. The winner's entry has a real
entry id, so readers resume across it like across any other entry.

The entry has the reference schema's ``timestamp`` plus ``event`` (its name) and ``data`` (a JSON
object); ``correlation_id`` and ``agent`` when it concerns one turn. It has no ``text``: readers of
the reference schema show nothing for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

from glide import Script

from ._glide import ClientScope
from ._ids import stream_key, validate_id

# KEYS: the stream, the marks hash. ARGV: the event's mark field, the TTL, the MAXLEN cap ('' for
# none), the notification ('' none, 'p' PUBLISH, 's' SPUBLISH), then the entry's names and values.
_SOURCE = """
if redis.call('HSETNX', KEYS[2], ARGV[1], '1') == 0 then
  return ''
end
local args = {KEYS[1]}
if ARGV[3] ~= '' then
  args = {KEYS[1], 'MAXLEN', '~', ARGV[3]}
end
args[#args + 1] = '*'
for i = 5, #ARGV do
  args[#args + 1] = ARGV[i]
end
local id = redis.call('XADD', unpack(args))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
if ARGV[4] ~= '' then
  redis.pcall(ARGV[4] == 's' and 'SPUBLISH' or 'PUBLISH', KEYS[1], '')
end
return id
"""

_APPEND_ONCE = Script(_SOURCE)  # type: ignore[no-untyped-call]


class SessionEvents:
    """Appends session events to streams, each event id at most once per stream.

    Args:
        valkey: Opens the running loop's client with errors translated.
        ttl_seconds: The stream's TTL, refreshed by every append.
        maxlen: The stream's approximate MAXLEN cap, ``None`` for none.
        notify: The notification mode of the current writes: ``""``, ``"p"`` or ``"s"``.
    """

    def __init__(self, valkey: ClientScope, *, ttl_seconds: int, maxlen: int | None, notify: Callable[[], str]) -> None:
        self._valkey = valkey
        self._ttl_seconds = ttl_seconds
        self._maxlen = maxlen
        self._notify = notify

    async def append_once(
        self,
        session_id: str,
        event_id: str,
        event: str,
        data: Mapping[str, object] | None = None,
        *,
        correlation_id: str | None = None,
        agent: str | None = None,
    ) -> str | None:
        """Append the event unless ``event_id`` was appended to the session's stream before.

        Returns:
            The new entry's id, or ``None`` when the event was there already.

        Raises:
            InvalidIdError: If an id is invalid.
            ValkeyUnavailableError: If Valkey cannot be reached.
        """
        key = stream_key(session_id)
        validate_id(event_id, "event_id")
        fields = ["timestamp", str(int(time.time() * 1000)), "event", event, "data", json.dumps(data or {})]
        if correlation_id is not None:
            fields += ["correlation_id", validate_id(correlation_id, "correlation_id")]
        if agent:
            fields += ["agent", agent]
        marks = "{" + key + "}:written"
        args = [f"event:{event_id}", str(self._ttl_seconds), str(self._maxlen or ""), self._notify(), *fields]
        async with self._valkey() as client:
            reply = await client.invoke_script(_APPEND_ONCE, keys=[key, marks], args=args)
        entry_id = reply.decode() if isinstance(reply, bytes) else str(reply or "")
        return entry_id or None
