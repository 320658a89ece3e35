"""The history service: every deal's history in PostgreSQL (``deal_history``), kept from
``deal-events`` idempotently, and loaded from CRM exports (``vectoros history import``); the
learned stage benchmarks (``stage_benchmarks``) it refreshes; the win-probability model
versions (``win_models``) ``vectoros train`` stores and promotes."""
