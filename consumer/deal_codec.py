"""The deal codec: one deal's state as one ``bytes`` object, versioned.

The monitor keeps every open deal in this form (about 170 bytes for a typical deal, against ~700
for the same state as Python objects) and unpacks a deal only while an event or a due deadline is
being applied to it. The same bytes are what the changelog stores (``consumer.changelog``), so a
checkpoint does not encode and a restore does not decode: both copy bytes. Pure.

Every packed deal starts with its format version (``FORMAT``). Rules are stored by their own
wire code (``Rule.code`` in each rule's module), never by a position in a list, so adding or
reordering rules changes no stored state; a code no registered rule has is dropped on unpack.

Layout of format 4 (little-endian)::

    header  <BqqqqddiIBBBBB6H  (74 bytes)
        format (4),
        created_at_ms, last_activity_at_ms, stage_entered_at_ms,
        deadline_ms   (the deal's place in the deadline index; NO_DEADLINE if none),
        value, probability (0.0 when unknown, see flags),
        close_day (int32), activity_count (uint32),
        stage   (0 unknown, 1 lead, 2 qualified, 3 proposal, 4 negotiation),
        flags   (1 value unknown, 2 probability unknown, 4 close date unknown,
                 8 partial: last_event_at_ms follows the header,
                 16 engagement: the engagement block follows,
                 32 score: the score block follows the engagement block),
        n_open, n_seen, n_activity,
        the lengths in characters of workspace_id, title, currency, owner_id, owner_name,
        company (0xFFFF: unknown; at most 2,000 characters each per the event schema)
    [<q last_event_at_ms, only with flag 8: a deal with neither stage nor value]
    [engagement block, only with flag 16 (``consumer.state.Engagement``):
        <qqqBBBB  last_inbound_ms, last_outbound_ms, unanswered_since_ms, unanswered,
                  n_held, n_scheduled, n_contacts  (28 bytes)
        n_held x <q        held meetings' starts
        n_scheduled x <Iq  scheduled meetings: id digest, start
        n_contacts x <Ii   engaged contacts: address digest, last day]
    [score block, only with flag 32 (``consumer.state.Score``):
        <qIdiBH   as_of_ms, model_version, probability (points), p10_day (NO_DAY: none),
                  n_daily, the length of the factors' text in bytes  (28 bytes)
        n_daily x <HH      scored days: day number, highest probability that day in
                           hundredths of a point (``consumer.state.scored_days``)
        the factors' text, UTF-8]
    n_open x <BBq       open insights: rule code, priority code, raised_at_ms
    n_seen x 8 bytes    digests of the deal's most recent event ids (oldest first)
    n_activity x 3      activity history (``consumer.state.record_activity``)
    the six strings concatenated, UTF-8 (one encode and one decode per pack/unpack)

Format 3 is format 4 without the score block (flag 32 never set), and format 2 is format 3
without the engagement block (flag 16 never set): ``unpack`` reads it as
it is, ``upgrade`` rewrites its version byte.

Format 1 (before the version byte: the same header without format and n_activity, rules by
their position in ``RuleName``, which then was their code) is read by ``upgrade_v1``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from consumer.rules.base import Rule
from consumer.rules.registry import RULES
from consumer.state import ENTRY_SIZE, DealState, Engagement, OpenInsight, Score
from schemas.events import Stage
from schemas.insights import Priority, RuleName

FORMAT = 4
READABLE = (2, 3, 4)
"""Formats ``unpack`` reads (3 is 4 without a score, 2 is 3 without engagement)."""
NO_DEADLINE = -(2**63)

_HEAD = struct.Struct("<BqqqqddiIBBBBB6H")
_HEAD_V1 = struct.Struct("<qqqqddiIBBBB6H")
_OPEN = struct.Struct("<BBq")
_DEADLINE = _INT = struct.Struct("<q")
_OPEN_SIZE = _OPEN.size
_ENGAGEMENT = struct.Struct("<qqqBBBB")
_HELD = struct.Struct("<q")
_SCHEDULED = struct.Struct("<Iq")
_CONTACT = struct.Struct("<Ii")
_SCORE = struct.Struct("<qIdiBH")
_SCORE_SIZE = _SCORE.size
_SCORED_DAY_SIZE = 4
NO_DAY = -(2**31)
_DEADLINE_AT = 25  # byte offset of deadline_ms in the header
_NONE = 0xFFFF

_STAGES: tuple[Stage | None, ...] = (
    None,
    Stage.LEAD,
    Stage.QUALIFIED,
    Stage.PROPOSAL,
    Stage.NEGOTIATION,
)
_STAGE_CODE: dict[Stage | None, int] = {s: i for i, s in enumerate(_STAGES)}
_PRIORITY_BY_CODE: dict[int, Priority] = {
    0: Priority.LOW,
    1: Priority.MEDIUM,
    2: Priority.HIGH,
    3: Priority.CRITICAL,
}
_PRIORITY_CODE = {p: c for c, p in _PRIORITY_BY_CODE.items()}


def rule_codes(rules: Iterable[Rule[Any]]) -> tuple[dict[int, RuleName], dict[RuleName, int]]:
    """Code to rule and rule to code, from the rules' own codes."""
    by_code = {rule.code: rule.name for rule in rules}
    return by_code, {name: code for code, name in by_code.items()}


