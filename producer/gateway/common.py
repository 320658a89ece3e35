"""What the four normalizers share: ids, field parsing, and building validated deal events.

Normalizers are pure: ``(payload, Context) -> Normalized``. No I/O, no clock, no logging of CRM
values. A structurally broken payload raises ``PayloadError`` (the request gets 400 and nothing
is published); a single bad field value (a negative amount, an unparseable date) is dropped and
counted as ``invalid_field`` so one odd value does not block the rest of a batch.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from pydantic import ValidationError

from producer.gateway.stages import StageMap
from schemas.events import (
    ActivityLogged,
    ActivityType,
    DealClosed,
    DealCreated,
    DealDeleted,
    DealEvent,
    DealFields,
    DealUpdated,
    Direction,
    Outcome,
    Stage,
)
from vectoros.errors import VectorOSError

TEXT_MAX = 2000
ID_MAX = 200
CRM_ID_MAX = 90  # "<source>:<account>:<id>" stays within ID_MAX

# Fixed namespace of the gateway's deterministic event ids (UUIDv5).
EVENT_ID_NAMESPACE: Final = uuid.UUID("0b9f4a52-6f0e-5d43-9a57-6c1f1e2d7a11")

_ID_OK = re.compile(r"^[^\x00-\x1f\x7f]+$")


class PayloadError(VectorOSError):
    """The webhook body is unusable as a whole: 400 with ``reason`` (bounded) and ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class FieldError(ValueError):
    """One field value cannot be used; the field is dropped and counted."""


@dataclass(frozen=True)
class Context:
    """What a normalizer needs besides the payload."""

    source: str
    workspace: str
    stages: StageMap
    default_currency: str | None = None


@dataclass(frozen=True)
class ContactLookup:
    """A deal whose contacts or companies changed in the CRM: the webhook names them by CRM id
    only, so the gateway reads the deal's current contacts' addresses and companies' domains
    from the CRM (``producer.gateway.contacts``) and publishes them as a ``deal.updated``."""

    deal: str
    crm_deal_id: str
    eid: str
    at: dt.datetime


@dataclass
class Normalized:
    """The deal events of one webhook, what was ignored (reason -> count), and the deals whose
    contacts must be read from the CRM."""

    events: list[DealEvent] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    lookups: list[ContactLookup] = field(default_factory=list)

    def ignore(self, reason: str, count: int = 1) -> None:
        self.ignored[reason] += count

    def sorted_events(self) -> list[DealEvent]:
        """Events in ``occurred_at`` order (stable): a batch may list changes out of order."""
        return sorted(self.events, key=lambda e: e.occurred_at)


# -- ids ----------------------------------------------------------------------------------------


def event_id(source: str, *parts: object) -> str:
    """A deterministic event id: the same source ids always give the same id, so a redelivered
    webhook (retries, ``attemptNumber``, ``meta.attempt``) is a duplicate the monitor drops."""
    text = "\x1f".join([source, *(str(p) for p in parts)])
    return f"{source}-{uuid.uuid5(EVENT_ID_NAMESPACE, text)}"


def content_key(value: Any) -> str:
    """A canonical JSON form of ``value`` for ids derived from content."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def crm_id(value: Any, where: str) -> str:
    """A CRM object id (string or integer) as a string; anything else is a ``PayloadError``."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadError("invalid_payload", f"{where} must be a string or integer id")
    text = str(value).strip()
    if not text or len(text) > CRM_ID_MAX or not _ID_OK.match(text):
        raise PayloadError("invalid_payload", f"{where} is not a usable id")
    return text


def deal_id(source: str, *crm_ids: str) -> str:
    """``<source>:<id>`` or ``<source>:<account>:<id>``: namespaced per source, and per CRM account
    where the CRM's ids are only unique within an account (the monitor keys deals by id)."""
    return ":".join((source, *crm_ids))


# -- payload shape ------------------------------------------------------------------------------


def as_object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PayloadError("invalid_payload", f"{where} must be a JSON object")
    return value


def as_list(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise PayloadError("invalid_payload", f"{where} must be a JSON array")
    return value


def as_str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise PayloadError("invalid_payload", f"{where} must be a non-empty string")
    return value


# -- times --------------------------------------------------------------------------------------


def from_epoch_ms(value: Any, where: str) -> dt.datetime:
    """Epoch milliseconds (number or numeric string) as an aware UTC datetime."""
    try:
        ms = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        ms = math.nan
    if not math.isfinite(ms) or not 0 < ms < 1e14:
        raise PayloadError("invalid_payload", f"{where} must be epoch milliseconds")
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def from_iso(value: Any, where: str) -> dt.datetime:
    """An ISO 8601 timestamp; naive ones are taken as UTC (the CRMs send UTC)."""
    if not isinstance(value, str):
        raise PayloadError("invalid_payload", f"{where} must be an ISO 8601 timestamp")
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise PayloadError("invalid_payload", f"{where} must be an ISO 8601 timestamp") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def from_any_time(value: Any, where: str) -> dt.datetime:
    """Epoch seconds/milliseconds or ISO 8601 (sources disagree with their own docs)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return from_epoch_ms(value * 1000 if value < 1e11 else value, where)
    if isinstance(value, str) and re.fullmatch(r"\d{9,14}", value.strip()):
        number = int(value)
        return from_epoch_ms(number * 1000 if number < 1e11 else number, where)
    return from_iso(value, where)


# -- field values (each raises FieldError) ------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def text(value: Any) -> str | None:
    """Untrusted CRM text, cut to the contract's limit (never rejected for length)."""
    if _blank(value):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldError("not text")
    return str(value).strip()[:TEXT_MAX]


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise FieldError("not a number")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise FieldError("not a number") from None
    if not math.isfinite(number):
        raise FieldError("not a finite number")
    return number


def money(value: Any) -> float | None:
    if _blank(value):
        return None
    number = _number(value)
    if number < 0:
        raise FieldError("negative amount")
    return number


def probability(value: Any) -> float | None:
    """A probability in percent (0-100)."""
    if _blank(value):
        return None
    number = _number(value)
    if not 0 <= number <= 100:
        raise FieldError("probability outside 0-100")
    return number


def currency(value: Any) -> str | None:
    if _blank(value):
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]{3}", value.strip()):
        raise FieldError("not an ISO 4217 code")
    return value.strip().upper()


