"""Connecting a mailbox: the OAuth 2.0 authorization-code flow with PKCE (RFC 7636) and offline
refresh tokens, for Gmail, Google Calendar and Microsoft Graph.

1. ``OAuthFlow.start(provider, workspace)`` (``POST /capture/oauth/<provider>/start``, signed
   like the webhook: the CRM's backend asks, then sends the user's browser to the answer):
   a random ``state`` and PKCE verifier are stored (the verifier encrypted, the pair valid for
   ``state_ttl`` and usable once), and the provider's authorize URL is returned with the
   scopes, ``code_challenge`` (S256) and what makes it hand out a refresh token (Google:
   ``access_type=offline`` and ``prompt=consent``; Microsoft: the ``offline_access`` scope).
2. ``OAuthFlow.finish(provider, code, state)`` (``GET /capture/oauth/<provider>/callback``): the
   state is taken (unknown, reused, expired or of another provider: refused), the code is
   exchanged at the token endpoint (``grant_type=authorization_code`` with the verifier), an
   answer without a ``refresh_token`` is refused (no offline access: the connection could not
   outlive the access token), the mailbox address is read from the provider (Gmail profile,
   the primary calendar's id, Graph ``/me``), and the connection is stored with the tokens
   encrypted (``CaptureStore.connect``), under that address as ``user_id``.

Revocation: a refresh answered ``invalid_grant`` (the user removed our access) marks the
connection revoked (``CaptureStore.mark_revoked``) where it is used; the user connecting again
makes it live. Codes, tokens, verifiers and client secrets are never logged.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from producer.capture import gcal, gmail, graph
from producer.capture.api import ApiClient, ApiError, OAuthClient, error_code
from producer.capture.matcher import address
from producer.capture.store import CaptureStore

logger = logging.getLogger(__name__)

GOOGLE_AUTHORIZE = "https://accounts.google.com/o/oauth2/v2/auth"
MS_AUTHORIZE = "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
SCOPES = {
    # gmail.readonly, not gmail.metadata: the bounded full sync lists messages with `q`
    "gmail": "https://www.googleapis.com/auth/gmail.readonly",
    "gcal": "https://www.googleapis.com/auth/calendar.events.readonly",
    "graph": graph.SCOPE + " User.Read",
}


class OAuthFailed(Exception):
    """The authorization did not give a usable connection (``reason`` is safe to show)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProviderAuth:
    """How one provider is connected."""

    provider: str
    client: OAuthClient
    authorize_url: str
    scope: str
    api_base: str
    extra: tuple[tuple[str, str], ...] = ()
    """Authorize URL parameters besides the standard ones."""


def google(
    provider: str,
    client: OAuthClient,
    authorize_url: str = GOOGLE_AUTHORIZE,
    api_base: str | None = None,
) -> ProviderAuth:
    base = api_base or (gmail.API_BASE if provider == "gmail" else gcal.API_BASE)
    extra = (("access_type", "offline"), ("prompt", "consent"))
    return ProviderAuth(provider, client, authorize_url, SCOPES[provider], base, extra)


def microsoft(
    client: OAuthClient, authorize_url: str = MS_AUTHORIZE, api_base: str = graph.API_BASE
) -> ProviderAuth:
    extra = (("response_mode", "query"),)
    return ProviderAuth("graph", client, authorize_url, SCOPES["graph"], api_base, extra)


def pkce_pair() -> tuple[str, str]:
    """``(verifier, challenge)``: 64 random bytes base64url as the verifier (86 characters,
    within RFC 7636's 43-128), its SHA-256 base64url without padding as the S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OAuthFlow:
    def __init__(
        self,
        http: httpx.AsyncClient,
        store: CaptureStore,
        providers: dict[str, ProviderAuth],
        redirect_base: str,
        *,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        state_ttl: dt.timedelta = dt.timedelta(minutes=10),
    ) -> None:
        self._http, self._store, self.providers = http, store, providers
        self._redirect_base = redirect_base.rstrip("/")
        self._now, self._ttl = now, state_ttl

    def redirect_uri(self, provider: str) -> str:
        return f"{self._redirect_base}/capture/oauth/{provider}/callback"

    def start(self, provider: str, workspace_id: str) -> str:
        """The authorize URL to send the user's browser to."""
        auth = self.providers[provider]
        state = secrets.token_urlsafe(32)
        verifier, challenge = pkce_pair()
        now_ms = int(self._now().timestamp() * 1000)
        self._store.save_oauth_state(state, provider, workspace_id, verifier, now_ms)
        query = [
            ("client_id", auth.client.client_id),
            ("redirect_uri", self.redirect_uri(provider)),
            ("response_type", "code"),
            ("scope", auth.scope),
            ("state", state),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            *auth.extra,
        ]
        return f"{auth.authorize_url}?{urllib.parse.urlencode(query)}"

    async def decline(self, provider: str, state: str | None) -> None:
        """The provider redirected with an error: the state is used up."""
        if state:
            self._store.take_oauth_state(state, provider, 0)
        logger.info("%s: an authorization was declined", provider)

    async def finish(self, provider: str, code: str | None, state: str | None) -> str:
        """Store the connection; its ``user_id`` (the mailbox address)."""
        auth = self.providers[provider]
        not_before = int((self._now() - self._ttl).timestamp() * 1000)
        taken = self._store.take_oauth_state(state, provider, not_before) if state else None
        if taken is None:
            raise OAuthFailed("unknown_or_expired_state")
        workspace_id, verifier = taken
        if not code:
            raise OAuthFailed("no_code")
        resp = await self._http.post(
            auth.client.token_url,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri(provider),
                "client_id": auth.client.client_id,
                "client_secret": auth.client.client_secret,
                "code_verifier": verifier,
            },
        )
        if resp.status_code != 200:
            code_ = error_code(resp)
            logger.warning("%s: code exchange refused (%d %s)", provider, resp.status_code, code_)
            raise OAuthFailed("code_exchange_refused")
        tokens: Any = resp.json()
        if not isinstance(tokens, dict) or not tokens.get("access_token"):
            raise OAuthFailed("code_exchange_refused")
        if not tokens.get("refresh_token"):
            raise OAuthFailed("no_offline_access")
        try:
            user = await self._identity(auth, tokens)
        except ApiError as exc:
            logger.warning("%s: reading the mailbox address failed (%s)", provider, exc.status)
            raise OAuthFailed("identity_unavailable") from None
        if user is None:
            raise OAuthFailed("identity_unavailable")
        self._store.connect(user, provider, workspace_id, orjson.dumps(tokens).decode())
        logger.info("%s: a mailbox was connected for workspace %s", provider, workspace_id)
        return user

    async def _identity(self, auth: ProviderAuth, tokens: dict[str, Any]) -> str | None:
        client = ApiClient(self._http, auth.client, tokens, api_base=auth.api_base)
        if auth.provider == "gmail":
            raw = (await client.call("GET", "/profile")).get("emailAddress")
        elif auth.provider == "gcal":
            raw = (await client.call("GET", "/calendars/primary")).get("id")
        else:
            me = await client.call("GET", "/me", params={"$select": "mail,userPrincipalName"})
            raw = me.get("mail") or me.get("userPrincipalName")
        return address(str(raw or ""))