_RULE_BY_CODE, _RULE_CODE = rule_codes(RULES)

HEADER_SIZE = _HEAD.size
DIGEST_SIZE = 8


def pack(deal: DealState, deadline: int | None) -> bytes:
    """``deal`` and its next deadline as bytes (``deal_id`` is the key, not part of the value)."""
    ws, title, currency = deal.workspace_id, deal.title, deal.currency
    owner_id, owner_name, company = deal.owner_id, deal.owner_name, deal.company
    value, probability, close_day = deal.value, deal.probability, deal.close_day
    seen, activity = deal.seen, deal.activity
    stage = deal.stage
    partial = stage is None and value is None
    engagement = deal.engagement
    score = deal.score
    head = _HEAD.pack(
        FORMAT,
        deal.created_at_ms,
        deal.last_activity_at_ms,
        deal.stage_entered_at_ms,
        NO_DEADLINE if deadline is None else deadline,
        0.0 if value is None else value,
        0.0 if probability is None else probability,
        0 if close_day is None else close_day,
        deal.activity_count,
        _STAGE_CODE[stage],
        (value is None)
        | (probability is None) << 1
        | (close_day is None) << 2
        | partial << 3
        | (engagement is not None) << 4
        | (score is not None) << 5,
        len(deal.open),
        len(seen) // DIGEST_SIZE,
        len(activity) // ENTRY_SIZE,
        len(ws),
        _NONE if title is None else len(title),
        _NONE if currency is None else len(currency),
        _NONE if owner_id is None else len(owner_id),
        _NONE if owner_name is None else len(owner_name),
        _NONE if company is None else len(company),
    )
    texts = "".join(
        [ws, title or "", currency or "", owner_id or "", owner_name or "", company or ""]
    )
    if partial:
        head += _INT.pack(deal.last_event_at_ms)
    if engagement is not None:
        head += _pack_engagement(engagement)
    if score is not None:
        head += _pack_score(score)
    if deal.open:
        opened = b"".join(
            [
                _OPEN.pack(_RULE_CODE[o.rule], _PRIORITY_CODE[o.priority], o.raised_at_ms)
                for o in deal.open
            ]
        )
        return b"".join((head, opened, seen, activity, texts.encode()))
    return b"".join((head, seen, activity, texts.encode()))


def _texts(deal_id: str, texts: str, start: int, lengths: Iterable[int]) -> list[str | None]:
    """The optional texts that follow ``texts[:start]``, one per length in characters
    (``_NONE``: absent); they must fill ``texts`` exactly."""
    out: list[str | None] = []
    for n in lengths:
        if n == _NONE:
            out.append(None)
        else:
            out.append(texts[start : start + n])
            start += n
    if start != len(texts):
        raise ValueError(f"packed deal {deal_id!r}: the text lengths do not add up")
    return out


