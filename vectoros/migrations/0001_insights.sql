-- Insights: current state per insight (insights) and the append-only history (insight_events).
-- Written by the sink (consumer/sink/store.py); see that module for the merge rules.

-- Current state, one row per insight_id (one episode of one rule on one deal).
--
-- Two independent "versions" decide which event a column comes from, so that replays,
-- redeliveries and late events change nothing (every update is a max, hence idempotent and
-- order-independent):
--   * status, lifecycle, detected_at, resolved_at come from the event with the greatest
--     (state_rank, detected_at), state_rank = raised 0 < escalated 1 < resolved 2. A resolved
--     insight therefore never goes back to open.
--   * the content (priority, text, actions, metrics, data, confidence, source and the rule_*
--     columns) comes from the event with the greatest (content_rank, content_detected_at),
--     content_rank = resolved 0 < raised 1 < escalated 2: an escalation replaces the text and
--     priority; a resolution keeps the text of the risk it resolves (its own text is only used
--     when it is the only event known).
-- title/description/actions/source are what to show. rule_title/rule_description always keep
-- the deterministic rule text, so that a later "enriched" event (model-written text for the
-- current content version) can replace title/description/actions/source and the rule text
-- stays available as the fallback.
CREATE TABLE insights (
    insight_id          text PRIMARY KEY,
    workspace_id        text NOT NULL,
    deal_id             text NOT NULL,
    rule                text NOT NULL,
    type                text NOT NULL,
    status              text NOT NULL CHECK (status IN ('open', 'resolved')),
    lifecycle           text NOT NULL,
    priority            text NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    priority_rank       smallint NOT NULL,   -- low 0 .. critical 3, for ORDER BY priority
    title               text NOT NULL,
    description         text NOT NULL,
    actions             jsonb NOT NULL,
    key_metrics         jsonb NOT NULL,
    data                jsonb NOT NULL,
    confidence          double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    source              text NOT NULL,
    rule_title          text NOT NULL,
    rule_description    text NOT NULL,
    raised_at           timestamptz NOT NULL,
    detected_at         timestamptz NOT NULL,  -- partition clock of the last status change
    resolved_at         timestamptz,
    state_rank          smallint NOT NULL,
    content_rank        smallint NOT NULL,
    content_detected_at timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);

-- "Open insights of a workspace, most urgent first", optionally filtered by priority.
CREATE INDEX insights_open_by_priority
    ON insights (workspace_id, priority_rank DESC, detected_at DESC)
    WHERE status = 'open';
-- "Open insights of a workspace for one rule".
CREATE INDEX insights_open_by_rule
    ON insights (workspace_id, rule, priority_rank DESC)
    WHERE status = 'open';
-- Every insight (open or not) of one deal.
CREATE INDEX insights_by_deal ON insights (workspace_id, deal_id);

-- History: one row per lifecycle step of an insight. The key includes detected_at (the
-- deterministic partition clock of the step) so that an insight escalated twice, or enriched
-- after its raise and again after its escalation, keeps every step, while a redelivered or
-- replayed event (same insight_id, lifecycle and detected_at) inserts nothing.
CREATE TABLE insight_events (
    insight_id      text NOT NULL,
    lifecycle       text NOT NULL,
    detected_at     timestamptz NOT NULL,
    workspace_id    text NOT NULL,
    deal_id         text NOT NULL,
    rule            text NOT NULL,
    priority        text NOT NULL,
    source          text NOT NULL,
    payload         jsonb NOT NULL,        -- the whole insight event
    kafka_topic     text NOT NULL,         -- where it was first read from
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (insight_id, lifecycle, detected_at)
);

CREATE INDEX insight_events_by_deal ON insight_events (workspace_id, deal_id, detected_at);
