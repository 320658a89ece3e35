"""The one exception tree of VectorOS. Every error we raise on purpose is a ``VectorOSError``.

``retriable`` tells the caller whether trying the same thing again later can succeed
(aiokafka's pattern): a broker that is not up yet is retriable, a bad configuration is not.

::

    VectorOSError (retriable=False)
    ├── ConfigError                 bad settings or rules file; fix and restart
    │   └── PortInUse               a listening port is taken by another process
    ├── EventRejected               one input message is unusable; it goes to the DLQ
    │                               (.reason is a short, bounded code used as a metric label)
    ├── InfraError                  something we depend on misbehaved
    │   ├── BrokerUnavailable       (retriable=True) Kafka-protocol broker not reachable
    │   ├── DatabaseUnavailable     (retriable=True) PostgreSQL not reachable
    │   └── EmbeddedStartError      the embedded broker or database did not start
    └── DeliveryError               a notification could not be delivered
        ├── TransientDeliveryError  (retriable=True) 5xx, 429, network
        └── PermanentDeliveryError  other 4xx: recorded, never retried
"""

from __future__ import annotations


class VectorOSError(Exception):
    """Root of every error VectorOS raises on purpose."""

    retriable: bool = False


class ConfigError(VectorOSError):
    """Settings or a rules file are invalid. Not retriable: fix the configuration."""


class PortInUse(ConfigError):
    """The port a server should listen on is taken (``vectoros run``/``demo`` then take another)."""


class EventRejected(VectorOSError):
    """An input message cannot be processed; it belongs in the DLQ.

    ``reason`` is one of a small fixed set of codes (bounded: it is a metric label);
    ``detail`` is the human-readable explanation that goes into the DLQ headers.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class InfraError(VectorOSError):
    """A dependency (broker, database, embedded process) failed."""


class BrokerUnavailable(InfraError):
    retriable = True


class DatabaseUnavailable(InfraError):
    retriable = True


class EmbeddedStartError(InfraError):
    """The embedded broker or PostgreSQL could not be started."""


class DeliveryError(VectorOSError):
    """A notification could not be delivered."""


class TransientDeliveryError(DeliveryError):
    retriable = True


class PermanentDeliveryError(DeliveryError):
    retriable = False
