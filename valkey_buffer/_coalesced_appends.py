"""Many turns' append batches in one round trip: group commit across the turns of an event loop.

A turn streaming at a model's pace has one entry to write every few tens of milliseconds, so on its
own every entry costs a round trip: a script call, its reply, a future resolved. With a thousand
turns that is twenty thousand calls a second, and the host's CPU (not Valkey's) is the limit. Here
the batches that turns hand in while a call is in flight wait for it, and go together in the next
call: one script that runs ``_idempotent_append``'s steps for each turn in turn. Valkey does the same
work; the host pays one call per round trip instead of one per turn. A batch handed in while no call
is in flight goes at once in ``_idempotent_append``'s script for one turn, as a lone turn's would.

Each turn keeps its own outcome: a turn's error inside the script (its key holds another type, the
server is out of memory) fails that turn alone, after the entries appended before it, which its mark
records; a failed call (a timeout, a lost connection) fails every turn in it, and each retries on
its own, which the marks make safe. Only a standalone server: a cluster refuses a script whose keys
are in several slots, and there each turn calls ``_idempotent_append``'s script itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from glide import RequestError, Script

from ._connection import GlideAnyClient
from ._glide import text
from ._idempotent_append import APPEND_SCRIPT, AppendResult, Entry, append_arguments, parse_append_reply

# KEYS: per turn, its stream, its marks hash and its cancel set (3 keys a turn, in the turns' order).
# ARGV: the TTL, the MAXLEN cap ('' for none), the notification ('' none, 'p' PUBLISH), then the turns
# as one JSON array, each [mark field, correlation id to look up in the cancel set or '', entries],
# each entry an array of its sequence then its fields' names and values.
# Answers per turn {appended, mark found, cancelled, publish refusal, error}.
_SOURCE = """
local ttl, maxlen, notify = ARGV[1], ARGV[2], ARGV[3]
local function append(t, turn)
  local stream, marks = KEYS[3 * t - 2], KEYS[3 * t - 1]
  local mark = tonumber(redis.call('HGET', marks, turn[1]) or '-1')
  local found, appended, failure = mark, 0, ''
  for _, entry in ipairs(turn[3]) do
    local sequence = entry[1]
    if sequence > mark then
      local args = {stream}
      if maxlen ~= '' then
        args = {stream, 'MAXLEN', '~', maxlen}
      end
      args[#args + 1] = '*'
      for j = 2, #entry do
        args[#args + 1] = entry[j]
      end
      local reply = redis.pcall('XADD', unpack(args))
      if type(reply) == 'table' and reply.err then
        failure = reply.err
        break
      end
      mark = sequence
      appended = appended + 1
    end
  end
  if mark ~= found then
    redis.call('HSET', marks, turn[1], mark)
  end
  redis.call('EXPIRE', stream, ttl)
  redis.call('EXPIRE', marks, ttl)
  local cancelled = 0
  if turn[2] ~= '' then
    cancelled = redis.call('SISMEMBER', KEYS[3 * t], turn[2])
  end
  local refused = ''
  if appended > 0 and notify ~= '' then
    local reply = redis.pcall('PUBLISH', stream, '')
    if type(reply) == 'table' and reply.err then
      refused = reply.err
    end
  end
  return {appended, found, cancelled, refused, failure}
end
local results = {}
for t, turn in ipairs(cjson.decode(ARGV[4])) do
  local ok, result = pcall(append, t, turn)
  if not ok then
    result = {0, -1, 0, '', type(result) == 'table' and result.err or tostring(result)}
  end
  results[t] = result
end
return results
"""

# GLIDE keeps a script's source only while its Script object lives: one for the process.
COALESCED_APPEND_SCRIPT = Script(_SOURCE)  # type: ignore[no-untyped-call,unused-ignore]

# Entries per call at most: a call's script holds the server for its length (about 1 µs an entry).
_MAX_ENTRIES_PER_CALL = 2048


class TurnBatch(NamedTuple):
    """One turn's batch: its keys, the mark's field, the cancel question and the entries in order.

    A named tuple rather than a frozen dataclass: one is made per batch, and that is per chunk.
    """

    keys: tuple[str, str, str]  # the stream, its marks hash, its cancel set
    correlation_id: str
    run: str
    cancel_check: bool  # whether to ask the cancel set about the turn
    entries: Sequence[Entry]


class CoalescedAppends:
    """Sends the batches of an event loop's turns, those handed in together in one script call.

    Args:
        client: The running loop's client for writes.
        ttl_seconds: The TTL every call refreshes.
        maxlen: The streams' MAXLEN cap, ``None`` for none.
        notify: Whether writes publish the notification that wakes live readers (asked per call).
    """

    def __init__(
        self,
        client: Callable[[], Awaitable[GlideAnyClient]],
        *,
        ttl_seconds: int,
        maxlen: int | None,
        notify: Callable[[], bool],
    ) -> None:
        self._client = client
        self._notify = notify
        self._ttl_seconds = ttl_seconds
        self._maxlen = maxlen
        self._waiting: deque[tuple[TurnBatch, asyncio.Future[AppendResult]]] = deque()
        self._calls = 0  # calls being made: while there is one, batches handed in wait for the next
        self._sender: asyncio.Task[None] | None = None

    async def append(self, batch: TurnBatch, client: GlideAnyClient) -> AppendResult:
        """Append one turn's batch in the next call; what the script answered for it.

        ``client`` is the running loop's client, for a call made at once.

        Raises:
            RequestError: The script's error for this turn, or the call's.
            Exception: Whatever the call raised (a timeout, a closed connection).
        """
        if not self._calls:
            # Nothing in flight (so nothing waits either): the batch goes at once, from this turn's
            # own task, as the single-turn script: a lone turn pays neither a hand-off nor the
            # many-turn script's bookkeeping. Batches handed in meanwhile follow together.
            self._calls += 1
            try:
                return await self._call_alone(batch, client)
            finally:
                self._calls -= 1
                self._send_the_waiting()
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((batch, future))
        return await future

    def _send_the_waiting(self) -> None:
        if self._waiting and (self._sender is None or self._sender.done()):
            # The sender serves every turn of the loop: it runs in an empty context, not a turn's
            # (whose trace its logs would otherwise carry).
            self._sender = asyncio.get_running_loop().create_task(
                self._send_all(), name="valkey-coalesced-appends", context=contextvars.Context()
            )

    async def _send_all(self) -> None:
        self._calls += 1
        try:
            while self._waiting:
                await self._send(self._next_group())
        except asyncio.CancelledError:
            # The loop is shutting down: no turn waits for a call that will not be made.
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._calls -= 1

    def _next_group(self) -> list[tuple[TurnBatch, asyncio.Future[AppendResult]]]:
        group: list[tuple[TurnBatch, asyncio.Future[AppendResult]]] = []
        size = 0
        while self._waiting and (not group or size + len(self._waiting[0][0].entries) <= _MAX_ENTRIES_PER_CALL):
            batch, future = self._waiting.popleft()
            if not future.done():  # its turn stopped waiting (the buffer is closing)
                group.append((batch, future))
                size += len(batch.entries)
        return group

    async def _send(self, group: list[tuple[TurnBatch, asyncio.Future[AppendResult]]]) -> None:
        if not group:
            return
        try:
            replies = await self._call([batch for batch, _ in group], await self._client())
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as error:
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), reply in zip(group, replies, strict=True):
            if future.done():
                continue
            try:
                future.set_result(_answer(reply))
            except RequestError as error:
                future.set_exception(error)

    async def _call_alone(self, batch: TurnBatch, client: GlideAnyClient) -> AppendResult:
        """One turn's batch on its own: the single-turn script, which costs a lone turn no more than before."""
        args = append_arguments(
            correlation_id=batch.correlation_id,
            run=batch.run,
            entries=batch.entries,
            ttl_seconds=self._ttl_seconds,
            maxlen=self._maxlen,
            cancel_check=batch.cancel_check,
            notify="p" if self._notify() else "",
        )
        return parse_append_reply(await client.invoke_script(APPEND_SCRIPT, keys=list(batch.keys), args=args))

    async def _call(self, batches: list[TurnBatch], client: GlideAnyClient) -> list[Any]:
        """One script call for ``batches``: the script's answer per turn."""
        keys = [key for batch in batches for key in batch.keys]
        turns = [
            [
                f"{batch.correlation_id}:{batch.run}",
                batch.correlation_id if batch.cancel_check else "",
                [[entry.sequence, *entry.fields] for entry in batch.entries],
            ]
            for batch in batches
        ]
        # Text may hold any character: JSON carries it as UTF-8, which the script's cjson passes through.
        maxlen = str(self._maxlen) if self._maxlen else ""
        args = [str(self._ttl_seconds), maxlen, "p" if self._notify() else "", json.dumps(turns, ensure_ascii=False)]
        replies = await client.invoke_script(COALESCED_APPEND_SCRIPT, keys=keys, args=args)
        return list(replies)


def _answer(reply: Any) -> AppendResult:
    """The script's answer for one turn; raises the turn's own error (``RequestError``)."""
    appended, found, cancelled, refused, failure = reply
    if failure:
        raise RequestError(text(failure))
    return AppendResult(int(appended), int(found), bool(cancelled), text(refused))
