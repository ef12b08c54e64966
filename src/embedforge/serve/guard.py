"""The server's outer ASGI layer: what is checked before a handler runs, and what it always does.

In order: API key (``/v1/*`` and ``/metrics``; probes stay open), concurrency limit, the body read
with a size limit enforced while reading and a deadline for slow clients, then the app. Any
exception the app lets escape becomes a JSON 500. Every answer to ``/v1/*`` and every non-2xx
answer anywhere is counted in ``/metrics`` by status.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from embedforge.serve.config import ServeConfig
from embedforge.serve.errors import error_body
from embedforge.serve.prom import Metrics

log = logging.getLogger("embedforge.serve")
PROTECTED = ("/v1/", "/metrics")


class TooSlow(Exception):
    """The client did not send its body in time."""


class Guard:
    """ASGI middleware applying ``cfg``'s auth and limits around ``app``."""

    def __init__(self, app: Any, cfg: ServeConfig, metrics: Metrics):
        self.app, self.cfg, self.metrics = app, cfg, metrics
        self.in_flight = 0
        self._bearer = f"Bearer {cfg.api_key}".encode() if cfg.api_key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        started: list[int] = []

        async def counted_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                started.append(message["status"])
                if path.startswith("/v1/") or not 200 <= message["status"] < 300:
                    self.metrics.request(message["status"])
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            return await _answer(counted_send, *refusal)
        api = path.startswith("/v1/")
        self.in_flight += api
        try:
            body = await self._read_body(scope, receive)
            if isinstance(body, tuple):
                return await _answer(counted_send, *body)
            await self.app(scope, _replay(body, receive), counted_send)
        except Exception:  # noqa: BLE001 - one JSON 500 for anything the app did not handle
            log.exception("unhandled error on %s", path)
            if not started:
                await _answer(counted_send, 500, "internal error; see the server log")
        finally:
            self.in_flight -= api

    def _refusal(self, scope: dict) -> tuple | None:
        """(status, message, headers) when auth or the concurrency limit refuses the request."""
        path = scope["path"]
        if self._bearer is not None and path.startswith(PROTECTED):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._bearer):
                return (
                    401,
                    "missing or invalid API key (Authorization: Bearer <key>)",
                    {"www-authenticate": "Bearer"},
                )
        limit = self.cfg.limit_concurrency
        if limit and path.startswith("/v1/") and self.in_flight >= limit:
            retry = {"retry-after": str(self.cfg.retry_after_s)}
            return 503, f"too many requests in progress (limit {limit}); retry later", retry
        return None

    async def _read_body(self, scope: dict, receive: Any) -> bytes | tuple:
        """The whole body, or (status, message) when it is too large or too slow."""
        limit = self.cfg.body_limit
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return 413, f"request body of {int(declared)} bytes exceeds {limit} allowed"
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return 408, f"request body not received within {self.cfg.body_timeout_s:g} s"
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return 413, f"request body exceeds {limit} bytes allowed"
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that yields the already read body once, then defers to the real one."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send: Any, status: int, message: str, headers: dict | None = None) -> None:
    body = error_body(status, message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    if status in (408, 413):
        raw.append((b"connection", b"close"))  # the rest of the body is never read
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
