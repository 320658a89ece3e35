-- The enricher's log, its daily budget and its liveness (consumer/enricher/store.py).

-- One row per enriched lifecycle step: (insight_id, lifecycle, detected_at) of the raised or
-- escalated event whose text the model rewrites. The enricher claims the row (INSERT ... ON
-- CONFLICT DO NOTHING) before it calls the model, so no insight is sent to the model twice,
-- across restarts, replays and rebalances.
--
-- status:   pending  -> claimed, the call is in flight (owner = the enricher process)
--           enriched -> the model's text passed validation; result holds it
--                       ({title, description, actions, source}); published_at is set once the
--                       enriched event is acknowledged by the broker (a row enriched but not
--                       published is published from result on the next read, without a call)
--           fallback -> no model text: fallback_reason says why (budget, failed, invalid_output,
--                       refused, ...); the rule text stays. Final: never retried.
-- The notifier reads this table to know whether to wait for the model's text (see
-- consumer/notifier/service.py) and takes the text from result.
CREATE TABLE IF NOT EXISTS enrichments (
    insight_id                  text        NOT NULL,
    lifecycle                   text        NOT NULL,
    detected_at                 timestamptz NOT NULL,
    workspace_id                text        NOT NULL,
    deal_id                     text        NOT NULL,
    rule                        text        NOT NULL,
    priority                    text        NOT NULL,
    status                      text        NOT NULL DEFAULT 'pending',
    owner                       text        NOT NULL,
    model                       text,
    fallback_reason             text,
    result                      jsonb,
    attempts                    integer     NOT NULL DEFAULT 0,
    input_tokens                integer     NOT NULL DEFAULT 0,
    output_tokens               integer     NOT NULL DEFAULT 0,
    cache_read_input_tokens     integer     NOT NULL DEFAULT 0,
    cache_creation_input_tokens integer     NOT NULL DEFAULT 0,
    cost_usd                    double precision NOT NULL DEFAULT 0,
    claimed_at                  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at                 timestamptz,
    published_at                timestamptz,
    CONSTRAINT enrichments_pkey PRIMARY KEY (insight_id, lifecycle, detected_at),
    CONSTRAINT enrichments_status_check CHECK (status IN ('pending', 'enriched', 'fallback')),
    CONSTRAINT enrichments_result_check CHECK ((status = 'enriched') = (result IS NOT NULL))
);

CREATE INDEX IF NOT EXISTS enrichments_deal_idx ON enrichments (workspace_id, deal_id);

-- Model calls and tokens per workspace and UTC day. A call is reserved (calls + 1, only while
-- both are under the limits) before it is made; its tokens are added afterwards.
CREATE TABLE IF NOT EXISTS enrichment_budget (
    workspace_id text    NOT NULL,
    day          date    NOT NULL,
    calls        integer NOT NULL DEFAULT 0,
    tokens       bigint  NOT NULL DEFAULT 0,
    CONSTRAINT enrichment_budget_pkey PRIMARY KEY (workspace_id, day)
);

-- Running enrichers announce themselves here: a heartbeat every few seconds moves expires_at
-- a few heartbeats ahead; a clean stop deletes the row. The notifier waits for enrichment only
-- while one has not expired, and only for insights at or above its min_priority.
CREATE TABLE IF NOT EXISTS enricher_instances (
    instance_id  text        PRIMARY KEY,
    min_priority text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at   timestamptz NOT NULL
);
