"""The HTTP conventions every provider client of capture shares, on an injected
``httpx.AsyncClient``: a bearer access token from the stored OAuth token response, refreshed once
on a 401 (refresh-token grant at the provider's token endpoint; the merged tokens go to
``on_tokens``, to be stored encrypted), and throttling answers (429, 503, and whatever
``retryable`` adds) waited out per ``Retry-After`` (seconds or an HTTP date, capped; without
one 1, 2, 4, ... s), at most ``max_attempts`` times. Any other 4xx/5xx is an ``ApiError`` with
its status and the provider's error code when it gives one.

Tokens and client secrets are never logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import httpx
import orjson

if TYPE_CHECKING:
    from producer.capture.store import CaptureStore

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A provider refused a request (after the 401/429 handling), or kept refusing.
    ``code`` is the provider's error code when the body names one (Graph's
    ``syncStateNotFound``, OAuth's ``invalid_grant``, ...)."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """The deployment's OAuth client at one provider (refresh-token grant)."""

    client_id: str
    client_secret: str
    token_url: str
    scope: str | None = None
    """Sent with a refresh when set (Microsoft identity platform asks for it)."""


class PushRejected(Exception):
    """A push or notification that is not from one of our subscriptions or channels
    (``reason``: bad_token, bad_body, bad_state, bad_client_state, ...); answered 4xx, nothing
    is read from the provider."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def revoked(exc: BaseException) -> bool:
    """The refresh was refused with ``invalid_grant``: the user revoked our access (or the
    refresh token expired); only a new consent helps, so retrying is pointless."""
    return isinstance(exc, ApiError) and exc.code == "invalid_grant"


def retry_after_seconds(value: str | None, now: dt.datetime, cap: float) -> float:
    """``Retry-After`` as seconds to wait (delta-seconds or an HTTP date), within [0, cap]."""
    if not value:
        return min(1.0, cap)
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return min(1.0, cap)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, min((when - now).total_seconds(), cap))


def error_code(resp: httpx.Response) -> str | None:
    """The provider's error code: Google ``error.errors[0].reason`` or ``error.status``, Graph
    ``error.code``, OAuth ``error``; ``None`` if the body has none."""
    try:
        body = resp.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    err = body.get("error")
    if isinstance(err, str):
        return err
    if not isinstance(err, dict):
        return None
    errors = err.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        reason = errors[0].get("reason")
        if reason:
            return str(reason)
    code = err.get("code")
    if isinstance(code, str):
        return code
    status = err.get("status")
    return str(status) if status else None


class ApiClient:
    """Bearer calls to one provider with one refresh on 401 and ``Retry-After`` on throttling.

    ``tokens`` is the provider's token response (``access_token``, ``refresh_token``, ...)."""

    name = "api"
    """In log lines and error messages."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        oauth: OAuthClient,
        tokens: dict[str, Any],
        *,
        api_base: str,
        on_tokens: Callable[[dict[str, Any]], None] = lambda _t: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        max_attempts: int = 5,
        max_wait_seconds: float = 120.0,
    ) -> None:
        self._http, self._oauth, self._tokens = http, oauth, dict(tokens)
        self._on_tokens, self._base = on_tokens, api_base.rstrip("/")
        self._sleep, self._now = sleep, now
        self._max_attempts, self._max_wait = max_attempts, max_wait_seconds

    def retryable(self, resp: httpx.Response) -> bool:
        """Throttling besides 429 and 503 (Gmail: a 403 ``rateLimitExceeded``)."""
        return False

    def error(self, method: str, path: str, resp: httpx.Response) -> ApiError:
        status = resp.status_code
        return ApiError(f"{self.name} {method} {path}: {status}", status, error_code(resp))

    async def refresh(self) -> None:
        refresh_token = self._tokens.get("refresh_token")
        if not refresh_token:
            raise ApiError(f"{self.name}: no refresh token: the user must connect again", 401)
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self._oauth.client_id,
            "client_secret": self._oauth.client_secret,
        }
        if self._oauth.scope:
            form["scope"] = self._oauth.scope
        resp = await self._http.post(self._oauth.token_url, data=form)
        if resp.status_code != 200:
            # invalid_grant: the user revoked access; the connection needs a new consent
            raise ApiError(
                f"{self.name}: token refresh refused ({resp.status_code})",
                resp.status_code,
                error_code(resp),
            )
        fresh = resp.json()
        if not isinstance(fresh, dict) or not fresh.get("access_token"):
            raise ApiError(f"{self.name}: token refresh answered without an access_token")
        self._tokens.update(fresh)  # a refresh answer may have no refresh_token: keep ours
        self._on_tokens(dict(self._tokens))
        logger.info("%s: access token refreshed", self.name)

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """``path`` below the API base, or an absolute URL (a next or delta link)."""
        url = path if path.startswith(("https://", "http://")) else self._base + path
        refreshed = False
        attempts = 0
        while True:
            attempts += 1
            bearer = f"Bearer {self._tokens.get('access_token', '')}"
            sent = {**(headers or {}), "Authorization": bearer}
            resp = await self._http.request(method, url, params=params, json=json, headers=sent)
            status = resp.status_code
            if status == 401 and not refreshed:
                refreshed = True
                await self.refresh()
                continue
            if (status in (429, 503) or self.retryable(resp)) and attempts < self._max_attempts:
                header = resp.headers.get("retry-after")
                wait = (
                    retry_after_seconds(header, self._now(), self._max_wait)
                    if header
                    else min(2.0 ** (attempts - 1), self._max_wait)  # backoff 1, 2, 4, ... s
                )
                logger.warning(
                    "%s: %d on %s, retrying in %.1fs", self.name, status, httpx.URL(url).path, wait
                )
                await self._sleep(wait)
                continue
            if status >= 400:
                raise self.error(method, httpx.URL(url).path, resp)
            if status == 204 or not resp.content:
                return {}
            body = resp.json()
            return body if isinstance(body, dict) else {}


C = TypeVar("C", bound=ApiClient)


class PushEndpoint(Generic[C]):
    """What every provider's push endpoint shares: the HTTP client, the provider's OAuth client,
    the secret its pushes are verified with, one sync at a time per user (a lock each, so
    overlapping pushes cannot both publish a message), and the provider's API client for a
    user's stored tokens (refreshed tokens are stored again, encrypted). Subclasses name the
    provider, its client class and its API base."""

    provider: ClassVar[str]
    client_class: ClassVar[Callable[..., Any]]
    default_api_base: ClassVar[str]

    def __init__(
        self,
        http: httpx.AsyncClient,
        oauth: OAuthClient,
        secret: str,
        *,
        api_base: str | None = None,
        full_sync_days: int = 30,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self._http, self._oauth, self._secret = http, oauth, secret
        self._ready = ready
        self._base = api_base or self.default_api_base
        self._days, self._sleep, self._now = full_sync_days, sleep, now
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, user: str) -> asyncio.Lock:
        """The lock a sync of ``user``'s mailbox or calendar holds."""
        return self._locks.setdefault(user, asyncio.Lock())

    def client(self, store: CaptureStore, user: str, tokens: str) -> C:
        """The provider's client for ``user``, from their stored (decrypted) token response."""
        client: C = self.client_class(
            self._http,
            self._oauth,
            orjson.loads(tokens),
            api_base=self._base,
            on_tokens=lambda t: store.save_tokens(user, self.provider, orjson.dumps(t).decode()),
            sleep=self._sleep,
            now=self._now,
        )
        return client