def close_date(value: Any) -> dt.date | None:
    """A date: ``YYYY-MM-DD``, an ISO timestamp (its UTC date), or epoch milliseconds."""
    if _blank(value):
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return from_epoch_ms(value, "date").date()
        if isinstance(value, str):
            stripped = value.strip()
            if re.fullmatch(r"\d{9,14}", stripped):
                return from_epoch_ms(int(stripped), "date").date()
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", stripped):
                return dt.date.fromisoformat(stripped)
            return from_iso(stripped, "date").astimezone(dt.UTC).date()
    except (PayloadError, ValueError):
        raise FieldError("not a date") from None
    raise FieldError("not a date")


def owner(value: Any) -> str | None:
    if _blank(value):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FieldError("not an id")
    owner_id = str(value).strip()
    if len(owner_id) > ID_MAX or not _ID_OK.match(owner_id):
        raise FieldError("not an id")
    return owner_id


PARSERS: dict[str, Callable[[Any], Any]] = {
    "title": text,
    "value": money,
    "currency": currency,
    "probability": probability,
    "close_date": close_date,
    "owner_id": owner,
    "owner_name": text,
    "company": text,
}

_CREATED_REQUIRED = ("title", "value", "currency", "stage", "probability", "close_date", "owner_id")

KEEP_STAGE: Final = object()  # "the payload does not touch the stage"


def _validated(build: Callable[[], DealEvent]) -> DealEvent:
    try:
        return build()
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise PayloadError("schema_violation", f"{where}: {err['msg']}") from None


def emit_deal(
    ctx: Context,
    out: Normalized,
    *,
    deal: str,
    eid: str,
    at: dt.datetime,
    raw: Mapping[str, Any],
    stage_key: object = KEEP_STAGE,
    outcome: Outcome | None = None,
    reason: Any = None,
    create: bool = False,
) -> None:
    """Turn one source change into at most one deal event.

    ``raw`` maps deal field names to the source's values (parsed here). ``stage_key`` is the
    source's stage id when the change touches the stage. A stage mapped to won/lost (or an
    ``outcome`` from the source's own status) gives ``deal.closed``; ``create`` with every field
    of ``deal.created`` known gives ``deal.created``; anything else gives a partial
    ``deal.updated`` with what is known (the monitor merges partial updates, even for a deal it
    has not seen).
    """
    fields: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            fields[name] = PARSERS[name](value)
        except FieldError:
            out.ignore("invalid_field")
    if stage_key is not KEEP_STAGE:
        target = (
            None if _blank(stage_key) else ctx.stages.lookup(ctx.source, ctx.workspace, stage_key)
        )
        if isinstance(target, Outcome):
            outcome = outcome or target
        elif isinstance(target, Stage):
            fields["stage"] = target
        else:
            out.ignore("unmapped_stage")
    base: dict[str, Any] = {"event_id": eid, "workspace_id": ctx.workspace, "deal_id": deal}
    base["occurred_at"] = at
    if outcome is not None:
        value = fields.get("value")
        closing_reason = _safe_text(reason)
        out.events.append(
            _validated(
                lambda: DealClosed(**base, outcome=outcome, value=value, reason=closing_reason)
            )
        )
        return
    if fields.get("value") is not None and fields.get("currency") is None and ctx.default_currency:
        fields["currency"] = ctx.default_currency
    if create and all(fields.get(name) is not None for name in _CREATED_REQUIRED):
        known = {k: v for k, v in fields.items() if v is not None}
        out.events.append(_validated(lambda: DealCreated(**base, **known)))
        return
    if create:
        fields = {k: v for k, v in fields.items() if v is not None}
    if not fields:
        out.ignore("no_fields")
        return
    out.events.append(_validated(lambda: DealUpdated(**base, changes=DealFields(**fields))))


def _safe_text(value: Any) -> str | None:
    try:
        return text(value)
    except FieldError:
        return None


def emit_deleted(ctx: Context, out: Normalized, *, deal: str, eid: str, at: dt.datetime) -> None:
    out.events.append(
        _validated(
            lambda: DealDeleted(
                event_id=eid, workspace_id=ctx.workspace, deal_id=deal, occurred_at=at
            )
        )
    )


def emit_activity(
    ctx: Context,
    out: Normalized,
    *,
    deal: str,
    eid: str,
    at: dt.datetime,
    activity_type: ActivityType,
    subject: Any = None,
    direction: Direction | None = None,
) -> None:
    title = _safe_text(subject)
    out.events.append(
        _validated(
            lambda: ActivityLogged(
                event_id=eid,
                workspace_id=ctx.workspace,
                deal_id=deal,
                occurred_at=at,
                activity_type=activity_type,
                direction=direction,
                subject=title,
            )
        )
    )