def unpack(deal_id: str, data: bytes) -> DealState:
    """The ``DealState`` that ``pack`` was given (``ValueError``/``struct.error`` if corrupt or
    of another format)."""
    (fmt, created, activity, entered, _deadline, value, probability, close_day, count, stage,
     flags, n_open, n_seen, n_activity, n_ws, n_title, n_currency, n_owner_id, n_owner_name,
     n_company) = _HEAD.unpack_from(data)  # fmt: skip
    if fmt != FORMAT and fmt not in READABLE:
        raise ValueError(f"packed deal {deal_id!r}: format {fmt}, expected {FORMAT}")
    pos = HEADER_SIZE
    last_event = 0
    if flags & 8:
        (last_event,) = _INT.unpack_from(data, pos)
        pos += 8
    engagement = None
    if flags & 16:
        engagement, pos = _unpack_engagement(data, pos)
    score = None
    if flags & 32:
        score, pos = _unpack_score(data, pos)
    open_: tuple[OpenInsight, ...] = ()
    if n_open:
        end = pos + n_open * _OPEN_SIZE
        open_ = tuple(
            [
                OpenInsight(rule, _PRIORITY_BY_CODE[priority], raised)
                for code, priority, raised in _OPEN.iter_unpack(data[pos:end])
                if (rule := _RULE_BY_CODE.get(code)) is not None  # else: no longer registered
            ]
        )
        pos = end
    end = pos + n_seen * DIGEST_SIZE
    seen = data[pos:end]
    pos, end = end, end + n_activity * ENTRY_SIZE
    history = data[pos:end]
    texts = data[end:].decode()
    # lengths are in characters (0xFFFF: unknown): one decode, then str slices
    workspace_id = texts[:n_ws]
    title, currency, owner_id, owner_name, company = _texts(
        deal_id, texts, n_ws, (n_title, n_currency, n_owner_id, n_owner_name, n_company)
    )
    return DealState(
        workspace_id,
        deal_id,
        title,
        None if flags & 1 else value,
        currency,
        _STAGES[stage],
        None if flags & 2 else probability,
        None if flags & 4 else close_day,
        owner_id,
        owner_name,
        company,
        created,
        activity,
        entered,
        count,
        open_,
        seen,
        history,
        last_event,
        engagement,
        score,
    )


def _pack_score(s: Score) -> bytes:
    factors = s.factors.encode()
    head = _SCORE.pack(
        s.as_of_ms,
        s.model_version,
        s.probability,
        NO_DAY if s.p10_day is None else s.p10_day,
        len(s.daily) // _SCORED_DAY_SIZE,
        len(factors),
    )
    return b"".join((head, s.daily, factors))


def _unpack_score(data: bytes, pos: int) -> tuple[Score, int]:
    as_of, version, probability, p10, n_daily, n_factors = _SCORE.unpack_from(data, pos)
    pos += _SCORE_SIZE
    end = pos + n_daily * _SCORED_DAY_SIZE
    daily = data[pos:end]
    pos = end + n_factors
    factors = data[end:pos].decode()
    return Score(as_of, version, probability, None if p10 == NO_DAY else p10, factors, daily), pos


def _pack_engagement(e: Engagement) -> bytes:
    parts = [
        _ENGAGEMENT.pack(
            e.last_inbound_ms,
            e.last_outbound_ms,
            e.unanswered_since_ms,
            e.unanswered,
            len(e.held),
            len(e.scheduled),
            len(e.contacts),
        )
    ]
    parts += [_HELD.pack(start) for start in e.held]
    parts += [_SCHEDULED.pack(digest, start) for digest, start in e.scheduled]
    parts += [_CONTACT.pack(digest, day) for digest, day in e.contacts]
    return b"".join(parts)


