-- The notifier's Slack app mode and acks as events (docs/notifier.md).
-- notify_slack_messages: where each insight's message is in a channel (`ts`, for chat.update
-- when it escalates, resolves or is answered), its deal's thread (`thread_ts`: the deal's first
-- message in that channel) and the last body sent (`body`, to redraw it with the answer). One
-- row per (channel, insight); the first post wins.
CREATE TABLE IF NOT EXISTS notify_slack_messages (
    channel         text        NOT NULL,
    insight_id      text        NOT NULL,
    workspace_id    text        NOT NULL,
    deal_id         text        NOT NULL,
    ts              text        NOT NULL,
    thread_ts       text        NOT NULL,
    body            jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (channel, insight_id)
);
CREATE INDEX IF NOT EXISTS notify_slack_messages_deal
    ON notify_slack_messages (channel, workspace_id, deal_id, created_at);

-- insight_acks also says "not useful" (it holds like an acknowledgement and counts in
-- `vectoros report usefulness`), where the ack came from, and the ack event's id (a replayed
-- event changes nothing).
ALTER TABLE insight_acks DROP CONSTRAINT IF EXISTS insight_acks_state_check;
ALTER TABLE insight_acks ADD CONSTRAINT insight_acks_state_check
    CHECK (state IN ('acknowledged', 'snoozed', 'not_useful'));
ALTER TABLE insight_acks ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'cli';
ALTER TABLE insight_acks ADD COLUMN IF NOT EXISTS ack_id text;
