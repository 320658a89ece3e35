"""Deal events: the contract between the CRM backend (and the gateway) and the monitor.

Every event on ``deal-events`` is one JSON object, discriminated on ``type``. Schema version 1.
The models are strict on purpose: unknown fields, unknown types, naive datetimes, probabilities
outside 0-100 and negative values are rejected with a message that names the field, so a bad
producer is caught at the edge (and its message lands in the DLQ with that reason).
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from schemas.scores import TopFactor

SCHEMA_VERSION: Literal[1] = 1

Id = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=False)]
Text = Annotated[str, StringConstraints(max_length=2000)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Address = Annotated[
    str,
    StringConstraints(min_length=3, max_length=320, pattern=r"^[^@\s]*@?[^@\s]+\.[^@\s]+$"),
]
"""An email address (``ana@acme.com``) or, where a workspace keeps only domains, a domain
(``acme.com``). Compared case-insensitively by the monitor and the matcher."""
Domain = Annotated[
    str, StringConstraints(min_length=3, max_length=253, pattern=r"^[^@\s]+\.[^@\s]+$")
]
Addresses = Annotated[tuple[Address, ...], Field(max_length=100)]
Domains = Annotated[tuple[Domain, ...], Field(max_length=50)]


class Stage(StrEnum):
    """The open pipeline stages. CRM-specific stages are mapped onto these by the gateway."""

    LEAD = "lead"
    QUALIFIED = "qualified"
    PROPOSAL = "proposal"
    NEGOTIATION = "negotiation"


class ActivityType(StrEnum):
    EMAIL = "email"
    CALL = "call"
    MEETING = "meeting"
    NOTE = "note"
    TASK = "task"


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class MeetingStatus(StrEnum):
    SCHEDULED = "scheduled"
    HELD = "held"
    CANCELLED = "cancelled"
    NO_SHOW = "no-show"


class Outcome(StrEnum):
    WON = "won"
    LOST = "lost"


def _type_is_required(schema: dict[str, Any]) -> None:
    """``type`` has a default for Python callers, but on the wire it is required."""
    if "type" in schema.get("properties", {}):
        required = schema.setdefault("required", [])
        if "type" not in required:
            required.append("type")


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, str_max_length=2000, json_schema_extra=_type_is_required
    )


def _not_bool(value: Any) -> Any:
    """JSON ``true`` equals 1 in Python; the contract's schema_version is an integer."""
    if isinstance(value, bool):
        raise ValueError("schema_version must be the integer 1, not a boolean")
    return value


SchemaVersion = Annotated[Literal[1], BeforeValidator(_not_bool)]


class _EventBase(_Strict):
    schema_version: SchemaVersion = Field(
        default=SCHEMA_VERSION, description="Contract version; only 1 exists."
    )
    event_id: Id = Field(description="Unique per event; used for de-duplication.")
    workspace_id: Id
    deal_id: Id = Field(description="Also the Kafka message key.")
    occurred_at: AwareDatetime = Field(description="RFC 3339 with an offset; naive is rejected.")


class DealFields(_Strict):
    """The fields of a deal. In ``deal.updated`` every one is optional (partial updates)."""

    title: Text | None = None
    value: Money | None = None
    currency: Currency | None = None
    stage: Stage | None = None
    probability: Probability | None = None
    close_date: dt.date | None = None
    owner_id: Id | None = None
    owner_name: Text | None = None
    company: Text | None = None
    contacts: Addresses | None = Field(
        default=None, description="The buyer's contacts' email addresses (additive, optional)."
    )
    account_domains: Domains | None = Field(
        default=None, description="The buyer's email domains (additive, optional)."
    )


class DealCreated(_EventBase):
    type: Literal["deal.created"] = "deal.created"
    title: Text
    value: Money
    currency: Currency
    stage: Stage
    probability: Probability
    close_date: dt.date
    owner_id: Id
    owner_name: Text | None = None
    company: Text | None = None
    contacts: Addresses | None = Field(
        default=None, description="The buyer's contacts' email addresses (additive, optional)."
    )
    account_domains: Domains | None = Field(
        default=None, description="The buyer's email domains (additive, optional)."
    )


class DealUpdated(_EventBase):
    type: Literal["deal.updated"] = "deal.updated"
    changes: DealFields = Field(
        description="Only the fields that changed.", json_schema_extra={"minProperties": 1}
    )
    previous: DealFields | None = Field(
        default=None, description="Optional: the values before the change."
    )

    @model_validator(mode="after")
    def _changes_not_empty(self) -> DealUpdated:
        if not self.changes.model_fields_set:
            raise ValueError("changes must name at least one field")
        return self


