"""Routing: which destinations an insight goes to, from a YAML policy per workspace. Pure
(the file is read once at start by :func:`load_policy`).

``VECTOROS_NOTIFY_POLICY_FILE`` (unset: every insight goes to every destination)::

    default:                      # workspaces without a section of their own
      - rules: [high_value_at_risk]
        value_above: 50000
        to: [webhook:0]           # e.g. the SMS gateway's webhook
      - min_priority: critical
        to: [console]
      - min_priority: high
        to: [slack:0]
    workspaces:
      ws-acme:
        - min_priority: high
          stages: [negotiation, proposal]
          to: [slack:1]
          stop: true              # later routes are not looked at for what matched here

    quiet_hours:                  # per destination, in its time zone
      slack:0: {start: "22:00", end: "07:00", tz: Europe/Paris}
      email:*: {start: "21:00", end: "08:00"}   # each person's, in their directory time zone

A route with ``urgent: true`` goes through quiet hours; anything else for a destination in its
quiet hours is held (flood control) and sent when they end.

A route matches when every condition it names holds: ``rules`` (any of), ``min_priority``,
``value_above`` (the deal's value strictly greater; a deal without a value never matches),
``owners`` (owner ids, any of), ``stages`` (any of). Every matching route adds its ``to``
destinations, in order, until one with ``stop: true`` matched. An insight no route matches is
not sent (metric ``skipped{reason="unrouted"}``).

Destinations are named by kind and position in their setting: ``slack:0`` is the first URL of
``VECTOROS_SLACK_WEBHOOK_URLS``, ``webhook:1`` the second of ``VECTOROS_WEBHOOK_URLS``,
``console`` the console; a name that is not configured is an error at start.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Protocol

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas.events import Stage
from schemas.insights import InsightEvent, Priority, RuleName

PERSONAL_KINDS = frozenset({"email", "sms"})  # destinations of one person (directory)


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: frozenset[RuleName] | None = None
    min_priority: Priority | None = None
    value_above: float | None = None
    owners: frozenset[str] | None = None
    stages: frozenset[Stage] | None = None
    to: Annotated[tuple[str, ...], Field(min_length=1)]
    stop: bool = False
    urgent: bool = False  # sent through its destinations' quiet hours

    def matches(self, insight: InsightEvent) -> bool:
        data = insight.data
        if self.rules is not None and insight.rule not in self.rules:
            return False
        if self.min_priority is not None and insight.priority.rank < self.min_priority.rank:
            return False
        if self.value_above is not None and (
            data.deal_value is None or not data.deal_value > self.value_above
        ):
            return False
        if self.owners is not None and data.owner_id not in self.owners:
            return False
        return self.stages is None or (data.stage is not None and data.stage.value in self.stages)


class QuietHours(BaseModel):
    """Local times in ``tz`` between which a destination gets nothing but urgent insights
    (``start`` after ``end``: over midnight, e.g. 22:00 to 07:00). Without ``tz`` (only for a
    person's destinations: ``email:*``, ``sms:*``, ``email:<owner id>``, ...) the time zone is
    the person's, from the owner directory (UTC when it has none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: dt.time
    end: dt.time
    tz: str | None = None

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    def until(self, now: float) -> float | None:
        """When the quiet hours that ``now`` (unix seconds) falls in end; None outside them."""
        zone = zoneinfo.ZoneInfo(self.tz or "UTC")
        local = dt.datetime.fromtimestamp(now, zone)
        t = local.time().replace(tzinfo=None)
        day = local.date()
        if self.start <= self.end:
            if not self.start <= t < self.end:
                return None
        elif t < self.end:
            pass  # after midnight: ends today
        elif t >= self.start:
            day += dt.timedelta(days=1)
        else:
            return None
        return dt.datetime.combine(day, self.end, tzinfo=zone).timestamp()


class Hold(Protocol):
    def until(self, now: float) -> float | None: ...


@dataclass(frozen=True)
class DailyDigest:
    """Held until the next ``at`` (local time in ``tz``): what goes into the daily digest."""

    at: dt.time
    tz: str

    def until(self, now: float) -> float | None:
        zone = zoneinfo.ZoneInfo(self.tz)
        local = dt.datetime.fromtimestamp(now, zone)
        today = dt.datetime.combine(local.date(), self.at, tzinfo=zone).timestamp()
        if today >= now:
            return today
        return dt.datetime.combine(
            local.date() + dt.timedelta(days=1), self.at, tzinfo=zone
        ).timestamp()


@dataclass(frozen=True)
class Holds:
    """Several holds on one destination: held until the latest of them ends."""

    parts: tuple[Hold, ...]

    def until(self, now: float) -> float | None:
        ends = [u for part in self.parts if (u := part.until(now)) is not None]
        return max(ends) if ends else None


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: tuple[Route, ...] = ()
    workspaces: dict[str, tuple[Route, ...]] = Field(default_factory=dict)
    quiet_hours: dict[str, QuietHours] = Field(default_factory=dict)  # by destination name

    @model_validator(mode="after")
    def _zones(self) -> Policy:
        for name, quiet in self.quiet_hours.items():
            if quiet.tz is None and name.partition(":")[0] not in PERSONAL_KINDS:
                raise ValueError(
                    f"quiet_hours {name}: tz is required (only a person's email:/sms: "
                    "destinations take the time zone from the owner directory)"
                )
        return self

    def quiet_for(self, *names: str) -> QuietHours | None:
        """The quiet hours of the first of ``names`` that has some; then ``<kind>:*``."""
        for name in names:
            if name in self.quiet_hours:
                return self.quiet_hours[name]
        for name in names:
            wildcard = self.quiet_hours.get(f"{name.partition(':')[0]}:*")
            if wildcard is not None:
                return wildcard
        return None

    def routes(self, workspace_id: str) -> tuple[Route, ...]:
        return self.workspaces.get(workspace_id, self.default)

    def deliveries(self, insight: InsightEvent) -> dict[str, bool]:
        """The destination names ``insight`` goes to, in the policy's order, each with whether
        it is urgent there (a matching route marked ``urgent`` sends it)."""
        out: dict[str, bool] = {}
        for route in self.routes(insight.workspace_id):
            if route.matches(insight):
                for name in route.to:
                    out[name] = out.get(name, False) or route.urgent
                if route.stop:
                    break
        return out

    def route(self, insight: InsightEvent) -> tuple[str, ...]:
        """The destination names ``insight`` goes to, each once, in the policy's order."""
        return tuple(self.deliveries(insight))

    def names(self) -> set[str]:
        every = [*self.default, *(r for rs in self.workspaces.values() for r in rs)]
        return {name for route in every for name in route.to} | set(self.quiet_hours)

    def check(self, known: Iterable[str]) -> None:
        """Raise ValueError naming every destination the policy uses that is not configured."""
        unknown = sorted(self.names() - set(known))
        if unknown:
            raise ValueError(
                f"the notification policy names destinations that are not configured: "
                f"{', '.join(unknown)} (configured: {', '.join(sorted(known)) or 'none'})"
            )


def parse_policy(text: str) -> Policy:
    raw = yaml.safe_load(text)
    return Policy.model_validate(raw or {})


def load_policy(path: Path) -> Policy:
    """The policy in ``path``; ValueError with the file's name and the first problem."""
    try:
        return parse_policy(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the notification policy {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"the notification policy {path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(
            f"the notification policy {path}: {where}: {first['msg']} "
            f"({exc.error_count()} problem(s))"
        ) from None
