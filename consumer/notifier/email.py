"""Email over SMTP: a multipart (plain text + HTML) message per insight or per flood-control
message, and a client for one SMTP server (``aiosmtplib``; STARTTLS, implicit TLS or none;
optional auth). One destination per person of the owner directory with an address
(``email:<owner id>``).

CRM text is untrusted: the HTML part escapes everything (``html.escape``), the text part drops
control characters, and header values are single lines. The ``Message-ID`` is derived from the
notification's stable id, so a receiving system that dedupes on it sees a resend as the same
mail. Email is at most once by default (``VECTOROS_EMAIL_AT_MOST_ONCE``): a server that hung up
after the data was sent may have queued the mail, and most mailboxes do not dedupe.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formataddr

import aiosmtplib
from pydantic import SecretStr

from consumer.notifier.console import _clean, format_insight
from consumer.notifier.delivery import NetworkFailure
from consumer.notifier.digest import console_text, headline, insight_of
from consumer.notifier.flood import Message
from consumer.notifier.slack import _money, deal_url
from schemas.insights import InsightEvent
from vectoros.errors import PermanentDeliveryError, TransientDeliveryError

SUBJECT_MAX = 150


class SmtpRejected(PermanentDeliveryError):
    """A 5xx answer (recipient, sender or content refused, authentication failed)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"SMTP {status_code}: {detail}")
        self.status_code = status_code


class SmtpRetriable(TransientDeliveryError):
    """A 4xx answer: the server asks to try again later."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"SMTP {status_code}: {detail}")
        self.status_code = status_code


def _one_line(text: str, limit: int = SUBJECT_MAX) -> str:
    line = " ".join(_clean(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _insight_html(
    insight: InsightEvent, url: str | None, links: Sequence[tuple[str, str]] = ()
) -> str:
    data = insight.data
    e = html.escape
    rows = [
        ("Deal", data.deal_title + (f" ({data.company})" if data.company else "")),
        ("Value", _money(data.deal_value, data.currency)),
        ("Stage", data.stage.value if data.stage else "—"),
        ("Owner", data.owner_name or data.owner_id or "—"),
        ("Priority", insight.priority.value),
    ]
    table = "".join(f"<tr><th align='left'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    actions = "".join(
        f"<li><b>{e(a.action)}</b> ({e(a.timeline)}): {e(a.expected_impact)}</li>"
        for a in insight.actions
    )
    link = f"<p><a href='{e(url)}'>Open the deal</a></p>" if url else ""
    answers = " · ".join(f"<a href='{e(href)}'>{e(label)}</a>" for label, href in links)
    answer = f"<p>{answers}</p>" if answers else ""
    return (
        f"<h2>{e(insight.title)}</h2><p>{e(insight.description)}</p><table>{table}</table>"
        f"<h3>Recommended actions</h3><ul>{actions}</ul>{link}{answer}"
    )


def _message_html(
    message: Message, template: str | None, links: Sequence[tuple[str, str]] = ()
) -> str:
    items = sorted(message.items, key=lambda i: (-i.rank, -(i.value or 0.0), i.deal_id))
    if message.kind == "alert" and items and items[0].lifecycle != "flapping":
        insight = insight_of(items[0])
        return _insight_html(insight, deal_url(template, insight), links)
    lines = [
        f"<li>{html.escape(line.strip())}</li>" for line in console_text(message).splitlines()[1:]
    ]
    return f"<h2>{html.escape(headline(message))}</h2><ul>{''.join(lines)}</ul>"


def build_email(
    what: InsightEvent | Message,
    *,
    sender: str,
    to: str,
    to_name: str | None,
    message_id: str,
    deal_url_template: str | None = None,
    answer_links: Sequence[tuple[str, str]] = (),
) -> EmailMessage:
    """The multipart/alternative mail (text first, then HTML) for an insight or a message;
    ``answer_links`` ((label, URL), signed) are added (given only for a single insight)."""
    mail = EmailMessage()
    if isinstance(what, InsightEvent):
        subject = f"[{what.priority.value.upper()}] {what.title} · {what.data.deal_title}"
        text = format_insight(what, deal_url(deal_url_template, what))
        if answer_links:
            text += "\n\n" + "\n".join(f"{label}: {href}" for label, href in answer_links)
        body = _insight_html(what, deal_url(deal_url_template, what), answer_links)
    else:
        subject = headline(what)
        text = console_text(what, deal_url_template=deal_url_template)
        if answer_links:
            text += "\n\n" + "\n".join(f"{label}: {href}" for label, href in answer_links)
        body = _message_html(what, deal_url_template, answer_links)
    mail["Subject"] = _one_line(subject)
    mail["From"] = sender
    mail["To"] = formataddr((_one_line(to_name or "", 80), to))
    mail["Message-ID"] = f"<{message_id}@vectoros>"
    mail.set_content(text + "\n")
    mail.add_alternative(f"<!doctype html><html><body>{body}</body></html>", subtype="html")
    return mail


class EmailClient:
    """Sends mail through one SMTP server. The password is a secret: never logged."""

    kind = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: str,
        username: str | None,
        password: SecretStr | None,
        timeout: float,
        validate_certs: bool = True,
    ) -> None:
        self._host = host
        self._port = port
        self._security = security
        self._username = username
        self._password = password
        self._timeout = timeout
        self._validate_certs = validate_certs

    async def send(self, mail: EmailMessage) -> None:
        """One attempt; raises a :class:`vectoros.errors.DeliveryError` unless the server
        accepted the mail for every recipient."""
        try:
            await aiosmtplib.send(
                mail,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=None if self._password is None else self._password.get_secret_value(),
                use_tls=self._security == "tls",
                start_tls=self._security == "starttls",
                timeout=self._timeout,
                validate_certs=self._validate_certs,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0] if exc.recipients else None
            code = first.code if first is not None else 550
            detail = first.message if first is not None else "recipients refused"
            raise (SmtpRetriable if 400 <= code < 500 else SmtpRejected)(code, detail) from None
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError) as exc:
            raise NetworkFailure(f"{type(exc).__name__}: {exc}", ambiguous=False) from None
        except aiosmtplib.SMTPResponseException as exc:
            kind = SmtpRetriable if 400 <= exc.code < 500 else SmtpRejected
            raise kind(exc.code, exc.message) from None
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
            # may have happened after the data was accepted: the outcome is unknown
            raise NetworkFailure(f"{type(exc).__name__}: {exc}", ambiguous=True) from None
        except aiosmtplib.SMTPException as exc:
            raise SmtpRejected(0, f"{type(exc).__name__}: {exc}") from None
        except OSError as exc:
            raise NetworkFailure(f"{type(exc).__name__}: {exc}", ambiguous=False) from None
