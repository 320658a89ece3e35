-- The model-based rules run in the history service, where the scores are made
-- (consumer/history/model_rules.py, VECTOROS_HISTORY_MODEL_RULES): per deal, the latest score as
-- the rules read it (with the daily highs of win_probability_drop's window) and the deal's open
-- model insights, updated in the transaction that adds the insights they produce to the outbox.
CREATE TABLE IF NOT EXISTS model_watch (
    workspace_id  text NOT NULL,
    deal_id       text NOT NULL,
    state         jsonb NOT NULL,            -- consumer.history.model_rules.to_json
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, deal_id)
);

-- Insight events the history service produced and has not yet seen published (a transactional
-- outbox): written with the watch they came from, sent with each batch's outputs until the
-- batch after them is handled (its predecessor was then published and committed). After a
-- crash they are sent again with the first batch handled: at least once, as the monitor's.
CREATE TABLE IF NOT EXISTS model_insight_outbox (
    seq         bigserial PRIMARY KEY,
    deal_id     text NOT NULL,               -- the Kafka message key
    value       bytea NOT NULL,              -- the insight event's JSON
    created_at  timestamptz NOT NULL DEFAULT now()
);
