"""Benchmarks of the VectorOS Deal Monitor: ``python -m bench`` (or ``make bench``).

One embedded Tansu broker and one embedded PostgreSQL per session; synthetic data is generated
once (as encoded bytes, no pydantic on the way) and cached under ``.bench-cache/``; every
scenario runs several times and the table shows the median with min and max. See
``docs/benchmarks.md`` for what each scenario measures and how.
"""
