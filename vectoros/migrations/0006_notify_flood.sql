-- The notifier's flood control (consumer/notifier/flood.py, outbox.py), when
-- VECTOROS_NOTIFY_FLOOD_CONTROL=true.
--
-- notify_flood_state: one row per notifier consumer group: the flood controller's whole state
--   (held insights, open groups, cooldowns, flapping and burst counters, the insight events
--   already taken) as JSON. Saved in the same transaction as the messages it let out, before
--   the batch's offsets are committed: a crash after it replays the batch, which the state
--   recognises (the events are in its "seen" list) and ignores.
-- notify_outbox: the messages flood control let out and that are not delivered yet, with
--   deterministic ids. A notifier that starts delivers what is left here first; the notification
--   log (notifications, keyed by message_id) makes that redelivery a no-op for what went out.
CREATE TABLE IF NOT EXISTS notify_flood_state (
    consumer_group text        PRIMARY KEY,
    state          jsonb       NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS notify_outbox (
    message_id     text        PRIMARY KEY,
    consumer_group text        NOT NULL,
    seq            bigserial   NOT NULL,
    message        jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS notify_outbox_group_idx ON notify_outbox (consumer_group, seq);
