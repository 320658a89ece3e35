"""The compact form of one deal's state: one ``bytes`` object per tracked deal.

The monitor keeps every open deal in this form (about 200 bytes for a typical deal, against ~700
for the same state as Python objects: a ``DealState`` of 17 slots, boxed ints and floats, six
``str`` objects) and unpacks a deal only while an event or a due deadline is being applied to
it. The same bytes are what the changelog stores (``consumer.changelog``), so a checkpoint does
not encode and a restore does not decode: both copy bytes. Pure.

Layout (little-endian), version 1 of the packed form::

    header  <qqqqddiIBBBB6H  (72 bytes)
        created_at_ms, last_activity_at_ms, stage_entered_at_ms,
        deadline_ms   (the deal's place in the deadline index; NO_DEADLINE if none),
        value, probability (0.0 when unknown, see flags),
        close_day (int32), activity_count (uint32),
        stage   (0 unknown, 1 lead, 2 qualified, 3 proposal, 4 negotiation),
        flags   (1 value unknown, 2 probability unknown, 4 close date unknown),
        n_open, n_seen,
        the UTF-8 lengths of workspace_id, title, currency, owner_id, owner_name, company
        (0xFFFF: unknown)
    n_open x <BBq    open insights: rule index, priority index, raised_at_ms
    n_seen x 8 bytes digests of the deal's most recent event ids (oldest first)
    the six strings' UTF-8 bytes, in the order above
"""

from __future__ import annotations

import struct

from consumer.state import DealState, OpenInsight
from schemas.events import Stage
from schemas.insights import Priority, RuleName

NO_DEADLINE = -(2**63)

_HEAD = struct.Struct("<qqqqddiIBBBB6H")
_OPEN = struct.Struct("<BBq")
_DEADLINE = struct.Struct("<q")
_DEADLINE_AT = 24  # byte offset of deadline_ms in the header
_NONE = 0xFFFF

_STAGES: tuple[Stage | None, ...] = (None, *Stage)
_STAGE_CODE: dict[Stage | None, int] = {s: i for i, s in enumerate(_STAGES)}
_RULES: tuple[RuleName, ...] = tuple(RuleName)
_RULE_CODE = {r: i for i, r in enumerate(_RULES)}
_PRIORITIES: tuple[Priority, ...] = tuple(Priority)
_PRIORITY_CODE = {p: i for i, p in enumerate(_PRIORITIES)}

HEADER_SIZE = _HEAD.size
DIGEST_SIZE = 8


def _utf8(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def pack(deal: DealState, deadline: int | None) -> bytes:
    """``deal`` and its next deadline as bytes (``deal_id`` is the key, not part of the value)."""
    texts = (
        deal.workspace_id.encode(),
        _utf8(deal.title),
        _utf8(deal.currency),
        _utf8(deal.owner_id),
        _utf8(deal.owner_name),
        _utf8(deal.company),
    )
    value, probability, close_day = deal.value, deal.probability, deal.close_day
    flags = (value is None) | (probability is None) << 1 | (close_day is None) << 2
    seen = deal.seen
    parts = [
        _HEAD.pack(
            deal.created_at_ms,
            deal.last_activity_at_ms,
            deal.stage_entered_at_ms,
            NO_DEADLINE if deadline is None else deadline,
            0.0 if value is None else value,
            0.0 if probability is None else probability,
            0 if close_day is None else close_day,
            deal.activity_count,
            _STAGE_CODE[deal.stage],
            flags,
            len(deal.open),
            len(seen) // DIGEST_SIZE,
            *(_NONE if t is None else len(t) for t in texts),
        )
    ]
    for item in deal.open:
        parts.append(
            _OPEN.pack(_RULE_CODE[item.rule], _PRIORITY_CODE[item.priority], item.raised_at_ms)
        )
    parts.append(seen)
    parts.extend(t for t in texts if t)
    return b"".join(parts)


def unpack(deal_id: str, data: bytes) -> DealState:
    """The ``DealState`` that ``pack`` was given (``ValueError``/``struct.error`` if corrupt)."""
    (created, activity, entered, _deadline, value, probability, close_day, count, stage, flags,
     n_open, n_seen, *lengths) = _HEAD.unpack_from(data)  # fmt: skip
    pos = HEADER_SIZE
    open_: tuple[OpenInsight, ...] = ()
    if n_open:
        items = []
        for _ in range(n_open):
            rule, priority, raised = _OPEN.unpack_from(data, pos)
            items.append(OpenInsight(_RULES[rule], _PRIORITIES[priority], raised))
            pos += _OPEN.size
        open_ = tuple(items)
    end = pos + n_seen * DIGEST_SIZE
    seen = data[pos:end]
    pos = end
    texts: list[str | None] = []
    for n in lengths:
        if n == _NONE:
            texts.append(None)
        else:
            texts.append(data[pos : pos + n].decode())
            pos += n
    if pos != len(data):
        raise ValueError(f"packed deal {deal_id!r}: {len(data) - pos} bytes left over")
    workspace_id, title, currency, owner_id, owner_name, company = texts
    return DealState(
        workspace_id or "",
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


def deadline_of(data: bytes) -> int | None:
    """The deadline stored in a packed deal, without unpacking the rest."""
    (due,) = _DEADLINE.unpack_from(data, _DEADLINE_AT)
    return None if due == NO_DEADLINE else int(due)


def with_deadline(data: bytes, deadline: int | None) -> bytes:
    """The same packed deal with another deadline."""
    due = NO_DEADLINE if deadline is None else deadline
    return data[:_DEADLINE_AT] + _DEADLINE.pack(due) + data[_DEADLINE_AT + 8 :]
