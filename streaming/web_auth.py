"""Who may use the control plane: the bearer token, or the page's session cookie derived from it (no HTTP framework).

A browser cannot add `Authorization` to a page load, so the page takes the token once (`?token=` or its login
form) and answers with an HttpOnly, SameSite=Strict cookie. The cookie holds an HMAC of the token, not the token:
a leaked cookie opens this service but tells nothing reusable elsewhere. Every comparison is constant-time.
"""
from __future__ import annotations

import hashlib
import hmac

COOKIE = "vad_session"
COOKIE_MAX_AGE_S = 7 * 86400  # a week; changing the token logs every browser out
_SESSION_CONTEXT = b"vad page session v1"


def session_value(token: str) -> str:
    """The cookie value that stands for `token` (hex HMAC-SHA256; the token itself never goes to the browser)."""
    return hmac.new(token.encode(), _SESSION_CONTEXT, hashlib.sha256).hexdigest()


def token_matches(given: str | None, token: str) -> bool:
    """True when `given` is the token (constant-time)."""
    return given is not None and hmac.compare_digest(given.strip().encode(), token.encode())


def authorised(token: str | None, authorization: str | None, cookie: str | None) -> bool:
    """True when no token is configured, the `Authorization: Bearer` header carries it, or the session cookie
    was made from it."""
    if token is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and token_matches(given, token):
        return True
    return cookie is not None and hmac.compare_digest(cookie.encode(), session_value(token).encode())
