"""``vectoros train`` and ``vectoros evaluate``: the learned models, trained on the history in
PostgreSQL and versioned there."""
