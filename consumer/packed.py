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
        the lengths in characters of workspace_id, title, currency, owner_id, owner_name,
        company (0xFFFF: unknown; at most 2,000 characters each per the event schema)
    n_open x <BBq    open insights: rule index, priority index, raised_at_ms
    n_seen x 8 bytes digests of the deal's most recent event ids (oldest first)
    the six strings concatenated, UTF-8 (one encode and one decode per pack/unpack)
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
_OPEN_SIZE = _OPEN.size
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


def pack(deal: DealState, deadline: int | None) -> bytes:
    """``deal`` and its next deadline as bytes (``deal_id`` is the key, not part of the value)."""
    ws, title, currency = deal.workspace_id, deal.title, deal.currency
    owner_id, owner_name, company = deal.owner_id, deal.owner_name, deal.company
    value, probability, close_day = deal.value, deal.probability, deal.close_day
    seen = deal.seen
    head = _HEAD.pack(
        deal.created_at_ms,
        deal.last_activity_at_ms,
        deal.stage_entered_at_ms,
        NO_DEADLINE if deadline is None else deadline,
        0.0 if value is None else value,
        0.0 if probability is None else probability,
        0 if close_day is None else close_day,
        deal.activity_count,
        _STAGE_CODE[deal.stage],
        (value is None) | (probability is None) << 1 | (close_day is None) << 2,
        len(deal.open),
        len(seen) // DIGEST_SIZE,
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
    if deal.open:
        opened = b"".join(
            [
                _OPEN.pack(_RULE_CODE[o.rule], _PRIORITY_CODE[o.priority], o.raised_at_ms)
                for o in deal.open
            ]
        )
        return b"".join((head, opened, seen, texts.encode()))
    return b"".join((head, seen, texts.encode()))


def unpack(deal_id: str, data: bytes) -> DealState:
    """The ``DealState`` that ``pack`` was given (``ValueError``/``struct.error`` if corrupt)."""
    (created, activity, entered, _deadline, value, probability, close_day, count, stage, flags,
     n_open, n_seen, n_ws, n_title, n_currency, n_owner_id, n_owner_name, n_company,
     ) = _HEAD.unpack_from(data)  # fmt: skip
    pos = HEADER_SIZE
    open_: tuple[OpenInsight, ...] = ()
    if n_open:
        items = []
        for _ in range(n_open):
            rule, priority, raised = _OPEN.unpack_from(data, pos)
            items.append(OpenInsight(_RULES[rule], _PRIORITIES[priority], raised))
            pos += _OPEN_SIZE
        open_ = tuple(items)
    end = pos + n_seen * DIGEST_SIZE
    seen = data[pos:end]
    texts = data[end:].decode()
    # lengths are in characters (0xFFFF: unknown): one decode, then str slices
    i = n_ws
    workspace_id = texts[:i]
    title = None if n_title == _NONE else texts[i : (i := i + n_title)]
    currency = None if n_currency == _NONE else texts[i : (i := i + n_currency)]
    owner_id = None if n_owner_id == _NONE else texts[i : (i := i + n_owner_id)]
    owner_name = None if n_owner_name == _NONE else texts[i : (i := i + n_owner_name)]
    company = None if n_company == _NONE else texts[i : (i := i + n_company)]
    if i != len(texts):
        raise ValueError(f"packed deal {deal_id!r}: the text lengths do not add up")
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
    )


def deadline_of(data: bytes) -> int | None:
    """The deadline stored in a packed deal, without unpacking the rest."""
    (due,) = _DEADLINE.unpack_from(data, _DEADLINE_AT)
    return None if due == NO_DEADLINE else int(due)
