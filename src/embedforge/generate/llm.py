"""LLM query generation shared by every backend: prompts, parsing, validation, cache, cost, retries.

A backend subclasses :class:`LLMGenerator` and supplies four small methods: ``_check_credentials``,
``_make_client``, ``_request(client, prompt) -> (text, usage)`` and ``_classify(exc)``. Everything
else (asyncio with a concurrency limit, retries with exponential backoff + jitter honouring
``retry-after``, the resumable cache, the budget, progress and stats) lives here once.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedforge.errors import EmbedforgeError
from embedforge.generate.base import Chunk, Pair
from embedforge.generate.cache import GenerationCache
from embedforge.generate.cost import CostTracker, Price, estimate_tokens
from embedforge.generate.parsing import parse_queries, validate_queries
from embedforge.generate.prompts import PROMPT_VERSION, PromptBuilder, load_few_shot
from embedforge.io import stable_hash

Usage = dict[str, int]


@dataclass
class ErrorInfo:
    """How the retry loop treats a failed request."""

    kind: (
        str  # rate_limit, overloaded, server, timeout, connection, bad_response, client_error, auth
    )
    retryable: bool
    retry_after: float | None = None
    fatal: bool = False  # every further request would fail the same way (bad key): stop the run


class RequestFailed(Exception):
    """A request that failed for good (non-retryable, or retries exhausted)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


@dataclass
class Job:
    key: str
    prompt: str
    est_input: int
    est_output: int


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
    """Map an exception of the ``anthropic`` or ``openai`` SDK (same shapes) to an :class:`ErrorInfo`."""
    if isinstance(exc, sdk.APITimeoutError):
        return ErrorInfo("timeout", True)
    if isinstance(exc, sdk.APIConnectionError):
        return ErrorInfo("connection", True)
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        retry_after = parse_retry_after(getattr(exc.response, "headers", None))
        if status == 429:
            return ErrorInfo("rate_limit", True, retry_after)
        if status == 529:
            return ErrorInfo("overloaded", True, retry_after)
        if status in (408, 409) or status >= 500:
            return ErrorInfo("server" if status >= 500 else f"http_{status}", True, retry_after)
        if status in (401, 403):
            return ErrorInfo("auth", False, fatal=True)
        return ErrorInfo(f"http_{status}", False)
    return ErrorInfo("bad_response", False)


