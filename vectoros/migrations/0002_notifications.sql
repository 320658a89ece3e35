-- The notifier's notification log: one row per (insight lifecycle step, destination).
--
-- The primary key is the dedupe key: a notifier claims a row (INSERT ... ON CONFLICT DO NOTHING)
-- before it sends and marks it 'sent' or 'failed' afterwards, so an insight lifecycle step is
-- never delivered twice to one destination, also across restarts and replays.
-- destination_key is sha256(type || '\n' || url) in hex: never the URL, which is a secret.
--
-- status:   pending -> sent | failed (final; a 'failed' row is not retried automatically)
-- in_flight: an HTTP attempt has started and its outcome is not recorded yet. A pending row
--            that is in flight for longer than the attempt deadline (+ grace) belongs to a
--            notifier that died mid-request: see consumer/notifier/log.py for what happens then.
-- owner:    the notifier process (random id per process) that currently works on the row.
CREATE TABLE IF NOT EXISTS notifications (
    insight_id         text        NOT NULL,
    lifecycle          text        NOT NULL,
    destination_key    text        NOT NULL,
    destination_type   text        NOT NULL,
    destination_label  text        NOT NULL,
    workspace_id       text        NOT NULL,
    deal_id            text        NOT NULL,
    rule               text        NOT NULL,
    priority           text        NOT NULL,
    status             text        NOT NULL DEFAULT 'pending',
    attempts           integer     NOT NULL DEFAULT 0,
    in_flight          boolean     NOT NULL DEFAULT false,
    owner              text        NOT NULL,
    failure_kind       text,
    last_status_code   integer,
    last_error         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    attempt_started_at timestamptz,
    sent_at            timestamptz,
    CONSTRAINT notifications_pkey PRIMARY KEY (insight_id, lifecycle, destination_key),
    CONSTRAINT notifications_status_check CHECK (status IN ('pending', 'sent', 'failed')),
    CONSTRAINT notifications_destination_key_check CHECK (destination_key ~ '^[0-9a-f]{64}$'),
    CONSTRAINT notifications_attempts_check CHECK (attempts >= 0)
);

-- Operators look for what did not go out.
CREATE INDEX IF NOT EXISTS notifications_unsent_idx
    ON notifications (updated_at) WHERE status <> 'sent';

CREATE INDEX IF NOT EXISTS notifications_deal_idx
    ON notifications (workspace_id, deal_id);
