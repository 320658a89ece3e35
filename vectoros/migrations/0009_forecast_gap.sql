-- The pipeline_gap insight's lifecycle state (consumer/forecast/gap.py): per workspace and
-- period, the as-of time of the last forecast seen and the open episode, if any. Written by
-- `vectoros forecast run` after the insight event was acknowledged by the broker.
CREATE TABLE forecast_gap_state (
    workspace_id  text NOT NULL,
    period        text NOT NULL,
    last_as_of    timestamptz NOT NULL,
    priority      text CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    raised_at     timestamptz,                -- of the open episode (NULL: none open)
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, period),
    CHECK ((priority IS NULL) = (raised_at IS NULL))
);

-- Whose probabilities of winning a forecast used: 'rep', or 'model v<N>' (the forecast
-- service's forecasts as of now use the current model's scores from deal_scores).
ALTER TABLE forecasts ADD COLUMN probabilities text NOT NULL DEFAULT 'rep';
