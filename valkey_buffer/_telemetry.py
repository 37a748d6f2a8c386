"""OpenTelemetry of the buffer: the ``valkey_buffer`` meter's instruments, a span per turn's stream, a span per reader.

Only the OpenTelemetry API is used: with no SDK configured every instrument and span is a no-op. Nothing
here allocates per chunk: attributes are built once per turn (or per reader, or when a reader learns its
agent), a write records per batch round trip, and the per-entry work of a reader is one histogram record.

Metrics (meter ``valkey_buffer``; ``gen_ai.agent.name`` where the turn's agent is known):

- ``agent_stream.chunks.written`` (counter): entries written, per batch round trip that succeeded.
- ``agent_stream.entries.dropped`` (counter): entries given up on (Valkey kept failing, or a full queue).
- ``agent_stream.write.duration`` (histogram, s): every batch round trip, failed ones with ``error.type``.
- ``agent_stream.turn.time_to_first_chunk`` (histogram, s): from the turn's acceptance by the HTTP route
  to its first entry in Valkey (recorded when the acceptance time is known, see ``begin_turn``).
- ``agent_stream.readers.active`` (up-down counter): readers following a stream now.
- ``agent_stream.delivery.lag`` (histogram, s): entry written (its id's time) to entry handed to the
  reader's consumer (the HTTP response), for live entries (entries a resume replays are counted
  instead), sampled: a reader measures its first entry and then at most one entry every 50 ms.
- ``agent_stream.resumes`` (counter): reads that resume from a cursor.
- ``agent_stream.replayed.entries`` (counter): entries those reads caught up on from Valkey.
- ``agent_stream.reconciliations`` (counter): streams completed from the committed outcome.

Spans (tracer ``valkey_buffer``): ``agent_stream.write`` (PRODUCER), one per turn's stream, from the
turn's first word to the buffer until its end is in Valkey, with an event per batch (the first
``_MAX_BATCH_EVENTS``) and totals as attributes; ``agent_stream.read`` (CONSUMER), one per reader, linked
to the turn's trace when it is another trace (a resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

AGENT_NAME = "gen_ai.agent.name"
CONVERSATION_ID = "gen_ai.conversation.id"
CORRELATION_ID = "agent_stream.correlation_id"
TIME_TO_FIRST_CHUNK_ATTRIBUTE = "agent_stream.time_to_first_chunk_s"
ENTRIES_DROPPED_ATTRIBUTE = "agent_stream.entries.dropped"

WRITE_SPAN = "agent_stream.write"
READ_SPAN = "agent_stream.read"

# A reader measures the delivery lag of at most one entry per this many seconds: a measurement costs
# the SDK some 15 us, as much as handing the entry on, and a fast stream's lag barely changes within it.
_LAG_SAMPLE_SECONDS = 0.05

# Batch events per turn span (written and failed alike): enough to see how a stream started and where
# it stalled, without a long answer (where nearly every chunk is a batch of its own) or a long outage
# (a retry a second) costing an event each.
_MAX_BATCH_EVENTS = 32

_SHORT_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LONG_SECONDS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0)

# The context of the measurements made per batch or per entry: outside any span, so that the SDK's
# default exemplar filter (one exemplar offered per measurement made in a sampled span) does not cost
# more than the measurement itself. The once-per-turn time to first chunk keeps its trace exemplar.
_NO_EXEMPLAR = trace.set_span_in_context(trace.INVALID_SPAN, otel_context.Context())

_meter = metrics.get_meter("valkey_buffer")
_tracer = trace.get_tracer("valkey_buffer")

CHUNKS_WRITTEN = _meter.create_counter(
    "agent_stream.chunks.written", unit="{entry}", description="Stream entries written to Valkey."
)
ENTRIES_DROPPED = _meter.create_counter(
    "agent_stream.entries.dropped", unit="{entry}", description="Stream entries given up on while Valkey failed."
)
WRITE_DURATION = _meter.create_histogram(
    "agent_stream.write.duration",
    unit="s",
    description="Duration of one batch round trip to Valkey (appends, TTL refresh, cancel check).",
    explicit_bucket_boundaries_advisory=_SHORT_SECONDS,
)
TIME_TO_FIRST_CHUNK = _meter.create_histogram(
    "agent_stream.turn.time_to_first_chunk",
    unit="s",
    description="From the turn's acceptance by the HTTP route to its first entry in Valkey.",
    explicit_bucket_boundaries_advisory=_LONG_SECONDS,
)
READERS_ACTIVE = _meter.create_up_down_counter(
    "agent_stream.readers.active", unit="{reader}", description="Readers following a stream."
)
DELIVERY_LAG = _meter.create_histogram(
    "agent_stream.delivery.lag",
    unit="s",
    description="From a live entry's write to Valkey to its hand-off to the reader's consumer.",
    explicit_bucket_boundaries_advisory=_SHORT_SECONDS,
)
RESUMES = _meter.create_counter("agent_stream.resumes", unit="{read}", description="Reads that resume from a cursor.")
REPLAYED_ENTRIES = _meter.create_counter(
    "agent_stream.replayed.entries", unit="{entry}", description="Entries resumed reads caught up on from Valkey."
)
RECONCILIATIONS = _meter.create_counter(
    "agent_stream.reconciliations", unit="{stream}", description="Streams completed from the committed outcome."
)


def current_trace_headers() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``...), empty when there is none.

    What carries a turn's trace where a context cannot go: across the durable hop, into the
    accepted-turn record.
    """
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def trace_context_from_headers(headers: Mapping[str, str] | None) -> otel_context.Context | None:
    """The trace context that :func:`current_trace_headers` wrote, ``None`` when the headers hold none."""
    if not headers:
        return None
    extracted = propagate.extract(dict(headers))
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


