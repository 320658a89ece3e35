-- Revenue forecasts (`vectoros forecast run`, consumer/forecast): one row per workspace, scope,
-- period and as-of time; running the same forecast again replaces its row.
CREATE TABLE forecasts (
    workspace_id       text NOT NULL,
    scope              text NOT NULL,             -- 'workspace' (owners later: 'owner:<id>')
    period             text NOT NULL,             -- '2026-Q1', '2026-12'
    as_of              timestamptz NOT NULL,      -- only what was known before it was used
    period_start       timestamptz NOT NULL,
    period_end         timestamptz NOT NULL,      -- exclusive
    computed_at        timestamptz NOT NULL DEFAULT now(),
    simulations        integer NOT NULL,
    seed               bigint,
    open_deals         integer NOT NULL,
    won                double precision NOT NULL, -- already won in the period before as_of
    p10                double precision NOT NULL,
    p50                double precision NOT NULL,
    p90                double precision NOT NULL,
    expected           double precision NOT NULL,
    weighted_pipeline  double precision NOT NULL,
    commit             double precision NOT NULL,
    best_case          double precision NOT NULL,
    pipeline           double precision NOT NULL,
    target             double precision,
    coverage           double precision,
    gap                double precision,
    p_reach_target     double precision CHECK (p_reach_target BETWEEN 0 AND 1),
    PRIMARY KEY (workspace_id, scope, period, as_of)
);
