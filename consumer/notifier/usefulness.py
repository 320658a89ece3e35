"""How useful each rule's notifications are, from what the notifier stores: per rule, how many
insights were notified (at least one ``sent`` row for their raised or escalated step in
``notifications``) and what share of them

- someone acknowledged, snoozed, or marked "not useful" (``insight_acks``: Slack buttons, the
  CLI);
- was followed by activity on the deal within 72 hours of the first notification (an
  ``activity.logged`` or ``email.logged`` event, or a held ``meeting.logged``, in the history
  projection's ``deal_history_events``, by the event's own time; needs ``vectoros history``
  running).

With flood control, an insight that went out inside an alert or a digest (logged under the
message's id) counts too, through ``notify_message_items`` (which insights each message carried).
The feedback the rules need to be tuned (``vectoros report usefulness``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from consumer.notifier.metrics import UsefulnessMetrics
from vectoros.db import PgPool

FOLLOW_UP = dt.timedelta(hours=72)

_QUERY = """
WITH sent AS (
    SELECT insight_id, rule, workspace_id, deal_id, created_at
      FROM notifications
     WHERE status = 'sent' AND lifecycle IN ('raised', 'escalated') AND created_at >= $1
    UNION ALL  -- with flood control: inside an alert or a digest, logged under its message id
    SELECT m.insight_id, m.rule, m.workspace_id, m.deal_id, n.created_at
      FROM notifications AS n
      JOIN notify_message_items AS m ON m.message_id = n.insight_id
     WHERE n.status = 'sent' AND n.lifecycle IN ('alert', 'digest') AND n.created_at >= $1
), notified AS (
    SELECT insight_id, min(rule) AS rule, min(workspace_id) AS workspace_id,
           min(deal_id) AS deal_id, min(created_at) AS first_sent
      FROM sent
     GROUP BY insight_id
)
SELECT n.rule,
       count(*) AS notified,
       count(*) FILTER (WHERE a.state = 'acknowledged') AS acknowledged,
       count(*) FILTER (WHERE a.state = 'snoozed') AS snoozed,
       count(*) FILTER (WHERE a.state = 'not_useful') AS not_useful,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM deal_history_events AS e
            WHERE e.workspace_id = n.workspace_id AND e.deal_id = n.deal_id
              AND e.occurred_at >= n.first_sent AND e.occurred_at < n.first_sent + $2
              AND (e.type IN ('activity.logged', 'email.logged')
                   OR (e.type = 'meeting.logged' AND e.payload->>'status' = 'held'))
       )) AS followed
  FROM notified AS n
  LEFT JOIN insight_acks AS a ON a.insight_id = n.insight_id
 GROUP BY n.rule
 ORDER BY n.rule
"""


@dataclass(frozen=True)
class RuleUsefulness:
    rule: str
    notified: int
    acknowledged: int
    snoozed: int
    not_useful: int = 0
    followed: int = 0  # activity on the deal within 72 h

    def _share(self, count: int) -> float:
        return count / self.notified if self.notified else 0.0

    @property
    def acknowledged_share(self) -> float:
        return self._share(self.acknowledged)

    @property
    def snoozed_share(self) -> float:
        return self._share(self.snoozed)

    @property
    def not_useful_share(self) -> float:
        return self._share(self.not_useful)

    @property
    def followed_share(self) -> float:
        return self._share(self.followed)

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "acknowledged_share": round(self.acknowledged_share, 4),
            "snoozed_share": round(self.snoozed_share, 4),
            "not_useful_share": round(self.not_useful_share, 4),
            "followed_share": round(self.followed_share, 4),
        }


async def usefulness(pool: PgPool, since: dt.datetime) -> list[RuleUsefulness]:
    """Per rule, the insights notified since ``since`` (one by one, or inside a flood-control
    alert or digest)."""
    rows = await pool.fetch(_QUERY, since, FOLLOW_UP)
    return [
        RuleUsefulness(
            r["rule"],
            int(r["notified"]),
            int(r["acknowledged"]),
            int(r["snoozed"]),
            int(r["not_useful"]),
            int(r["followed"]),
        )
        for r in rows
    ]


def publish(metrics: UsefulnessMetrics, rows: list[RuleUsefulness]) -> None:
    """Set the usefulness gauges from a report (rules absent from it are left as they were)."""
    for r in rows:
        metrics.notified.labels(r.rule).set(r.notified)
        for measure, share in (
            ("acknowledged", r.acknowledged_share),
            ("snoozed", r.snoozed_share),
            ("not_useful", r.not_useful_share),
            ("followed", r.followed_share),
        ):
            metrics.share.labels(r.rule, measure).set(share)
