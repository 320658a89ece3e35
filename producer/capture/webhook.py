"""The generic JSON webhook source: in-house tools post the emails and meetings they see.

``POST /capture/webhook/<workspace>`` with ``X-Vectoros-Timestamp`` (epoch seconds) and
``X-Vectoros-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``; a signature
more than 5 minutes old, or not matching, is refused (401). The body::

    {"user_id": "u-17",
     "items": [
       {"kind": "email", "id": "m-1", "thread_id": "t-1", "sent_at": "2026-03-02T09:00:00Z",
        "from": "Ana <ana@acme.com>", "to": ["rep@vendor.io"], "cc": [], "subject": "Pricing"},
       {"kind": "meeting", "id": "e-9", "status": "held", "start": "...", "end": "...",
        "attendees": ["ana@acme.com", "rep@vendor.io"], "observed_at": "..."}]}

Other fields (a body, attachments, ...) are ignored: they never leave this module.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from producer.capture.matcher import CapturedEmail, CapturedMeeting
from schemas.events import MeetingStatus

SIGNATURE = "x-vectoros-signature"
TIMESTAMP = "x-vectoros-timestamp"
MAX_AGE_S = 300

Str = Annotated[str, Field(min_length=1, max_length=400)]


class SignatureError(Exception):
    """``reason``: missing_credentials, stale_timestamp or bad_signature."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    secret: str, signature: str | None, timestamp: str | None, body: bytes, now: float
) -> None:
    if not signature or not timestamp:
        raise SignatureError("missing_credentials")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > MAX_AGE_S:
        raise SignatureError("stale_timestamp")
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.strip().encode()):
        raise SignatureError("bad_signature")


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class EmailItem(_Item):
    kind: Literal["email"]
    id: Str
    thread_id: Str | None = None
    sent_at: AwareDatetime
    from_: Str = Field(alias="from")
    to: list[Str] = Field(default_factory=list, max_length=500)
    cc: list[Str] = Field(default_factory=list, max_length=500)
    subject: Annotated[str, Field(max_length=2000)] | None = None


class MeetingItem(_Item):
    kind: Literal["meeting"]
    id: Str
    status: MeetingStatus
    start: AwareDatetime
    end: AwareDatetime
    attendees: list[Str] = Field(default_factory=list, max_length=500)
    observed_at: AwareDatetime | None = None


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    user_id: Str
    items: list[Annotated[EmailItem | MeetingItem, Field(discriminator="kind")]] = Field(
        max_length=1000
    )


def item_key(item: EmailItem | MeetingItem) -> str:
    """The item's id in the captured log: a meeting's status change is a new item."""
    if isinstance(item, EmailItem):
        return f"email:{item.id}"
    return f"meeting:{item.id}:{item.status.value}:{item.start.isoformat()}"


def captured(
    workspace_id: str, item: EmailItem | MeetingItem, received: dt.datetime
) -> CapturedEmail | CapturedMeeting:
    if isinstance(item, EmailItem):
        return CapturedEmail(
            workspace_id=workspace_id,
            message_id=item.id,
            sent_at=item.sent_at,
            sender=item.from_,
            recipients=(*item.to, *item.cc),
            thread_id=item.thread_id,
            subject=item.subject,
        )
    return CapturedMeeting(
        workspace_id=workspace_id,
        meeting_id=item.id,
        status=item.status,
        start=item.start,
        end=max(item.end, item.start),
        attendees=tuple(item.attendees),
        observed_at=item.observed_at or received,
    )
