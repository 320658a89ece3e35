"""The learning core (pure: no I/O, no clock, no logging): a deal's history folded from its
events, point-in-time snapshots and their features, the win-probability and close-date models,
the metrics they are judged by, and a known-truth history generator to evaluate them on.

The service that reads and writes PostgreSQL is ``consumer.history``: the projection, the CSV
import, the stage benchmarks, and the model versions (``vectoros train``).
"""