class TurnTelemetry:
    """The telemetry of one turn's writes: its ``agent_stream.write`` span and the write metrics.

    Args:
        session_id: The session.
        correlation_id: The turn.
        agent: The agent's name, if known.
        parent: The trace the span joins (the HTTP request that accepted the turn); else the current one.
        accepted_at_ms: When the route accepted the turn, for the time to first chunk; unknown if ``None``.
    """

    def __init__(
        self,
        *,
        session_id: str,
        correlation_id: str,
        agent: str | None,
        parent: otel_context.Context | None,
        accepted_at_ms: int | None,
    ) -> None:
        self.attributes: dict[str, Any] = {AGENT_NAME: agent} if agent else {}
        self._accepted_at_ms = accepted_at_ms
        self._first_written = False
        self._batches = 0
        self._events = 0
        self._entries = 0
        self._dropped = 0
        self.span = _tracer.start_span(
            WRITE_SPAN,
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={**self.attributes, CONVERSATION_ID: session_id, CORRELATION_ID: correlation_id},
        )
        self._recording = self.span.is_recording()
        self._ended = False

    def task_context(self) -> contextvars.Context | None:
        """A context in which the span is current (for the flushing task, so its logs carry its ids)."""
        if not self._recording:
            return None
        context = contextvars.copy_context()
        context.run(otel_context.attach, trace.set_span_in_context(self.span))
        return context

    def batch_written(self, entries: int, seconds: float) -> None:
        """One batch round trip that succeeded."""
        CHUNKS_WRITTEN.add(entries, self.attributes, _NO_EXEMPLAR)
        WRITE_DURATION.record(seconds, self.attributes, _NO_EXEMPLAR)
        self._batches += 1
        self._entries += entries
        if not self._first_written:
            self._first_written = True
            self._first_entry_written()
        if self._recording and self._events < _MAX_BATCH_EVENTS:
            self._events += 1
            self.span.add_event("batch written", {"agent_stream.entries": entries, "agent_stream.duration_s": seconds})

    def batch_failed(self, entries: int, seconds: float, error: BaseException) -> None:
        """One batch round trip that failed (it may be retried)."""
        error_type = type(error).__qualname__
        WRITE_DURATION.record(seconds, {**self.attributes, "error.type": error_type}, _NO_EXEMPLAR)
        if self._recording and self._events < _MAX_BATCH_EVENTS:
            self._events += 1
            event: dict[str, Any] = {
                "agent_stream.entries": entries,
                "agent_stream.duration_s": seconds,
                "error.type": error_type,
            }
            self.span.add_event("batch failed", event)

    def dropped(self, entries: int) -> None:
        """Entries given up on."""
        self._dropped += entries
        ENTRIES_DROPPED.add(entries, self.attributes)
        if self._recording:
            self.span.add_event("entries dropped", {"agent_stream.entries": entries})

    def ended(self, end: str, *, written: bool, replaced: bool = False) -> None:
        """The turn's end was written (or given up on): the span ends with the turn's totals.

        Args:
            end: ``done``, ``cancelled``, ``error`` or ``abandoned`` (the producer never ended the turn).
            written: Whether the end reached Valkey.
            replaced: Whether the committed text replaced what was streamed (a ``replace`` entry).
        """
        if self._ended:
            return
        self._ended = True
        if not self._recording:
            self.span.end()
            return
        self.span.set_attributes(
            {
                "agent_stream.end": end,
                "agent_stream.end_written": written,
                "agent_stream.replaced": replaced,
                "agent_stream.batches": self._batches,
                "agent_stream.entries.written": self._entries,
                ENTRIES_DROPPED_ATTRIBUTE: self._dropped,
            }
        )
        if end == "error" or not written:
            description = "the turn failed" if end == "error" else f"the turn's end was not written ({end})"
            self.span.set_status(Status(StatusCode.ERROR, description))
        self.span.end()

    def _first_entry_written(self) -> None:
        if self._accepted_at_ms is None:
            return
        seconds = max(0.0, time.time() - self._accepted_at_ms / 1000)
        TIME_TO_FIRST_CHUNK.record(seconds, self.attributes)
        if self._recording:
            self.span.set_attribute(TIME_TO_FIRST_CHUNK_ATTRIBUTE, seconds)