def _unpack_engagement(data: bytes, pos: int) -> tuple[Engagement, int]:
    inbound, outbound, since, unanswered, n_held, n_scheduled, n_contacts = _ENGAGEMENT.unpack_from(
        data, pos
    )
    pos += _ENGAGEMENT.size
    end = pos + _HELD.size * n_held
    held = tuple(start for (start,) in _HELD.iter_unpack(data[pos:end]))
    pos, end = end, end + _SCHEDULED.size * n_scheduled
    scheduled = tuple(_SCHEDULED.iter_unpack(data[pos:end]))
    pos, end = end, end + _CONTACT.size * n_contacts
    contacts = tuple(_CONTACT.iter_unpack(data[pos:end]))
    pos = end
    return Engagement(inbound, outbound, since, unanswered, held, scheduled, contacts), pos


def upgrade(deal_id: str, data: bytes) -> bytes:
    """A packed deal of a readable format in the current one (``ValueError`` otherwise)."""
    if data and data[0] == FORMAT:
        return data
    if len(data) < HEADER_SIZE or data[0] not in READABLE:
        raise ValueError(f"packed deal {deal_id!r}: format {data[:1].hex()} is not readable")
    return bytes((FORMAT,)) + data[1:]


def _open(
    data: bytes, pos: int, n: int, by_code: dict[int, RuleName]
) -> tuple[tuple[OpenInsight, ...], int]:
    items = []
    for _ in range(n):
        code, priority, raised = _OPEN.unpack_from(data, pos)
        pos += _OPEN_SIZE
        rule = by_code.get(code)
        if rule is not None:  # a rule no longer registered: its insight cannot be evaluated
            items.append(OpenInsight(rule, _PRIORITY_BY_CODE[priority], raised))
    return tuple(items), pos


# Format 1 stored a rule's position in RuleName as it was then: these six, in this order.
_V1_RULES: dict[int, RuleName] = dict(
    enumerate(
        (
            RuleName.STALE_DEAL,
            RuleName.STUCK_IN_STAGE,
            RuleName.LOW_PROBABILITY,
            RuleName.HIGH_VALUE_AT_RISK,
            RuleName.CLOSE_DATE_PRESSURE,
            RuleName.CLOSE_DATE_PASSED,
        )
    )
)


def unpack_v1(deal_id: str, data: bytes) -> tuple[DealState, int | None]:
    """A format 1 packed deal (no version byte) and its deadline."""
    (created, activity, entered, deadline, value, probability, close_day, count, stage, flags,
     n_open, n_seen, n_ws, n_title, n_currency, n_owner_id, n_owner_name, n_company,
     ) = _HEAD_V1.unpack_from(data)  # fmt: skip
    pos = _HEAD_V1.size
    open_: tuple[OpenInsight, ...] = ()
    if n_open:
        open_, pos = _open(data, pos, n_open, _V1_RULES)
    end = pos + n_seen * DIGEST_SIZE
    seen = data[pos:end]
    texts = data[end:].decode()
    title, currency, owner_id, owner_name, company = _texts(
        deal_id, texts, n_ws, (n_title, n_currency, n_owner_id, n_owner_name, n_company)
    )
    deal = DealState(
        texts[:n_ws],
        deal_id,
        title,
        None if flags & 1 else value,
        currency,
        _STAGES[stage],
        None if flags & 2 else probability,
        None if flags & 4 else close_day,
        owner_id,
        owner_name,
        company,
        created,
        activity,
        entered,
        count,
        open_,
        seen,
    )
    return deal, None if deadline == NO_DEADLINE else int(deadline)


def upgrade_v1(deal_id: str, data: bytes) -> bytes:
    """A format 1 packed deal in the current format (same state, same deadline)."""
    deal, deadline = unpack_v1(deal_id, data)
    if deal.partial:  # format 1 did not keep it: the latest instant it did keep
        deal.last_event_at_ms = max(
            deal.created_at_ms, deal.last_activity_at_ms, deal.stage_entered_at_ms
        )
    return pack(deal, deadline)


def deadline_of(data: bytes) -> int | None:
    """The deadline stored in a packed deal, without unpacking the rest."""
    (due,) = _DEADLINE.unpack_from(data, _DEADLINE_AT)
    return None if due == NO_DEADLINE else int(due)
