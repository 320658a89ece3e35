-- Deal history: the projection `vectoros history` keeps from deal-events (consumer/history),
-- and the deals `vectoros history import` loads from CRM exports. Times in the jsonb columns
-- are integer milliseconds since the epoch (UTC).

-- Every deal event seen, once (replays and redeliveries are no-ops). A deal's row in
-- deal_history is recomputed from all of its events, sorted by (occurred_at, event_id), so the
-- projection does not depend on the order or the number of deliveries.
CREATE TABLE deal_history_events (
    workspace_id  text NOT NULL,
    deal_id       text NOT NULL,
    event_id      text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    type          text NOT NULL,
    payload       jsonb NOT NULL,
    PRIMARY KEY (workspace_id, deal_id, event_id)
);

-- One row per deal: current fields, outcome, and how they got there.
CREATE TABLE deal_history (
    workspace_id        text NOT NULL,
    deal_id             text NOT NULL,
    source              text NOT NULL CHECK (source IN ('events', 'import')),
    title               text,
    value               double precision,
    currency            text,
    stage               text,
    probability         double precision,
    close_date          date,
    owner_id            text,
    owner_name          text,
    company             text,
    created_at          timestamptz,
    updated_at          timestamptz,
    outcome             text CHECK (outcome IN ('won', 'lost')),
    closed_at           timestamptz,
    close_reason        text,
    deleted_at          timestamptz,
    stage_history       jsonb NOT NULL,   -- [{stage, entered_ms, left_ms}]
    activities          jsonb NOT NULL,   -- [{at_ms, type, direction}]
    activity_counts     jsonb NOT NULL,   -- {"email:inbound": 3, "meeting": 1, ...}
    close_date_changes  jsonb NOT NULL,   -- [{at_ms, from, to}] (ISO dates)
    value_changes       jsonb NOT NULL,   -- [{at_ms, from, to}]
    probability_history jsonb NOT NULL,   -- [{at_ms, probability}] (the rep's, 0-100)
    attributes          jsonb NOT NULL,   -- imported columns: {"segment": "SMB", "seats": 40}
    event_count         integer NOT NULL,
    PRIMARY KEY (workspace_id, deal_id)
);

CREATE INDEX deal_history_closed ON deal_history (workspace_id, closed_at) WHERE outcome IS NOT NULL;

-- Learned stage benchmarks: days in stage of every stay that ended (the deal moved on or
-- closed; deleted deals do not count), per workspace and stage. Refreshed by the history service (at start, every
-- VECTOROS_HISTORY_BENCHMARKS_REFRESH_SECONDS) and by `vectoros history benchmarks --refresh`.
CREATE MATERIALIZED VIEW stage_benchmarks AS
SELECT h.workspace_id,
       s.stage,
       count(*)::integer AS samples,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY s.days)  AS p50_days,
       percentile_cont(0.75) WITHIN GROUP (ORDER BY s.days) AS p75_days,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY s.days)  AS p90_days
FROM deal_history h
CROSS JOIN LATERAL (
    SELECT e ->> 'stage' AS stage,
           ((e ->> 'left_ms')::bigint - (e ->> 'entered_ms')::bigint) / 86400000.0 AS days
    FROM jsonb_array_elements(h.stage_history) AS e
    WHERE e ->> 'left_ms' IS NOT NULL
) s
WHERE h.deleted_at IS NULL
GROUP BY h.workspace_id, s.stage;

CREATE UNIQUE INDEX stage_benchmarks_key ON stage_benchmarks (workspace_id, stage);
