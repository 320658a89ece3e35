"""Dead-letter records: the original bytes with headers that say why and where they came from."""

from __future__ import annotations

from vectoros.batch_produce import OutRecord

DLQ_REASON = "vectoros-dlq-reason"
DLQ_DETAIL = "vectoros-dlq-detail"
SOURCE_TOPIC = "vectoros-source-topic"
SOURCE_PARTITION = "vectoros-source-partition"
SOURCE_OFFSET = "vectoros-source-offset"
ORIGINAL_SIZE = "vectoros-original-size"
ORIGINAL_KEY_SIZE = "vectoros-original-key-size"

MAX_DETAIL_BYTES = 1024
MAX_KEY_BYTES = 1024  # a valid key is a deal_id (at most 200 characters)


def dlq_record(
    *,
    dlq_topic: str,
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    max_value_bytes: int,
) -> OutRecord:
    """The DLQ copy of a rejected message. An oversized value is truncated to
    ``max_value_bytes`` and an oversized key to ``MAX_KEY_BYTES`` (their original sizes are in
    headers) so the DLQ write itself cannot fail."""
    body = value or b""
    headers = [
        (DLQ_REASON, reason.encode()),
        (DLQ_DETAIL, detail.encode("utf-8", "replace")[:MAX_DETAIL_BYTES]),
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
    ]
    if len(body) > max_value_bytes:
        headers.append((ORIGINAL_SIZE, str(len(body)).encode()))
        body = body[:max_value_bytes]
    if key is not None and len(key) > MAX_KEY_BYTES:
        headers.append((ORIGINAL_KEY_SIZE, str(len(key)).encode()))
        key = key[:MAX_KEY_BYTES]
    return OutRecord(dlq_topic, key, body, headers)
