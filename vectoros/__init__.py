"""VectorOS Deal Monitor: shared plumbing (settings, errors, Kafka helpers, CLI)."""

__version__ = "0.1.0"
