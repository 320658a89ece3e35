-- Acknowledged and snoozed insights (`vectoros insights ack|snooze`), read by every notifier:
-- an acknowledged insight, or a snoozed one until `snoozed_until`, gets no more notifications
-- (reminders, resolution, held digests) except an escalation. One row per insight; the last
-- command wins. See docs/notifier.md.
CREATE TABLE IF NOT EXISTS insight_acks (
    insight_id      text        PRIMARY KEY,
    state           text        NOT NULL,
    snoozed_until   timestamptz,
    actor           text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT insight_acks_state_check CHECK (state IN ('acknowledged', 'snoozed')),
    CONSTRAINT insight_acks_until_check CHECK ((state = 'snoozed') = (snoozed_until IS NOT NULL))
);
