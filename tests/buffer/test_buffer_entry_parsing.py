"""Parsing entries as the live feed reads them: the fast path for text chunks agrees with the general one."""

from __future__ import annotations

import pytest

from valkey_buffer._chunk import StreamChunk, message_from_pairs
from valkey_buffer._stream_reads import StreamReads

TEXT_ENTRY = [
    [b"text", "héllo ".encode()],
    [b"sequence", b"12"],
    [b"timestamp", b"1700000000000"],
    [b"correlation_id", b"turn-1"],
    [b"run", b"abcd1234"],
    [b"agent", b"TravelAgent"],
]


def general(entry_id: str, pairs: list[list[bytes]]) -> StreamChunk:
    return StreamChunk.from_entry(entry_id, {name.decode(): value.decode() for name, value in pairs})


@pytest.mark.parametrize(
    "pairs",
    [
        TEXT_ENTRY,
        TEXT_ENTRY[:5],  # written without an agent's name
        [[b"text", b""], [b"done", b"true"], *TEXT_ENTRY[1:]],
        [[b"text", b""], [b"tool", b"call"], [b"call_id", b"c1"], [b"tool_name", b"weather"], *TEXT_ENTRY[1:]],
        [TEXT_ENTRY[1], TEXT_ENTRY[0], *TEXT_ENTRY[2:]],  # another writer's field order
        [[b"text", b"from the reference samples"]],
    ],
    ids=["text", "no-agent", "done", "tool-call", "other-order", "reference-schema"],
)
def test_every_entry_parses_as_the_general_path_does(pairs: list[list[bytes]]) -> None:
    assert StreamReads(None).parse("1-1", pairs) == general("1-1", pairs)  # type: ignore[arg-type]


def test_only_text_chunks_in_the_writers_layout_take_the_fast_path() -> None:
    assert message_from_pairs("1-1", TEXT_ENTRY) == general("1-1", TEXT_ENTRY)
    assert message_from_pairs("1-1", [[b"text", b""], [b"done", b"true"], *TEXT_ENTRY[1:]]) is None
    assert message_from_pairs("1-1", [TEXT_ENTRY[1], TEXT_ENTRY[0], *TEXT_ENTRY[2:]]) is None


@pytest.mark.parametrize(
    "bad",
    [[b"sequence", b"twelve"], [b"text", b"\xff\xfe"]],
    ids=["sequence-not-a-number", "text-not-utf8"],
)
def test_a_malformed_text_entry_is_skipped_and_counted(bad: list[bytes]) -> None:
    reads = StreamReads(None)  # type: ignore[arg-type]
    pairs = [bad if pair[0] == bad[0] else pair for pair in TEXT_ENTRY]
    assert reads.parse("1-1", pairs) is None
    assert reads.malformed_entries == 1
