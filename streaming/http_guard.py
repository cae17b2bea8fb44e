"""The control plane's front gate (pure ASGI, no framework): the token first, then the body, bounded, before any route.

Every request goes through `RequestGuard` before FastAPI reads or validates anything:
1. Token: a path that is not public answers 401 unless `web_auth.authorised` (header or session cookie), so a
   client without the token never gets its body read, parsed or echoed back (no 422 naming fields).
2. Body: read whole here, whatever the transfer encoding (Content-Length or chunked), and refused with 413 as soon
   as it passes `max_body` bytes; a body that has not arrived within `body_timeout_s` is 408. The route then gets
   the buffered body; later `receive` calls (disconnect) go to the server's.
Reading is all `await`: nothing here holds the replica's event loop.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import cookie_parser

from streaming import web_auth

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def route_path(scope: Scope) -> str:
    """The request's path below the application's mount point (Serve's route prefix is `root_path`)."""
    path, root = scope.get("path", ""), scope.get("root_path", "").rstrip("/")
    return (path[len(root):] if root and path.startswith(root) else path) or "/"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    return cookie_parser(_header(scope, b"cookie") or "").get(name)


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: 401 before anything else on non-public paths, then the body read with a size and time bound.

    Args:
        token: returns the configured token (None: no token, every path open); called per request.
        public: True for paths (below the mount point) that need no token (health, docs, pages that show a login).
        max_body: most body bytes; one more is 413.
        body_timeout_s: the whole body must arrive within this long, else 408.
    """

    def __init__(self, app: Callable, *, token: Callable[[], str | None], public: Callable[[str], bool],
                 max_body: int, body_timeout_s: float):
        self.app, self.token, self.public = app, token, public
        self.max_body, self.body_timeout_s = max_body, body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.public(route_path(scope)):
            token = self.token()
            if not web_auth.authorised(token, _header(scope, b"authorization"), _cookie(scope, web_auth.COOKIE)):
                await _answer(send, 401, "missing or wrong bearer token (header Authorization)",
                              {"WWW-Authenticate": "Bearer"})
                return
        length = _header(scope, b"content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_body):
            await _answer(send, 413, f"request body too large (Content-Length {length[:40]}; limit {self.max_body} bytes)")
            return
        body = await self._read_body(receive, send)
        if body is None:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once 413 (too large), 408 (too slow) or nothing (client gone) was answered."""
        parts: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                await _answer(send, 408, f"request body not received within {self.body_timeout_s:g} s")
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _answer(send, 413, f"request body too large (limit {self.max_body} bytes)")
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)
