"""Logging is configured once, at start-up, by the CLI; modules only call ``getLogger``."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    # aiokafka is chatty at INFO about every (re)join; keep its warnings and errors.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))


class RedactingFilter(logging.Filter):
    """Replaces secrets in records of a third-party logger (httpx logs every request URL at
    INFO; a Slack webhook URL is a credential)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message, self._secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


@contextlib.contextmanager
def redact_logs(
    secrets: Sequence[str], names: Sequence[str] = ("httpx", "httpcore")
) -> Iterator[RedactingFilter]:
    flt = RedactingFilter(secrets)
    loggers = [logging.getLogger(name) for name in names]
    for lg in loggers:
        lg.addFilter(flt)
    try:
        yield flt
    finally:
        for lg in loggers:
            lg.removeFilter(flt)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ``***`` (belt and braces for error messages)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# ---------------------------------------------------------------------------------------------
# Policy parts
