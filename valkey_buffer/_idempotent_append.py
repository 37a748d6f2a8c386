"""Idempotent appends: Valkey itself ignores a batch of a turn's entries it has applied before.

A write whose reply timed out may have been applied; its retry must not append the entries again,
or a reader that knows nothing of ``(correlation_id, run, sequence)`` (one written for the reference
samples' schema) shows them twice. So every batch goes through one Lua script that keeps, per run of
a turn, the highest sequence appended (the run's high-water mark) in a hash next to the stream,
``{<stream key>}:written`` (its hash tag is the stream key: in a cluster it is in the stream's slot,
like the cancel set). The script appends only the entries above the mark, moves the mark, refreshes
both keys' TTL, asks the cancel set when told to and publishes the notification that wakes live
readers: all of it atomically, in the one round trip the write costs anyway.

The script answers the mark it found, so the writer also learns when Valkey lost entries it had
confirmed (the mark went back: a restart without persistence, a failover that lost writes).

GLIDE sends the script by its SHA (``EVALSHA``) and loads it by itself when the server answers
``NOSCRIPT`` (a restart, a failover, ``SCRIPT FLUSH``). The server must allow ``EVALSHA`` and
``SCRIPT LOAD`` (Azure Managed Redis does; an ACL may not: see ``TurnWriters`` for the fallback).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from glide import Script

from ._glide import text

# KEYS: the stream, the marks hash, the cancel set.
# ARGV: the mark's field (turn and run), the TTL, the MAXLEN cap ('' for none), the correlation id to
# look up in the cancel set ('' for none), the notification ('' none, 'p' PUBLISH, 's' SPUBLISH),
# then the entries in order as one JSON array, each entry an array of its sequence then its fields'
# names and values. One argument for the whole batch: every argument costs the client a conversion.
_SOURCE = """
local mark = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
local found = mark
local appended = 0
local head = {KEYS[1]}
if ARGV[3] ~= '' then
  head = {KEYS[1], 'MAXLEN', '~', ARGV[3]}
end
for _, entry in ipairs(cjson.decode(ARGV[6])) do
  local sequence = entry[1]
  if sequence > mark then
    local args = {unpack(head)}
    args[#args + 1] = '*'
    for j = 2, #entry do
      args[#args + 1] = entry[j]
    end
    redis.call('XADD', unpack(args))
    mark = sequence
    appended = appended + 1
  end
end
if mark ~= found then
  redis.call('HSET', KEYS[2], ARGV[1], mark)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
local cancelled = 0
if ARGV[4] ~= '' then
  cancelled = redis.call('SISMEMBER', KEYS[3], ARGV[4])
end
local refused = ''
if appended > 0 and ARGV[5] ~= '' then
  local reply = redis.pcall(ARGV[5] == 's' and 'SPUBLISH' or 'PUBLISH', KEYS[1], '')
  if type(reply) == 'table' and reply.err then
    refused = reply.err
  end
end
return {appended, found, cancelled, refused}
"""

# GLIDE keeps a script's source only while its Script object lives: one for the process.
APPEND_SCRIPT = Script(_SOURCE)  # type: ignore[no-untyped-call,unused-ignore]


def marks_key(stream_key: str) -> str:
    """The hash of a stream's high-water marks (``<correlation id>:<run>`` -> sequence), in its slot."""
    return "{" + stream_key + "}:written"


@dataclass(slots=True)
class Entry:
    """One queued stream entry of a turn: its place in the run and its fields, flat (name, value, ...)."""

    sequence: int
    fields: list[str]
    size: int  # bytes it holds in memory, roughly: what the process-wide cap counts

    def pairs(self) -> list[tuple[str, str]]:
        """The fields as (name, value) pairs."""
        return list(zip(self.fields[::2], self.fields[1::2], strict=True))


class AppendResult(NamedTuple):
    """What the script answered for one batch (a named tuple: one is made per batch, and that is per chunk)."""

    appended: int
    mark_found: int  # the run's mark before the batch: -1 when Valkey had none
    cancelled: bool
    publish_refusal: str  # the server's error when it refused the notification, else empty


def append_arguments(
    *,
    correlation_id: str,
    run: str,
    entries: Sequence[Entry],
    ttl_seconds: int,
    maxlen: int | None,
    cancel_check: bool,
    notify: str,
) -> list[str]:
    """The script's ``ARGV`` for one batch (see the script's header)."""
    return [
        f"{correlation_id}:{run}",
        str(ttl_seconds),
        str(maxlen) if maxlen else "",
        correlation_id if cancel_check else "",
        notify,
        # Text may hold any character: JSON carries it as UTF-8, which the script's cjson passes through.
        json.dumps([[entry.sequence, *entry.fields] for entry in entries], ensure_ascii=False),
    ]


def parse_append_reply(reply: Any) -> AppendResult:
    """The script's reply as an :class:`AppendResult`."""
    appended, found, cancelled, refused = reply
    return AppendResult(
        appended=int(appended), mark_found=int(found), cancelled=bool(cancelled), publish_refusal=text(refused)
    )