class ActivityLogged(_EventBase):
    type: Literal["activity.logged"] = "activity.logged"
    activity_type: ActivityType
    direction: Direction | None = None
    subject: Text | None = None


class EmailLogged(_EventBase):
    """An email on a deal, captured from a mailbox (``vectoros capture``): metadata only, never
    a body. ``occurred_at`` is when it was sent or received."""

    type: Literal["email.logged"] = "email.logged"
    direction: Direction = Field(description="outbound: from the workspace to the buyer.")
    thread_id: Id | None = Field(default=None, description="The provider's thread id.")
    participants: Addresses = Field(
        description="The buyer-side participants (addresses, or domains where the workspace "
        "keeps only domains); the workspace's own people are not listed.",
        json_schema_extra={"minItems": 1},
    )
    subject: Text | None = Field(
        default=None, description="Only when the workspace turned subjects on."
    )

    @model_validator(mode="after")
    def _has_participants(self) -> EmailLogged:
        if not self.participants:
            raise ValueError("participants must name at least one buyer-side participant")
        return self


class MeetingLogged(_EventBase):
    """A meeting on a deal, captured from a calendar: each change of its status is one event
    (the same ``meeting_id``). ``occurred_at`` is when the status was observed."""

    type: Literal["meeting.logged"] = "meeting.logged"
    meeting_id: Id = Field(description="Stable per meeting (the provider's event id).")
    status: MeetingStatus
    start: AwareDatetime
    end: AwareDatetime
    attendees: Addresses = Field(default=(), description="The external (buyer-side) attendees.")

    @model_validator(mode="after")
    def _ends_after_start(self) -> MeetingLogged:
        if self.end < self.start:
            raise ValueError("end must not be before start")
        return self


class DealClosed(_EventBase):
    type: Literal["deal.closed"] = "deal.closed"
    outcome: Outcome
    value: Money | None = None
    reason: Text | None = None


class DealDeleted(_EventBase):
    type: Literal["deal.deleted"] = "deal.deleted"


class DealScored(_EventBase):
    """The model's current score of a deal (``schemas.scores.DealScore``) as an event: written
    by the history service beside each ``deal-scores`` record, on the deal's own partition and
    after the events it reflects, so the monitor folds it into the deal's state like any other
    event (ordered, de-duplicated, checkpointed). ``occurred_at`` is the score's ``as_of``."""

    type: Literal["deal.scored"] = "deal.scored"
    model_version: int = Field(ge=1, description="win_models.version")
    win_probability: float = Field(ge=0, le=1, allow_inf_nan=False)
    top_factors: list[TopFactor] = Field(default_factory=list, max_length=10)
    close_p10: dt.date | None = Field(
        default=None, description="The model's 10th-percentile close date, when it has one."
    )


class Tick(_Strict):
    """Produced by the ticker to every partition (header ``vectoros-type: tick``)."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    type: Literal["tick"] = "tick"
    event_id: Id | None = None
    at: AwareDatetime


DealEvent = (
    DealCreated
    | DealUpdated
    | ActivityLogged
    | DealClosed
    | DealDeleted
    | EmailLogged
    | MeetingLogged
    | DealScored
)
AnyEvent = Annotated[DealEvent | Tick, Field(discriminator="type")]

EVENT_TYPES: tuple[str, ...] = (
    "deal.created",
    "deal.updated",
    "activity.logged",
    "deal.closed",
    "deal.deleted",
    "email.logged",
    "meeting.logged",
    "deal.scored",
    "tick",
)

event_adapter: TypeAdapter[DealEvent | Tick] = TypeAdapter(AnyEvent)

TICK_HEADER = "vectoros-type"
TICK_HEADER_VALUE = b"tick"


def encode_event(event: DealEvent | Tick) -> bytes:
    """The canonical wire form: compact JSON, UTF-8, no ``None`` fields, except in
    ``deal.updated`` changes where an explicit null clears the field."""
    if isinstance(event, DealUpdated):
        data = event.model_dump(mode="json", exclude_none=True)
        data["changes"] = event.changes.model_dump(
            mode="json", include=set(event.changes.model_fields_set)
        )
        return orjson.dumps(data)
    return event.model_dump_json(exclude_none=True).encode()
