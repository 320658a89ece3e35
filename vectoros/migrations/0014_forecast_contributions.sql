-- Each open deal's part in the latest workspace-level forecast of each period (consumer/forecast):
-- the share of the simulations in which it is won and closes inside the period (p_land) and
-- p_land x its value (expected), from the same draws as the forecast. A forecast with a newer
-- as-of replaces the period's rows, in the transaction that stores its forecasts row; one with an
-- older as-of changes nothing. Owner-level forecasts store none.
CREATE TABLE IF NOT EXISTS forecast_contributions (
    workspace_id  text NOT NULL,
    period        text NOT NULL,             -- '2026-Q1', '2026-12'
    deal_id       text NOT NULL,
    as_of         timestamptz NOT NULL,      -- the forecast's (forecasts.as_of, scope 'workspace')
    p_land        double precision NOT NULL CHECK (p_land BETWEEN 0 AND 1),
    expected      double precision NOT NULL,
    PRIMARY KEY (workspace_id, period, deal_id)
);

-- the deal drawer of the read API: every period's contribution of one deal
CREATE INDEX IF NOT EXISTS forecast_contributions_deal
    ON forecast_contributions (workspace_id, deal_id);
