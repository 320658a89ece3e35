"""Twilio's request signature (``X-Twilio-Signature``), shared by the notifier (which sends SMS
and names the status-callback URL) and the gateway (which receives the callbacks).

The signature is base64(HMAC-SHA1(auth token, the full URL Twilio called + every POST
parameter as name + value, sorted by name)). Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's ``X-Twilio-Signature`` for a request to ``url`` with POST ``params``."""
    data = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def valid_signature(
    auth_token: str, url: str, params: Mapping[str, str], header: str | None
) -> bool:
    """Whether a request really comes from Twilio (constant-time comparison)."""
    if not header:
        return False
    return hmac.compare_digest(signature(auth_token, url, params), header)
