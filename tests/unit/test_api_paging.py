"""Cursors, ETags, the rate limiter and token formats of the read API (pure parts)."""

from __future__ import annotations

import datetime as dt

import pytest

from consumer.api.paging import BadCursor, decode_cursor, encode_cursor, etag_of, matches
from consumer.api.queries import list_sql
from consumer.api.ratelimit import RateLimiter
from consumer.api.tokens import MemoryTokens, new_token, token_hash, well_formed

AT = dt.datetime(2026, 12, 1, 8, 30, 0, 123456, tzinfo=dt.UTC)


def test_a_cursor_round_trips() -> None:
    assert decode_cursor(encode_cursor(2, AT, "i-1")) == (2, AT, "i-1")


@pytest.mark.parametrize(
    "cursor",
    ["", "abc", "W10", encode_cursor(2, AT, "x")[:-4], "WzcsIjIwMjYtMTItMDEiLCJ4Il0"],
)
def test_a_foreign_cursor_is_refused(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(cursor)


def test_etags_follow_the_body() -> None:
    tag = etag_of(b"[1]")
    assert tag == etag_of(b"[1]") != etag_of(b"[2]")
    assert matches(tag, tag)
    assert matches(f'"other", W/{tag}', tag)
    assert matches("*", tag)
    assert not matches(None, tag)
    assert not matches('"other"', tag)


def test_the_rate_limiter_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0
    now[0] = 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    now[0] = 100.0
    assert [limiter.take("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # capped at the burst


def test_the_rate_limiter_forgets_the_oldest_keys() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=lambda: 0.0, max_keys=2)
    limiter.take("a")
    limiter.take("b")
    limiter.take("c")  # forgets a: a starts with a full bucket again
    assert limiter.take("a") == 0.0
    assert limiter.take("c") > 0


async def test_tokens_are_random_and_only_their_hash_is_kept() -> None:
    (id1, t1), (id2, t2) = new_token(), new_token()
    assert t1 != t2
    assert id1 != id2
    assert well_formed(t1)
    assert t1.startswith(f"vos_{id1}_")
    assert len(token_hash(t1)) == 64
    assert t1 not in token_hash(t1)
    assert not well_formed(t1 + "x")
    tokens = MemoryTokens()
    token = tokens.add("ws-a")
    info = await tokens.authenticate(token)
    assert info is not None
    assert info.workspace_id == "ws-a"
    assert await tokens.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None


def test_the_list_statement_has_only_the_given_filters_and_no_values() -> None:
    sql, args = list_sql("open", {"limit": 51}, owner="O'Brien; DROP")
    assert args == ["O'Brien; DROP", 51]
    assert "O'Brien" not in sql
    assert "status = 'open'" in sql
    assert "lower($2)" in sql
    assert sql.endswith("LIMIT $3")
    assert "rule" not in sql.split("WHERE")[1]
    sql, args = list_sql(None, {"rank": 2, "after": (3, AT, "i-1"), "limit": 10})
    assert args == [2, 3, AT, "i-1", 10]
    assert "< ($3::smallint, $4::timestamptz, $5::text)" in sql
    assert "status" not in sql.split("WHERE")[1]
    with pytest.raises(KeyError):
        list_sql("closed", {"limit": 1})
