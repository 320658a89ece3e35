-- Win-probability models (`vectoros train`, consumer/learn): every trained version with its
-- metrics on the held-out period, and which one is current. A new version becomes current only
-- if it beats the current one on the same held-out snapshots (consumer.intelligence.evaluation.better).
CREATE TABLE win_models (
    version            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope              text NOT NULL,            -- 'pooled' (every workspace) or a workspace id
    trained_at         timestamptz NOT NULL DEFAULT now(),
    data_until         timestamptz NOT NULL,     -- the latest time in the history used
    holdout_from       timestamptz NOT NULL,     -- held-out period: [holdout_from, data_until]
    train_snapshots    integer NOT NULL,
    holdout_snapshots  integer NOT NULL,
    closed_deals       integer NOT NULL,
    features           jsonb NOT NULL,           -- feature names, in order
    metrics            jsonb NOT NULL,           -- held-out: auc, brier, log_loss, ece, n
    baselines          jsonb NOT NULL,           -- same held-out: rep, stage, and the current model
    current            boolean NOT NULL DEFAULT false,
    promoted_at        timestamptz,
    model              bytea NOT NULL
);

CREATE UNIQUE INDEX win_models_one_current ON win_models (scope) WHERE current;

-- The current model's latest score of each open deal (the history service, after each event
-- batch; also published on deal-scores). A score never replaces one of a later deal state.
CREATE TABLE deal_scores (
    workspace_id     text NOT NULL,
    deal_id          text NOT NULL,
    as_of            timestamptz NOT NULL,   -- the deal's latest event the score reflects
    model_version    integer NOT NULL,
    win_probability  double precision NOT NULL CHECK (win_probability BETWEEN 0 AND 1),
    rep_probability  double precision,
    stage            text,
    top_factors      jsonb NOT NULL,         -- [{feature, effect}]
    PRIMARY KEY (workspace_id, deal_id)
);
