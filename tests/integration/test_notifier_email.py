"""Email over SMTP against a real local SMTP server (aiosmtpd, not a mock): both parts arrive,
STARTTLS with authentication works, a refused recipient is a permanent failure, and the notifier
mails each insight to its owner from the owner directory."""

from __future__ import annotations

import asyncio
import datetime
import email
import socket
import ssl
from collections.abc import Iterator
from email.message import Message as Mail
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from consumer.notifier.directory import parse_directory
from consumer.notifier.email import EmailClient, SmtpRejected, build_email
from consumer.notifier.metrics import NotifierMetrics
from consumer.notifier.service import NotifierHandler, build_destinations
from consumer.notifier.settings import NotifierSettings
from tests.unit.test_notifier_service import FakeStore, insight

pytestmark = pytest.mark.integration

DIRECTORY = """
owners:
  u-17: {name: Ana Lima, email: ana@acme.test, tz: Europe/Paris, manager: u-1}
  u-1: {name: Bo Chen, email: bo@acme.test}
"""


class Inbox:
    """An aiosmtpd handler that keeps every mail; refuses recipients at refused.test."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], Mail]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.endswith("@refused.test"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A key and a one-day self-signed certificate for localhost (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(private, hashes.SHA256())
    )
    key, cert = directory / "key.pem", directory / "cert.pem"
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key, cert


@pytest.fixture
def tls_inbox(tmp_path: Path) -> Iterator[tuple[Inbox, int]]:
    key, cert = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"vectoros",
            b"s3cret-pw",
        )
        return AuthResult(success=ok, handled=False)

    handler = Inbox()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def client(port: int, **kw: Any) -> EmailClient:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "username": None,
        "password": None,
        "timeout": 10.0,
    }
    values.update(kw)
    return EmailClient(**values)


def evil_insight() -> Any:
    data = {
        "deal_id": "deal-1",
        "deal_title": "<script>x</script> Acme",
        "deal_value": 80_000.0,
        "owner_id": "u-17",
    }
    return insight(1, data=data, priority="critical")


async def test_the_mail_reaches_the_server_with_both_parts(inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    mail = build_email(
        evil_insight(),
        sender="VectorOS <alerts@vectoros.test>",
        to="ana@acme.test",
        to_name="Ana Lima",
        message_id="msg_0123",
        deal_url_template="https://crm.test/d/{deal_id}",
    )
    await client(port).send(mail)
    [(rcpt, got)] = box.mails
    assert rcpt == ["ana@acme.test"]
    assert got["Message-ID"] == "<msg_0123@vectoros>"
    assert got["Subject"].startswith("[CRITICAL] Deal 1 has gone quiet")
    assert got.get_content_type() == "multipart/alternative"
    parts = {
        p.get_content_type(): p.get_payload(decode=True).decode()
        for p in got.walk()
        if not p.is_multipart()
    }
    assert set(parts) == {"text/plain", "text/html"}
    assert "<script>" in parts["text/plain"]  # plain text shows it as it is
    assert "<script>" not in parts["text/html"]
    assert "&lt;script&gt;" in parts["text/html"]
    assert "https://crm.test/d/deal-1" in parts["text/html"]


async def test_starttls_with_authentication(tls_inbox: tuple[Inbox, int]) -> None:
    box, port = tls_inbox
    mail = build_email(
        evil_insight(), sender="a@vectoros.test", to="bo@acme.test", to_name=None, message_id="m1"
    )
    good = client(
        port,
        security="starttls",
        username="vectoros",
        password=SecretStr("s3cret-pw"),
        validate_certs=False,
    )
    await good.send(mail)
    assert len(box.mails) == 1
    bad = client(
        port,
        security="starttls",
        username="vectoros",
        password=SecretStr("wrong"),
        validate_certs=False,
    )
    with pytest.raises(SmtpRejected, match="535"):
        await bad.send(mail)
    plain = client(port, security="none", username="vectoros", password=SecretStr("s3cret-pw"))
    with pytest.raises(SmtpRejected):
        await plain.send(mail)  # the server requires STARTTLS
    assert len(box.mails) == 1


async def test_a_refused_recipient_is_a_permanent_failure(inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    mail = build_email(
        evil_insight(),
        sender="a@vectoros.test",
        to="nobody@refused.test",
        to_name=None,
        message_id="m2",
    )
    with pytest.raises(SmtpRejected, match="550"):
        await client(port).send(mail)
    assert box.mails == []


async def test_the_notifier_mails_each_insight_to_its_owner(inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    settings = NotifierSettings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        email_from="alerts@vectoros.test",
    )
    async with httpx.AsyncClient() as http:
        destinations = build_destinations(settings, http, directory=parse_directory(DIRECTORY))
        assert sorted(d.label for d in destinations) == ["email:u-1", "email:u-17"]
        store = FakeStore()
        handler = NotifierHandler(
            settings,
            destinations,
            NotifierMetrics(CollectorRegistry()),
            asyncio.Event(),
            log=store,
            directory=parse_directory(DIRECTORY),
        )
        ana = evil_insight()
        nobody = insight(
            2, data={"deal_id": "deal-2", "deal_title": "B", "deal_value": 1.0, "owner_id": "u-99"}
        )
        assert await handler.handle([ana, nobody], asyncio.Event()) == ()
        assert await handler.handle([ana], asyncio.Event()) == ()  # replayed: not mailed again
    assert [rcpt for rcpt, _ in box.mails] == [["ana@acme.test"]]
    assert {r.status for r in store.by_type("email").values()} == {"sent"}


async def test_the_answer_link_in_a_real_mail_snoozes_at_the_gateway(
    inbox: tuple[Inbox, int],
) -> None:
    from producer.gateway.app import build_app
    from producer.gateway.metrics import GatewayMetrics
    from producer.gateway.settings import GatewaySettings
    from tests.unit.test_gateway_slack_interactions import NoEvents
    from tests.unit.test_notifier_ack_links import FakeAcks

    box, port = inbox
    key = "a-shared-answer-link-key-of-32-chars!"
    settings = NotifierSettings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        email_from="alerts@vectoros.test",
        notify_ack_link_url="https://gw.test",
        notify_ack_link_key=SecretStr(key),
    )
    async with httpx.AsyncClient() as http:
        directory = parse_directory(DIRECTORY)
        handler = NotifierHandler(
            settings,
            build_destinations(settings, http, directory=directory),
            NotifierMetrics(CollectorRegistry()),
            asyncio.Event(),
            log=FakeStore(),
            directory=directory,
        )
        assert await handler.handle([evil_insight()], asyncio.Event()) == ()
    [(_, mail)] = box.mails
    text = next(p for p in mail.walk() if p.get_content_type() == "text/plain")
    line = next(
        t for t in text.get_payload(decode=True).decode().splitlines() if t.startswith("Snooze")
    )
    url = line.split(": ", 1)[1]
    acks = FakeAcks()
    app = build_app(
        GatewaySettings(
            kafka_bootstrap_servers="unused:9092",
            metrics_enabled=False,
            gateway_ack_link_key=SecretStr(key),
        ),
        NoEvents(),
        GatewayMetrics(CollectorRegistry()),
        acks=acks,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://gw.test") as gateway:
        assert (await gateway.post(url)).status_code == 200
    [ack] = acks.sent
    assert (ack.insight_id, ack.state.value, ack.actor) == (
        evil_insight().insight_id,
        "snoozed",
        "email:u-17",
    )
