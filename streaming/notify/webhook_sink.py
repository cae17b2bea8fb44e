"""The webhook transport of a sink: one HTTP POST per stored message (stdlib urllib, one connection per request).

An event message is POSTed as `application/json`; its snapshot follows as a second POST with the JPEG as the body
(`image/jpeg`). Every request carries `X-VAD-Seq`, `X-VAD-Origin`, `X-VAD-Kind` and, for event messages and
snapshots, `X-VAD-Event-Id` (and `X-VAD-Camera` with a snapshot), plus the sink's headers from the environment. Any
2xx answer acknowledges the message; anything else, a refused connection or no answer within `timeout_s` keeps it
for a retry. Errors never show the URL (it may hold a token) or a header's value.
"""
from __future__ import annotations

import socket
import urllib.error
import urllib.request

from streaming.notify.delivery import TransportError
from streaming.notify.outbox import Stored
from streaming.notify.settings import WebhookSinkConfig


class WebhookTransport:
    """POSTs stored messages to the sink's URL."""

    def __init__(self, cfg: WebhookSinkConfig, origin: str):
        self.cfg, self.origin = cfg, origin
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a receiver on the LAN: no proxy
        self._headers: dict[str, str] | None = None

    def connect(self) -> None:
        if self._headers is None:
            try:
                self._headers = self.cfg.headers()
            except KeyError as exc:
                raise TransportError("refusing", f"{exc.args[0]} (headers_env)") from None

    def send(self, msg: Stored) -> None:
        headers = {**(self._headers or {}), "Content-Type": msg.content_type, "X-VAD-Seq": str(msg.seq),
                   "X-VAD-Origin": self.origin, "X-VAD-Kind": msg.kind}
        headers |= {f"X-VAD-{k.replace('_', '-').title()}": v for k, v in msg.meta.items()}
        req = urllib.request.Request(self.cfg.url, data=msg.body, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.cfg.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            raise TransportError("refusing", f"HTTP {exc.code}") from None
        except (socket.timeout, TimeoutError):
            raise TransportError("slow", f"no answer within {self.cfg.timeout_s:g} s") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise TransportError("slow", f"no answer within {self.cfg.timeout_s:g} s") from None
            raise TransportError("down", getattr(reason, "strerror", None) or type(reason).__name__) from None
        except OSError as exc:
            raise TransportError("down", exc.strerror or type(exc).__name__) from None

    def reset(self) -> None:
        self._headers = None  # read the environment again at the next try

    def close(self) -> None:
        pass
