-- Read API tokens (`vectoros tokens create|list|revoke`, consumer/api/tokens.py). A token reads
-- exactly one workspace. Only its sha256 is stored (tokens are 256-bit random strings, so a
-- fast hash is enough: there is nothing to brute-force); the token itself is shown once, at
-- creation. A revoked token stays listed (who had access, until when) and never authenticates.
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id     text        PRIMARY KEY,         -- public, short: what list and revoke name
    workspace_id text        NOT NULL,
    name         text        NOT NULL,
    token_sha256 text        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    CONSTRAINT api_tokens_sha256_check CHECK (token_sha256 ~ '^[0-9a-f]{64}$')
);

CREATE INDEX IF NOT EXISTS api_tokens_workspace_idx ON api_tokens (workspace_id);

-- The read API's owner filter on open insights (`GET /api/v1/insights?owner=`): by owner id, or
-- by owner name in any case; PostgreSQL combines the two for the OR.
CREATE INDEX IF NOT EXISTS insights_open_by_owner_id
    ON insights (workspace_id, (data->>'owner_id')) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS insights_open_by_owner_name
    ON insights (workspace_id, lower(data->>'owner_name')) WHERE status = 'open';
