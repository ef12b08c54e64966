"""The server's outer ASGI layer: what is checked before a handler runs, and what it always does.

In order: API key (``/v1/*`` and ``/metrics``; probes stay open), the body's type and encoding,
concurrency limit, the body read with a size limit enforced while reading and a deadline for slow
clients, then the app. Any exception the app lets escape becomes a JSON 500. Every answer to
``/v1/*`` and every non-2xx answer anywhere is counted in ``/metrics`` by status and logged as one
line (request id, status, inputs, tokens, latency; :mod:`embedforge.serve.logs` formats it).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid
from typing import Any

from embedforge.serve.config import ServeConfig
from embedforge.serve.errors import error_body
from embedforge.serve.prom import Metrics

log = logging.getLogger("embedforge.serve")
requests_log = logging.getLogger("embedforge.serve.requests")
PROTECTED = ("/v1/", "/metrics")
PROBES = ("/healthz", "/readyz", "/metrics")
#: the scope key where the handler leaves what the request line reports (inputs, tokens)
REQUEST_INFO = "embedforge.request"
CLIENT_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def _json_type(value: bytes) -> bool:
    """``application/json`` or ``application/<x>+json``, parameters ignored."""
    kind = value.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (
        kind.startswith(b"application/") and kind.endswith(b"+json")
    )


class TooSlow(Exception):
    """The client did not send its body in time."""


class Guard:
    """ASGI middleware applying ``cfg``'s auth and limits around ``app``."""

    def __init__(self, app: Any, cfg: ServeConfig, metrics: Metrics):
        self.app, self.cfg, self.metrics = app, cfg, metrics
        self.in_flight = 0
        self._key = cfg.api_key.encode() if cfg.api_key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope["path"]
        started: list[int] = []
        given_id = _header(scope, b"x-request-id")
        rid = given_id.decode() if CLIENT_ID.fullmatch(given_id) else uuid.uuid4().hex[:16]
        info = scope[REQUEST_INFO] = {"id": rid}

        async def counted_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                started.append(message["status"])
                if path.startswith("/v1/") or not 200 <= message["status"] < 300:
                    self.metrics.request(message["status"])
                headers = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                message = {**message, "headers": headers}
            await send(message)

        api = path.startswith("/v1/")
        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                return await _answer(counted_send, *refusal)
            self.in_flight += api
            try:
                body = await self._read_body(scope, receive)
                if isinstance(body, tuple):
                    return await _answer(counted_send, *body)
                await self.app(scope, _replay(body, receive), counted_send)
            except Exception:  # noqa: BLE001 - one JSON 500 for anything the app did not handle
                log.exception("unhandled error on %s (request %s)", _printable(path), rid)
                if not started:
                    await _answer(counted_send, 500, "internal error; see the server log")
            finally:
                self.in_flight -= api
        finally:
            status = started[0] if started else 0
            if not (path in PROBES and 200 <= status < 300):
                _log_request(scope, info, status, time.perf_counter() - t0)

    def _refusal(self, scope: dict) -> tuple | None:
        """(status, message, headers) when auth, the body's type or encoding, or the concurrency
        limit refuses the request."""
        path = scope["path"]
        if self._key is not None and path.startswith(PROTECTED):
            refusal = self._auth_refusal(scope)
            if refusal is not None:
                return refusal
        if scope["method"] == "POST" and path.startswith("/v1/"):
            encoding = _header(scope, b"content-encoding").strip().lower()
            if encoding not in (b"", b"identity"):
                shown = _printable(encoding.decode("latin-1"))
                return 415, f"Content-Encoding {shown} is not supported: send the body uncompressed"
            kind = _header(scope, b"content-type")
            if kind and not _json_type(kind):
                shown = _printable(kind.decode("latin-1"))
                return 415, f"Content-Type {shown} is not supported: send application/json"
        limit = self.cfg.limit_concurrency
        if limit and path.startswith("/v1/") and self.in_flight >= limit:
            retry = {"retry-after": str(self.cfg.retry_after_s)}
            return 503, f"too many requests in progress (limit {limit}); retry later", retry
        return None

    def _auth_refusal(self, scope: dict) -> tuple | None:
        """401 unless exactly one ``Authorization: Bearer <key>`` header (the scheme in any case,
        RFC 7235) carries the key; 400 for more than one such header."""
        given = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(given) > 1:
            return 400, "more than one Authorization header"
        scheme, _, token = (given[0] if given else b"").partition(b" ")
        matches = hmac.compare_digest(token.strip(), self._key)
        if scheme.lower() == b"bearer" and matches:
            return None
        return (
            401,
            "missing or invalid API key (Authorization: Bearer <key>)",
            {"www-authenticate": "Bearer"},
        )

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
    if status in (400, 408, 413, 415):
        raw.append((b"connection", b"close"))  # the rest of the body is never read
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: dict, name: bytes) -> bytes:
    """The first value of header ``name`` (lower-case), or b""."""
    return next((v for k, v in scope["headers"] if k == name), b"")


def _printable(text: str) -> str:
    """``text`` with anything unprintable escaped (a path or header must not forge log lines)."""
    return text if text.isprintable() else ascii(text)[1:-1]


def _log_request(scope: dict, info: dict, status: int, seconds: float) -> None:
    """One line per request: id, method, path, status, inputs, tokens, latency, client."""
    client = scope.get("client")
    fields = {
        "id": info["id"],
        "method": scope["method"],
        "path": _printable(scope["path"]),
        "status": status,
        "inputs": info.get("inputs"),
        "tokens": info.get("tokens"),
        "latency_ms": round(seconds * 1000, 1),
        "client": client[0] if client else None,
    }
    text = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
    requests_log.info("request %s", text, extra={"fields": fields})
