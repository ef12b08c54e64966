"""What the server enforces per connection, below HTTP requests: a deadline for the request
headers and a cap on open connections (uvicorn has neither: a connection that sends nothing, or
its headers a byte a second, stays open for good).

``server_options(cfg)`` gives the ``uvicorn.Config`` options that apply them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from embedforge.serve.config import ServeConfig
from embedforge.serve.errors import error_body


def server_options(cfg: ServeConfig) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments: the guarded HTTP protocol, and no uvicorn access log
    (the server logs its own line per request)."""
    return {
        "http": guarded_protocol(cfg.header_timeout_s, cfg.max_connections),
        "access_log": False,
    }


def guarded_protocol(header_timeout: float, max_connections: int) -> type:
    """uvicorn's h11 protocol, plus: a connection whose request headers are not all in within
    ``header_timeout`` seconds (of connecting, or of the previous answer) is closed, with a 408 if
    it had sent part of them; beyond ``max_connections`` open connections (0 = no cap) a new one
    gets a 503 and is closed at once."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _got_bytes = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if max_connections and len(self.connections) > max_connections:
                msg = f"too many open connections (limit {max_connections}); retry later"
                _close_with(transport, 503, msg, {"retry-after": "1"})
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._got_bytes = True
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._got_bytes = False
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._timer = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _headers_late(self) -> None:
            """Close a connection still waiting for (the rest of) a request's headers."""
            self._timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self._got_bytes:
                msg = f"request headers not received within {header_timeout:g} s"
                _close_with(self.transport, 408, msg)
            else:  # idle: nothing to answer (an unasked-for answer could confuse a client)
                self.transport.close()

    return GuardedH11Protocol


def _close_with(
    transport: asyncio.Transport, status: int, message: str, headers: dict | None = None
) -> None:
    """Write a whole JSON error answer straight to the socket and close it."""
    body = error_body(status, message)
    phrase = {408: "Request Timeout", 503: "Service Unavailable"}[status]
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    transport.close()
