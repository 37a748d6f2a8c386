"""StreamChunk: one stream entry as a reader sees it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

TOOL_RESULT_MAX_CHARS = 4000
"""A tool result longer than this is cut to it in the stream (the committed history keeps it whole)."""

ChunkKind = Literal["message", "replace", "tool_call", "tool_result", "done", "cancelled", "error", "event"]


@dataclass(frozen=True)
class StreamChunk:
    """One entry of a session's stream.

    Attributes:
        entry_id: The Valkey entry id (``<ms>-<seq>``), also the SSE ``id``. Empty for the
            synthetic error a reader produces when it gives up waiting.
        text: The text of a ``message`` chunk, or the full committed text of a ``replace`` chunk.
        sequence: The position of the chunk within its turn, if the writer recorded one.
        correlation_id: The turn the entry belongs to, if the writer recorded one.
        agent: The agent that wrote the entry, if the writer recorded one.
        kind: ``message``, ``replace`` (the text replaces everything streamed so far in the turn),
            ``done``, ``cancelled`` (the turn was stopped: a ``done`` entry with ``cancelled="true"``,
            which readers that know no cancellation take for ``done``) or ``error``.
        error: The error message of an ``error`` chunk.
        timestamp_ms: When the entry was written, in milliseconds since the epoch.
        run: Which run of the turn wrote the entry, if the writer recorded it: a turn run again (the
            durable runtime re-runs an operation whose worker died) writes under a new run id.
        tool_call_id: The call a ``tool_call`` or ``tool_result`` chunk belongs to.
        tool_name: The tool a ``tool_call`` chunk calls.
        tool_arguments: The arguments of a ``tool_call`` chunk, as JSON text.
        tool_result: The result of a ``tool_result`` chunk as text, cut at ``TOOL_RESULT_MAX_CHARS``.
        tool_result_truncated: Whether ``tool_result`` was cut.
        event: The name of an ``event`` chunk: an entry about the session rather than a turn's text
            (e.g. a workflow's ``step_started`` or ``workflow_completed``; see ``append_event_once``).
        data: The JSON payload of an ``event`` chunk.

    Tool chunks keep ``text`` empty: a reader of the reference schema (it appends every entry's
    ``text``) does not show them.
    """

    entry_id: str
    text: str = ""
    sequence: int | None = None
    correlation_id: str | None = None
    agent: str | None = None
    kind: ChunkKind = "message"
    error: str | None = None
    timestamp_ms: int | None = None
    run: str | None = None
    tool_call_id: str | None = None
    tool_name: str | None = None
    tool_arguments: str | None = None
    tool_result: str | None = None
    tool_result_truncated: bool = False
    event: str | None = None
    data: str | None = None

    @property
    def is_done(self) -> bool:
        """Whether the entry marks the successful end of a turn."""
        return self.kind == "done"

    @property
    def is_terminal(self) -> bool:
        """Whether the entry ends a turn (``done``, ``cancelled`` or ``error``)."""
        return self.kind in ("done", "cancelled", "error")

    @classmethod
    def from_entry(cls, entry_id: str, fields: Mapping[str, str]) -> StreamChunk:
        """Build a chunk from a stream entry's fields.

        Raises:
            ValueError: If a numeric field does not hold a number.
        """
        if "event" in fields:
            kind: ChunkKind = "event"
        elif "error" in fields:
            kind = "error"
        elif fields.get("done") == "true":
            kind = "cancelled" if fields.get("cancelled") == "true" else "done"
        elif fields.get("replace") == "true":
            kind = "replace"
        elif fields.get("tool") == "call":
            kind = "tool_call"
        elif fields.get("tool") == "result":
            kind = "tool_result"
        else:
            kind = "message"
        sequence = fields.get("sequence")
        timestamp = fields.get("timestamp")
        text = fields.get("text", "")
        if kind == "replace" and "replace_text" in fields:
            # The committed text rides in a field of its own, so that a reader of the reference
            # schema (it appends every ``text``) does not show it after the chunks.
            text = fields["replace_text"]
        return _built(
            cls,
            entry_id=entry_id,
            text=text,
            sequence=int(sequence) if sequence else None,
            correlation_id=fields.get("correlation_id") or None,
            agent=fields.get("agent") or None,
            kind=kind,
            error=fields.get("error") if kind == "error" else None,
            timestamp_ms=int(timestamp) if timestamp else None,
            run=fields.get("run") or None,
            tool_call_id=fields.get("call_id") or None,
            tool_name=fields.get("tool_name") or None,
            tool_arguments=fields.get("arguments") if kind == "tool_call" else None,
            tool_result=fields.get("result") if kind == "tool_result" else None,
            tool_result_truncated=fields.get("result_truncated") == "true",
            event=fields.get("event") if kind == "event" else None,
            data=fields.get("data") if kind == "event" else None,
        )

    def tool_json(self) -> dict[str, object]:
        """A tool chunk as JSON: ``call_id`` and ``name`` plus ``arguments`` (parsed), or ``result``."""
        if self.kind == "tool_call":
            try:
                arguments: object = json.loads(self.tool_arguments or "{}")
            except ValueError:
                arguments = self.tool_arguments
            return {"call_id": self.tool_call_id, "name": self.tool_name, "arguments": arguments}
        return {"call_id": self.tool_call_id, "result": self.tool_result, "truncated": self.tool_result_truncated}


# Every field's default, for _built.
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(StreamChunk)}

# A plain text chunk as this package's writer writes it, field by field (GLIDE answers names as
# bytes), with and without the agent's name.
_MESSAGE_LAYOUT = [b"text", b"sequence", b"timestamp", b"correlation_id", b"run", b"agent"]
_MESSAGE_LAYOUTS = {6: _MESSAGE_LAYOUT, 5: _MESSAGE_LAYOUT[:5]}


def message_from_pairs(entry_id: str, pairs: list[list[bytes]]) -> StreamChunk | None:
    """A plain text chunk straight from GLIDE's ``[name, value]`` pairs; ``None`` if the entry is anything else.

    A live feed parses every entry it reads, twenty thousand a second with a thousand turns, and
    nearly all are text chunks as this package writes them: this checks the field names in their
    order and decodes only the values, with no mapping in between. Other entries (ends, tools,
    events, other writers' entries) go through :meth:`StreamChunk.from_entry`.

    Raises:
        ValueError: If a numeric field does not hold a number.
        UnicodeDecodeError: If a value is not UTF-8.
    """
    if _MESSAGE_LAYOUTS.get(len(pairs)) != [pair[0] for pair in pairs]:
        return None
    chunk = object.__new__(StreamChunk)
    values = vars(chunk)
    values.update(_DEFAULTS)
    values["entry_id"] = entry_id
    values["text"] = pairs[0][1].decode()
    values["sequence"] = int(pairs[1][1])
    values["timestamp_ms"] = int(pairs[2][1])
    values["correlation_id"] = pairs[3][1].decode() or None
    values["run"] = pairs[4][1].decode() or None
    if len(pairs) == 6:
        values["agent"] = pairs[5][1].decode() or None
    return chunk


def _built(cls: type[StreamChunk], **values: object) -> StreamChunk:
    """A chunk with ``values`` (the others at their defaults), without the dataclass's ``__init__``.

    A frozen dataclass's ``__init__`` sets each of its 14 fields through ``object.__setattr__``:
    about 2.5 µs, once for every entry a live feed reads, which is most of parsing one. Filling the
    instance's ``__dict__`` at once gives the same (equal, still frozen) chunk in a fraction of that.
    """
    chunk = object.__new__(cls)
    vars(chunk).update(_DEFAULTS, **values)
    return chunk
