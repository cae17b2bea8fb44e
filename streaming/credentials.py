"""Camera credentials: taken from the URL or the environment, and scrubbed from every text that leaves a camera.

`resolve_credentials` fills `user:password@` from `VAD_CAMERA_<NAME>_USER` / `_PASSWORD` (or a configured prefix) when
the URL carries none; `scrub_url` hides them (and secret query values) in any text: logs, statuses, errors,
metrics. Pure standard library, so the config validator can import it without PyAV, OpenCV or torch.
"""
from __future__ import annotations

import logging
import os
import re
from urllib.parse import quote, urlsplit, urlunsplit

logger = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp", "rtsps")
SECRET_QUERY_KEYS = {"password", "passwd", "pwd", "pass", "token", "key", "secret", "auth", "user", "username"}

# The scheme is bounded (RFC 3986 sets no limit, real ones are short): unbounded, a long run of letters without
# "://" cost quadratic time (70 KB of "x" in a request body took 5 s on the event loop).
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]{0,31}://)(?P<userinfo>[^/@\s?#]*)@")
_SECRET_QUERY = re.compile(r"(?P<key>[?&](?:%s)=)[^&#\s'\"]*" % "|".join(sorted(SECRET_QUERY_KEYS)), re.IGNORECASE)


def scrub_url(url: str) -> str:
    """Hide credentials: `rtsp://user:pw@host/x?token=abc` -> `rtsp://***@host/x?token=***`.

    Works on any text (an error message that quotes the URL), not only on well-formed URLs.
    """
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", str(url))
    return _SECRET_QUERY.sub(lambda m: f"{m.group('key')}***", text)


def camera_env_prefix(camera: str) -> str:
    """`front door` -> `VAD_CAMERA_FRONT_DOOR`: where a camera's credentials are looked up."""
    return "VAD_CAMERA_" + re.sub(r"[^A-Za-z0-9]+", "_", camera).strip("_").upper()


def resolve_credentials(url: str, env_prefix: str, environ: dict[str, str] | None = None) -> str:
    """Fill user/password from `{env_prefix}_USER` / `{env_prefix}_PASSWORD` when the URL carries none.

    Credentials already in the URL win. Values are percent-encoded so `@`, `:` or `/` in a password are safe.
    """
    env = os.environ if environ is None else environ
    parts = urlsplit(url)
    if parts.scheme not in LIVE_SCHEMES or "@" in parts.netloc:
        return url
    user = env.get(f"{env_prefix}_USER")
    password = env.get(f"{env_prefix}_PASSWORD")
    if not user:
        if password:
            logger.warning("%s_PASSWORD is set but %s_USER is not: ignoring the password", env_prefix, env_prefix)
        return url
    userinfo = quote(user, safe="")
    if password:
        userinfo += ":" + quote(password, safe="")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))
