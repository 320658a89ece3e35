"""Acknowledgements of insights, on ``insight-acks`` (keyed by ``insight_id``). Schema version 1.

Published by whoever a person answered: the gateway (a Slack button, ``source`` slack; a signed
link in an email, ``source`` email), the dashboard's buttons (the read API, ``source``
dashboard) and ``vectoros insights ack|snooze`` (``source`` cli). Every
notifier group stores them in PostgreSQL (``insight_acks``), which every notifier instance and the
read side read. ``ack_id`` is unique per press (a retried publish carries the same id).

- ``acknowledged``: nothing more is sent about the insight, except an escalation.
- ``snoozed``: nothing is sent until ``snoozed_until`` (required, and only here), or it escalates.
- ``not_useful``: held like an acknowledgement, and counted against the rule in
  ``vectoros report usefulness``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class AckState(StrEnum):
    ACKNOWLEDGED = "acknowledged"
    SNOOZED = "snoozed"
    NOT_USEFUL = "not_useful"


class AckSource(StrEnum):
    SLACK = "slack"
    EMAIL = "email"
    CLI = "cli"
    DASHBOARD = "dashboard"


class InsightAck(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    type: Literal["insight.acked"] = "insight.acked"
    ack_id: Id = Field(description="Unique per answer; a replay of the same event is a no-op.")
    insight_id: Id = Field(description="Also the Kafka message key.")
    state: AckState
    snoozed_until: AwareDatetime | None = Field(
        default=None, description="Required for snoozed, absent otherwise."
    )
    actor: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="Who answered: a Slack user id, an email owner id, a CLI user."
    )
    source: AckSource
    at: AwareDatetime = Field(description="When the person answered.")

    @model_validator(mode="after")
    def _until_only_when_snoozed(self) -> InsightAck:
        if (self.state == AckState.SNOOZED) != (self.snoozed_until is not None):
            raise ValueError("snoozed_until is required for snoozed and only for snoozed")
        return self
