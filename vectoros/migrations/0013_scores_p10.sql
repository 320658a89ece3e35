-- The close-date P10 of each deal's latest score (it was only on deal-scores), and what the
-- history service last published for the deal as a deal.scored event on deal-events (what the
-- monitor holds): a new score is published only when it differs from that by enough to matter
-- (VECTOROS_HISTORY_SCORE_PUBLISH_POINTS / _DAYS, consumer.intelligence.scoring.worth_publishing).
ALTER TABLE deal_scores
    ADD COLUMN IF NOT EXISTS close_p10 date,
    ADD COLUMN IF NOT EXISTS published_as_of timestamptz,
    ADD COLUMN IF NOT EXISTS published_model_version integer,
    ADD COLUMN IF NOT EXISTS published_win_probability double precision,
    ADD COLUMN IF NOT EXISTS published_close_p10 date;

-- Until now every score whose probability or model changed was published: the stored one was.
UPDATE deal_scores
SET published_as_of = as_of, published_model_version = model_version,
    published_win_probability = win_probability
WHERE published_as_of IS NULL;
