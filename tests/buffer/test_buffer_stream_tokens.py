"""Stream tokens against a real valkey-server: what they grant, and every way they are refused."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from http_api import StreamTokenError, StreamTokens
from tests.buffer.helpers import MakeBuffer, new_id
from valkey_buffer import ValkeySettings, ValkeyStreamBuffer


async def test_a_turn_token_grants_that_turn_of_that_session_only(buffer: ValkeyStreamBuffer) -> None:
    tokens = StreamTokens(buffer, ttl_seconds=600)
    session, turn = new_id(), new_id("t")
    grant = await tokens.check(await tokens.issue(session, turn))

    assert (grant.session_id, grant.correlation_id) == (session, turn)
    assert grant.allows(session, turn)
    assert not grant.allows(session, new_id("t")), "another turn of the same session"
    assert not grant.allows(session, None), "the whole session"
    assert not grant.allows(new_id(), turn), "the same turn id in another session"
    assert time.time() + 590 < grant.expires_at <= time.time() + 600


async def test_a_session_token_grants_every_turn_of_its_session(buffer: ValkeyStreamBuffer) -> None:
    tokens = StreamTokens(buffer)
    session = new_id()
    grant = await tokens.check(await tokens.issue(session))
    assert grant.correlation_id is None
    assert grant.allows(session, new_id("t")) and grant.allows(session, None)
    assert not grant.allows(new_id(), None)


async def test_an_expired_token_is_refused(buffer: ValkeyStreamBuffer) -> None:
    tokens = StreamTokens(buffer, ttl_seconds=60)
    now = time.time()
    token = await tokens.issue(new_id(), "t", now=now)
    assert (await tokens.check(token, now=now + 59)).correlation_id == "t"
    with pytest.raises(StreamTokenError, match="expired") as refused:
        await tokens.check(token, now=now + 61)
    assert refused.value.status_code == 401


async def test_a_tampered_or_malformed_token_is_refused(buffer: ValkeyStreamBuffer) -> None:
    tokens = StreamTokens(buffer)
    session = new_id()
    token = await tokens.issue(session, "t")
    body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    other_body = base64.urlsafe_b64encode(json.dumps({**payload, "s": new_id()}).encode()).rstrip(b"=").decode()
    longer = base64.urlsafe_b64encode(json.dumps({**payload, "e": payload["e"] + 10**6}).encode()).rstrip(b"=")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    bad = [
        None,
        "",
        "no-dot",
        ".",
        f"{body}.",
        f".{signature}",
        f"{other_body}.{signature}",  # another session, with this token's signature
        f"{longer.decode()}.{signature}",  # a later expiry
        f"{body}.{flipped}",
        f"{body}.{signature}x",
        f"{body}!.{signature}",
        "é." + signature,
        "a" * 10_000 + "." + signature,
        base64.urlsafe_b64encode(b"[1,2]").decode() + "." + signature,
    ]
    for candidate in bad:
        with pytest.raises(StreamTokenError) as refused:
            await tokens.check(candidate)
        assert refused.value.status_code == 401, candidate
        assert "not valid" in str(refused.value)


async def test_keys_rotate_and_the_previous_key_still_checks_its_tokens(buffer: ValkeyStreamBuffer) -> None:
    tokens = StreamTokens(buffer, ttl_seconds=120, rotation_seconds=60)
    start = (time.time() // 60) * 60 + 50  # 10 s before the end of a period
    session = new_id()
    old = await tokens.issue(session, "t", now=start)
    new = await tokens.issue(session, "t", now=start + 20)  # the next period: a new key signs
    assert json.loads(_payload(old))["k"] + 1 == json.loads(_payload(new))["k"]
    assert old.split(".")[1] != new.split(".")[1]
    # Both are accepted in the new period: rotation never cuts a token short...
    assert (await tokens.check(old, now=start + 30)).session_id == session
    assert (await tokens.check(new, now=start + 30)).session_id == session
    # ...but a key two periods old signs nothing valid any more, even a token that has not expired.
    long_lived = StreamTokens(buffer, ttl_seconds=600, rotation_seconds=60)
    ancient = await long_lived.issue(session, "t", now=start)
    with pytest.raises(StreamTokenError):
        await long_lived.check(ancient, now=start + 130)


async def test_hosts_racing_to_create_a_key_end_up_with_the_same_one(
    valkey_settings: ValkeySettings, make_buffer: MakeBuffer
) -> None:
    # A period no test has used: every host finds no key and tries to create one at once.
    rotation = 3600
    now = (time.time() // rotation + 1000 + (time.time_ns() % 997)) * rotation
    hosts = [StreamTokens(make_buffer(valkey_settings), ttl_seconds=600, rotation_seconds=rotation) for _ in range(6)]
    issued = await asyncio.gather(*(host.issue("s", "t", now=now) for host in hosts))
    for token in issued:
        for host in hosts:
            assert (await host.check(token, now=now + 1)).correlation_id == "t"


def _payload(token: str) -> str:
    body = token.split(".")[0]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
