"""How useful each rule's notifications are, from what the notifier stores: per rule, how many
insights were notified (at least one ``sent`` row in ``notifications``) and what share of them
someone acknowledged or snoozed (``insight_acks``). The feedback the rules need to be tuned
(``vectoros report usefulness``).

Not measured yet: the share marked "not useful" (needs the Slack app's button) and the share
followed by a deal activity within 72 hours (needs deal activity in PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from vectoros.db import PgPool

_QUERY = """
WITH notified AS (
    SELECT insight_id, min(rule) AS rule
      FROM notifications
     WHERE status = 'sent' AND lifecycle IN ('raised', 'escalated') AND created_at >= $1
     GROUP BY insight_id
)
SELECT n.rule,
       count(*) AS notified,
       count(*) FILTER (WHERE a.state = 'acknowledged') AS acknowledged,
       count(*) FILTER (WHERE a.state = 'snoozed') AS snoozed
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

    @property
    def acknowledged_share(self) -> float:
        return self.acknowledged / self.notified if self.notified else 0.0

    @property
    def snoozed_share(self) -> float:
        return self.snoozed / self.notified if self.notified else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "acknowledged_share": round(self.acknowledged_share, 4),
            "snoozed_share": round(self.snoozed_share, 4),
        }


async def usefulness(pool: PgPool, since: dt.datetime) -> list[RuleUsefulness]:
    """Per rule, the insights notified since ``since`` (one-by-one notifications; with flood
    control, digests are logged under the message id and counted from their single alerts)."""
    rows = await pool.fetch(_QUERY, since)
    return [
        RuleUsefulness(r["rule"], int(r["notified"]), int(r["acknowledged"]), int(r["snoozed"]))
        for r in rows
    ]