class LLMGenerator:
    """Synthetic queries for chunks from an LLM; ``generate(chunks) -> pairs``.

    Args:
        model: model name sent to the API (part of every cache key).
        base_url: API endpoint; ``None`` = the SDK default or its environment variable.
        concurrency: requests in flight at once.
        max_retries: retries per request after the first attempt (the SDK's own are disabled).
        timeout_s: per-request time-out.
        queries_per_chunk / style / few_shot / few_shot_path / few_shot_k / domain / max_words:
            prompt options (see :class:`~embedforge.generate.prompts.PromptBuilder`).
        max_output_tokens: the response cap sent with each request.
        max_usd: refuse to start when the estimate exceeds it; stop sending once actual spend would.
            ``None`` = no limit.
        price: ``{input_per_mtok, output_per_mtok}`` USD per million tokens.
        cache_dir: where results are appended (``None`` = memory only, nothing resumable).
        backoff_base_s / backoff_max_s: retry ``n`` (0-based) waits uniformly in
            ``[d/2, d]`` with ``d = min(backoff_max_s, backoff_base_s * 2**n)``, unless the server
            sent ``retry-after`` (then exactly that, capped at ``max_retry_after_s``).
        filter: ``{round_trip_k, model, batch_size}``: keep a query only if ``model`` ranks its
            source chunk in the top ``round_trip_k`` of all chunks (``null`` = off).
        near_copy_ratio / near_copy_min_words / max_copied_words: see
            :func:`~embedforge.generate.parsing.validate_queries`.
        progress: show a tqdm bar.
        seed: few-shot sampling and backoff jitter.
        http_client: an ``httpx2.AsyncClient`` handed to the SDK (tests, proxies); not for YAML.
        sleep: awaitable sleep used between retries (tests inject a recorder).
    """

    backend = "llm"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        concurrency: int = 8,
        max_retries: int = 6,
        timeout_s: float = 60.0,
        queries_per_chunk: int = 3,
        style: str = "search",
        few_shot: list[str] | None = None,
        few_shot_path: str | None = None,
        few_shot_k: int = 5,
        domain: str | None = None,
        max_words: int = 24,
        max_output_tokens: int = 512,
        max_usd: float | None = 5.0,
        price: dict | None = None,
        cache_dir: str | None = None,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        max_retry_after_s: float = 300.0,
        filter: dict | None = None,
        near_copy_ratio: float = 0.9,
        near_copy_min_words: int = 5,
        max_copied_words: int = 12,
        progress: bool = True,
        seed: int = 0,
        http_client: Any = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ):
        if int(concurrency) < 1:
            raise EmbedforgeError(f"generator.concurrency must be >= 1, got {concurrency!r}")
        self.model = str(model)
        self.base_url = base_url
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.timeout_s = float(timeout_s)
        examples = list(few_shot or [])
        if few_shot_path:
            examples += load_few_shot(few_shot_path)
        self.prompts = PromptBuilder(
            queries_per_chunk, style, examples, few_shot_k, domain, max_words, seed=seed
        )
        self.style = style
        self.max_words = int(max_words)
        self.max_output_tokens = int(max_output_tokens)
        self.max_usd = None if max_usd is None else float(max_usd)
        price = dict(price or {})
        self.price = Price(
            float(price.get("input_per_mtok", 0.0)), float(price.get("output_per_mtok", 0.0))
        )
        self.cache_dir = Path(str(cache_dir)).expanduser() if cache_dir else None
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.filter = dict(filter or {})
        self.validation = dict(
            max_words=self.max_words,
            near_copy_ratio=float(near_copy_ratio),
            near_copy_min_words=int(near_copy_min_words),
            max_copied_words=int(max_copied_words),
        )
        self.progress = bool(progress)
        self.http_client = http_client
        self._sleep = sleep or asyncio.sleep
        self._rng = random.Random(seed)
        self.encoder = None  # the round-trip filter's model; set it to reuse one already loaded
        self.stats: dict[str, Any] = {}
        self._abort = False

    # ------------------------------------------------------------------ backend hooks
    def _check_credentials(self) -> None:
        """Raise a one-line error when the API key is missing (before any work)."""

    def _make_client(self) -> Any:
        raise NotImplementedError

    async def _request(self, client: Any, prompt: str) -> tuple[str | None, Usage]:
        """Send one prompt; return the response text and ``{input_tokens, output_tokens}``."""
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> ErrorInfo:
        return ErrorInfo("bad_response", False)

    def _effective_price(self) -> Price:
        return self.price

    def _key_extra(self) -> Any:
        """Backend request options that change the answer (part of the cache key)."""
        return None

    # ------------------------------------------------------------------ shared machinery
    @property
    def cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        slug = "".join(c if c.isalnum() or c in "-._" else "_" for c in self.model)
        return self.cache_dir / f"{self.backend}-{slug}.jsonl"

    def _key(self, chunk: Chunk, prompt: str) -> str:
        chunk_hash = stable_hash(chunk.get("title") or "", chunk.get("text", ""))
        prompt_hash = stable_hash(PROMPT_VERSION, prompt)
        return stable_hash(
            chunk_hash, prompt_hash, self.model, self.max_output_tokens, self._key_extra()
        )

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        d = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        return d / 2 + self._rng.uniform(0, d / 2)

    async def _with_retries(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``call`` with retries; raise :class:`RequestFailed` or, for fatal errors, EmbedforgeError."""
        for attempt in range(self.max_retries + 1):
            self.stats["requests"] += 1
            try:
                return await call()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below, never swallowed silently
                info = self._classify(exc)
                if info.fatal:
                    self._abort = True
                    raise EmbedforgeError(
                        f"{self.backend} API refused the request ({info.kind}, {type(exc).__name__}):"
                        " check the API key and model access"
                    ) from None
                # one example per kind, for the report (SDK messages carry no credentials)
                self.stats.setdefault("errors", {}).setdefault(
                    info.kind, f"{type(exc).__name__}: {exc}"[:200]
                )
                if not info.retryable or attempt == self.max_retries:
                    raise RequestFailed(info.kind) from None
                self.stats["retries"] += 1
                self.stats["retries_by_kind"][info.kind] += 1
                await self._sleep(self.backoff(attempt, info.retry_after))
        raise AssertionError("unreachable")

    def _record(self, job: Job, text: str | None, usage: Usage) -> dict[str, Any]:
        queries = parse_queries(text)
        record: dict[str, Any] = {
            "key": job.key,
            "model": self.model,
            "queries": queries,
            "usage": {
                "input_tokens": int(usage.get("input_tokens", 0)),
                "output_tokens": int(usage.get("output_tokens", 0)),
            },
            "failure": None if queries is not None else "unparseable",
        }
        if queries is None:
            record["raw"] = (text or "")[:300]
            self.stats["failures"]["unparseable"] += 1
        return record

    async def _run_concurrent(
        self, client: Any, jobs: list[Job], cache: GenerationCache, tracker: CostTracker, bar: Any
    ) -> None:
        sem = asyncio.Semaphore(self.concurrency)
        price = self._effective_price()

        async def one(job: Job) -> None:
            async with sem:
                if self._abort:
                    return
                est = price.usd(job.est_input, job.est_output)
                if not tracker.can_spend(est):
                    self.stats["failures"]["budget"] += (
                        1  # not sent: a rerun with more budget does it
                    )
                    return
                tracker.reserve(est)
                try:
                    text, usage = await self._with_retries(
                        lambda: self._request(client, job.prompt)
                    )
                except RequestFailed as f:
                    self.stats["failures"][f.kind] += 1
                    return
                finally:
                    tracker.release(est)
                tracker.add(usage.get("input_tokens", 0), usage.get("output_tokens", 0))
                cache.put(self._record(job, text, usage))
                bar.update(1)
                bar.set_postfix(usd=f"{tracker.usd:.4f}", refresh=False)

        tasks = [asyncio.ensure_future(one(j)) for j in jobs]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if t.exception() is not None:
                    raise t.exception()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_pending(
        self, client: Any, jobs: list[Job], cache: GenerationCache, tracker: CostTracker, bar: Any
    ) -> None:
        await self._run_concurrent(client, jobs, cache, tracker, bar)

    def _log(self, msg: str) -> None:
        print(f"[generate:{self.backend}] {msg}", file=sys.stderr, flush=True)

    def generate(self, chunks: list[Chunk]) -> list[Pair]:
        """Queries for every chunk as training pairs (see :mod:`embedforge.generate.base`)."""
        return asyncio.run(self.agenerate(chunks))

    async def agenerate(self, chunks: list[Chunk]) -> list[Pair]:
        self._check_credentials()
        self._abort = False
        self.stats = {
            "backend": self.backend,
            "model": self.model,
            "chunks": len(chunks),
            "cached": 0,
            "requests": 0,
            "retries": 0,
            "retries_by_kind": Counter(),
            "failures": Counter(),
        }
        t0 = time.perf_counter()
        cache = GenerationCache(self.cache_path)
        keyed: list[tuple[Chunk, str]] = []
        jobs: dict[str, Job] = {}
        for chunk in chunks:
            prompt = self.prompts.build(chunk)
            key = self._key(chunk, prompt)
            keyed.append((chunk, key))
            if key not in cache and key not in jobs:
                est_out = 8 + 20 * self.prompts.queries_per_chunk  # ~a JSON array of short queries
                jobs[key] = Job(
                    key, prompt, estimate_tokens(prompt) + 8, min(est_out, self.max_output_tokens)
                )
        pending = list(jobs.values())
        self.stats["cached"] = len({k for _, k in keyed}) - len(pending)
        price = self._effective_price()
        estimate = sum(price.usd(j.est_input, j.est_output) for j in pending)
        self.stats["estimated_usd"] = estimate
        self.stats["estimated_input_tokens"] = sum(j.est_input for j in pending)
        self.stats["estimated_output_tokens"] = sum(j.est_output for j in pending)
        budget = "no limit" if self.max_usd is None else f"max_usd {self.max_usd:.2f}"
        self._log(
            f"{len(pending)} requests to send ({self.stats['cached']} cached), estimated cost"
            f" ${estimate:.4f} ({budget}), model {self.model}"
        )
        if self.max_usd is not None and estimate > self.max_usd:
            raise EmbedforgeError(
                f"estimated cost ${estimate:.2f} for {len(pending)} requests exceeds generator.max_usd="
                f"{self.max_usd:.2f}: raise it or send fewer chunks"
            )
        tracker = CostTracker(price, self.max_usd)
        if pending:
            from tqdm import tqdm

            client = self._make_client()
            bar = tqdm(
                total=len(pending),
                unit="chunk",
                desc=f"generate {self.model}",
                disable=not self.progress,
            )
            try:
                await self._run_pending(client, pending, cache, tracker, bar)
            finally:
                bar.close()
                cache.close()
                close = getattr(client, "close", None)
                if close is not None:
                    await close()
        pairs = self._assemble(chunks, keyed, cache)
        pairs = self._round_trip(pairs, chunks)
        self.stats.update(
            input_tokens=tracker.input_tokens,
            output_tokens=tracker.output_tokens,
            usd=round(tracker.usd, 6),
            pairs=len(pairs),
            seconds=round(time.perf_counter() - t0, 3),
        )
        self.stats["retries_by_kind"] = dict(self.stats["retries_by_kind"])
        self.stats["failures"] = dict(self.stats["failures"])
        self._log(
            f"requests {self.stats['requests']}, retries {self.stats['retries']}, failures"
            f" {self.stats['failures'] or 0}, tokens {tracker.input_tokens}+{tracker.output_tokens},"
            f" ${tracker.usd:.4f}, pairs {len(pairs)}, dropped {self.stats['dropped'] or 0}"
        )
        return pairs

    def _assemble(
        self, chunks: list[Chunk], keyed: list[tuple[Chunk, str]], cache: GenerationCache
    ) -> list[Pair]:
        """Pairs in chunk order from the cache, whatever order responses arrived in."""
        seen: set[str] = set()
        dropped: Counter = Counter()
        pairs: list[Pair] = []
        for chunk, key in keyed:
            rec = cache.get(key)
            if rec is None or not rec.get("queries"):
                continue
            text = str(chunk.get("text", ""))
            title = str(chunk.get("title") or "").strip()
            kept, why = validate_queries(
                rec["queries"], f"{title} {text}", seen=seen, **self.validation
            )
            dropped.update(why)
            positive = f"{title} {text}".strip() if title else text
            for q in kept:
                pairs.append(
                    {
                        "query": q,
                        "positive": positive,
                        "source": "synthetic",
                        "doc_id": chunk.get("id"),
                        "generator": f"{self.backend}:{self.model}",
                        "style": self.style,
                    }
                )
        self.stats["dropped"] = dict(dropped)
        return pairs

    def _round_trip(self, pairs: list[Pair], chunks: list[Chunk]) -> list[Pair]:
        k = self.filter.get("round_trip_k")
        if not k or not pairs:
            return pairs
        from embedforge.generate.filters import round_trip_filter

        if self.encoder is None:
            from embedforge.models.encoder import Encoder

            self.encoder = Encoder.from_pretrained(
                self.filter.get("model") or "packaged:all-MiniLM-L6-v2"
            )
        texts = []
        for c in chunks:
            title = str(c.get("title") or "").strip()
            texts.append(
                f"{title} {c.get('text', '')}".strip() if title else str(c.get("text", ""))
            )
        kept, report = round_trip_filter(
            pairs, texts, self.encoder, int(k), int(self.filter.get("batch_size", 64))
        )
        self.stats["round_trip"] = report
        self.stats.setdefault("dropped", {})["round_trip"] = report["dropped"]
        return kept
