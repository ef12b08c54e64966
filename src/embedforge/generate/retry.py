"""The HTTP side of LLM generation: classify an SDK error, back off, retry, or stop the run.

Both SDKs (``anthropic``, ``openai``) raise the same shapes, so one classifier serves both.
An error that every further request would repeat (bad key, unknown model, no credit, or the API
saying ``x-should-retry: false``) is fatal: the run stops at once with one line.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from embedforge.errors import EmbedforgeError


@dataclass
class ErrorInfo:
    """How the retry loop treats a failed request.

    ``kind``: rate_limit, overloaded, server, timeout, connection, bad_response, auth, http_<n>.
    ``fatal``: every further request would fail the same way; ``why`` says so in one line.
    """

    kind: str
    retryable: bool
    retry_after: float | None = None
    fatal: bool = False
    why: str = ""
    status: int | None = None


class RequestFailed(Exception):
    """A request that failed for good (non-retryable, or retries exhausted)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), else None."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def classify_sdk_error(exc: BaseException, sdk: Any) -> ErrorInfo:
    """Map an exception of the ``anthropic`` or ``openai`` SDK to an :class:`ErrorInfo`."""
    if isinstance(exc, sdk.APITimeoutError):
        return ErrorInfo("timeout", True)
    if isinstance(exc, sdk.APIConnectionError):
        return ErrorInfo("connection", True)
    if not isinstance(exc, sdk.APIStatusError):
        return ErrorInfo("bad_response", False)
    status = exc.status_code
    headers = getattr(exc.response, "headers", None) or {}
    if status in (401, 403):
        why = "check the API key and model access"
        return ErrorInfo("auth", False, fatal=True, why=why, status=status)
    if status in (400, 404) or headers.get("x-should-retry") == "false":
        return ErrorInfo(f"http_{status}", False, fatal=True, why=_api_message(exc), status=status)
    retry_after = parse_retry_after(headers)
    if status == 429:
        return ErrorInfo("rate_limit", True, retry_after)
    if status == 529:
        return ErrorInfo("overloaded", True, retry_after)
    if status in (408, 409) or status >= 500:
        return ErrorInfo("server" if status >= 500 else f"http_{status}", True, retry_after)
    return ErrorInfo(f"http_{status}", False)


def _api_message(exc: Any) -> str:
    """The API's own error message (``{"error": {"message"}}``), one line, else the exception's."""
    body = getattr(exc, "body", None)
    inner = body.get("error", body) if isinstance(body, dict) else None
    msg = inner.get("message") if isinstance(inner, dict) else None
    return " ".join(str(msg or exc).split())[:200]


@dataclass
class Retrier:
    """Retries with exponential backoff + jitter, honouring ``retry-after``; counts everything.

    Retry ``n`` (0-based) waits uniformly in ``[d/2, d]`` with ``d = min(max_s, base_s * 2**n)``,
    unless the server sent ``retry-after`` (then exactly that, capped at ``max_retry_after_s``).
    """

    classify: Callable[[BaseException], ErrorInfo]
    max_retries: int = 6
    base_s: float = 1.0
    max_s: float = 60.0
    max_retry_after_s: float = 300.0
    seed: int = 0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    requests: int = 0
    retries: Counter = field(default_factory=Counter)
    errors: dict[str, str] = field(default_factory=dict)  # one example message per kind
    stopped: bool = False  # a fatal error happened: send nothing more

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def summary(self) -> dict[str, Any]:
        """Requests sent, retries (by kind) and one example message per error kind."""
        out = {"requests": self.requests, "retries": sum(self.retries.values())}
        out["retries_by_kind"] = dict(self.retries)
        return {**out, "errors": dict(self.errors)} if self.errors else out

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        d = min(self.max_s, self.base_s * 2**attempt)
        return d / 2 + self._rng.uniform(0, d / 2)

    async def __call__(self, call: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Run ``call``; raise :class:`RequestFailed`, or EmbedforgeError naming ``what`` when fatal."""
        for attempt in range(self.max_retries + 1):
            self.requests += 1
            try:
                return await call()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below, never swallowed silently
                info = self.classify(exc)
                if info.fatal:
                    self.stopped = True
                    raise EmbedforgeError(
                        f"{what}: HTTP {info.status} ({info.kind}): {info.why};"
                        " stopped, nothing more is sent"
                    ) from None
                self.errors.setdefault(info.kind, f"{type(exc).__name__}: {exc}"[:200])
                if not info.retryable or attempt == self.max_retries:
                    raise RequestFailed(info.kind) from None
                self.retries[info.kind] += 1
                await self.sleep(self.backoff(attempt, info.retry_after))
        raise AssertionError("unreachable")