# The turn's trace context as the route recorded it (W3C headers), or None: looks it up by correlation id.
TurnTraceLookup = Callable[[str], Awaitable[Mapping[str, str] | None]]


class ReaderTelemetry:
    """The telemetry of one reader: its ``agent_stream.read`` span and the read metrics.

    Args:
        session_id: The session read.
        correlation_id: The turn followed, if given.
        resumed: Whether the read resumes from a cursor.
        parent: The trace the span joins (the HTTP request that reads); else the current one.
        turn_trace: Finds the trace of the turn the reader follows, to link the span to it.
    """

    def __init__(
        self,
        *,
        session_id: str,
        correlation_id: str | None,
        resumed: bool,
        parent: otel_context.Context | None,
        turn_trace: TurnTraceLookup | None,
    ) -> None:
        attributes: dict[str, Any] = {CONVERSATION_ID: session_id, "agent_stream.resumed": resumed}
        if correlation_id:
            attributes[CORRELATION_ID] = correlation_id
        self.span = _tracer.start_span(READ_SPAN, context=parent, kind=SpanKind.CONSUMER, attributes=attributes)
        self._recording = self.span.is_recording()
        self._resumed = resumed
        self._turn_trace = turn_trace
        self._linking: asyncio.Task[None] | None = None
        self._agent: str | None = None
        self._attributes: dict[str, Any] = {}
        self._delivered = 0
        self._replayed = 0
        self._next_lag_sample = 0.0
        self._active = False

    @property
    def resumed(self) -> bool:
        """Whether the read resumes from a cursor (its catch-up counts as replayed)."""
        return self._resumed

    def started(self) -> None:
        """The reader follows the stream now."""
        self._active = True
        READERS_ACTIVE.add(1)
        if self._resumed:
            RESUMES.add(1)

    def turn_known(self, correlation_id: str) -> None:
        """The reader knows its turn: link the span to the turn's trace (in the background)."""
        if not self._recording or self._turn_trace is None or self._linking is not None:
            return
        self.span.set_attribute(CORRELATION_ID, correlation_id)
        self._linking = asyncio.get_running_loop().create_task(self._link(self._turn_trace, correlation_id))

    def agent_known(self, agent: str | None) -> None:
        """The agent of the entries read, once it changes (attributes are rebuilt only then)."""
        if agent != self._agent:
            self._agent = agent
            self._attributes = {AGENT_NAME: agent} if agent else {}

    def delivered(self, written_ms: int) -> None:
        """A live entry (written at ``written_ms``, its id's time) is handed to the consumer."""
        self._delivered += 1
        now = time.monotonic()
        if now < self._next_lag_sample:
            return
        self._next_lag_sample = now + _LAG_SAMPLE_SECONDS
        lag = time.time() - written_ms / 1000
        DELIVERY_LAG.record(lag if lag > 0 else 0.0, self._attributes, _NO_EXEMPLAR)

    def replayed(self, entries: int) -> None:
        """A resumed read caught up on ``entries`` entries from Valkey."""
        if entries:
            self._delivered += entries
            self._replayed += entries
            REPLAYED_ENTRIES.add(entries, self._attributes, _NO_EXEMPLAR)

    def reconciled(self) -> None:
        """The stream was completed from the committed outcome."""
        RECONCILIATIONS.add(1, self._attributes)

    def ended(self, end: str) -> None:
        """The reader stopped: ``done``, ``cancelled``, ``error``, ``reconciled``, ``idle`` or ``closed``."""
        if self._active:
            self._active = False
            READERS_ACTIVE.add(-1)
        if self._recording:
            self.span.set_attributes(
                {
                    "agent_stream.end": end,
                    "agent_stream.entries.delivered": self._delivered,
                    "agent_stream.replayed.entries": self._replayed,
                    **self._attributes,
                }
            )
            if end in ("idle", "unavailable"):
                self.span.set_status(Status(StatusCode.ERROR, f"the reader gave up ({end})"))
        if self._linking is not None and not self._linking.done():
            # The link is being looked up (one request, bounded by its timeout): end the span after it.
            self._linking.add_done_callback(lambda _: self.span.end())
        else:
            self.span.end()

    async def _link(self, lookup: TurnTraceLookup, correlation_id: str) -> None:
        with contextlib.suppress(Exception):
            turn = trace_context_from_headers(await lookup(correlation_id))
            if turn is None:
                return
            turn_span = trace.get_current_span(turn).get_span_context()
            if turn_span.trace_id != self.span.get_span_context().trace_id:
                self.span.add_link(turn_span, {"agent_stream.link": "turn"})
