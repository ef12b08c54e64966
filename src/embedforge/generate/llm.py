"""LLM query generation shared by every backend: one run, from chunks to pairs.

A backend subclasses :class:`LLMGenerator` and supplies four small methods: ``_check_credentials``,
``_make_client``, ``_request(client, prompt) -> (text, usage)`` and ``_classify(exc)``. Each
shared concern has its module: settings (:mod:`.settings`), retries and fatal errors
(:mod:`.retry`), the budget (:mod:`.cost`), the resumable cache (:mod:`.cache`), planning and
sending (:mod:`.dispatch`), pairs and the round-trip filter (:mod:`.assemble`). This class runs
them in order and reports.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from embedforge.generate.assemble import assemble_pairs, round_trip
from embedforge.generate.base import Chunk, Pair
from embedforge.generate.cache import GenerationCache
from embedforge.generate.cost import CostTracker, Price, plan_estimate
from embedforge.generate.dispatch import Job, Sender, make_record, plan_jobs, run_concurrent
from embedforge.generate.prompts import PROMPT_VERSION, PromptBuilder, load_few_shot
from embedforge.generate.retry import ErrorInfo, Retrier
from embedforge.generate.settings import LLMSettings
from embedforge.io import stable_hash

Usage = dict[str, int]


class LLMGenerator:
    """Synthetic queries for chunks from an LLM; ``generate(chunks) -> pairs``.

    Args:
        **settings: the fields of :class:`~embedforge.generate.settings.LLMSettings`.
    """

    backend = "llm"

    def __init__(self, **settings: Any):
        s = self.settings = LLMSettings(**settings)
        examples = list(s.few_shot or []) + (
            load_few_shot(s.few_shot_path) if s.few_shot_path else []
        )
        self.prompts = PromptBuilder(
            s.queries_per_chunk, s.style, examples, s.few_shot_k, s.domain, s.max_words, seed=s.seed
        )
        self.encoder = None  # the round-trip filter's model; set it to reuse one already loaded
        self.stats: dict[str, Any] = {}
        self.retry = Retrier(self._classify, **s.retrier_args())

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
        return self.settings.price

    def _key_extra(self) -> Any:
        """Backend request options that change the answer (part of the cache key)."""
        return None

    # ------------------------------------------------------------------ one run
    @property
    def cache_path(self) -> Path | None:
        if self.settings.cache_dir is None:
            return None
        slug = "".join(c if c.isalnum() or c in "-._" else "_" for c in self.settings.model)
        return self.settings.cache_dir / f"{self.backend}-{slug}.jsonl"

    def _key(self, chunk: Chunk, prompt: str) -> str:
        s = self.settings
        chunk_hash = stable_hash(chunk.get("title") or "", chunk.get("text", ""))
        prompt_hash = stable_hash(PROMPT_VERSION, prompt)
        return stable_hash(chunk_hash, prompt_hash, s.model, s.max_output_tokens, self._key_extra())

    async def _with_retries(self, call: Any) -> Any:
        """``call()`` with retries; RequestFailed, or EmbedforgeError when the API refuses for good."""
        return await self.retry(call, f"{self.backend} API, model {self.settings.model!r}")

    def _log(self, msg: str) -> None:
        print(f"[generate:{self.backend}] {msg}", file=sys.stderr, flush=True)

    def generate(self, chunks: list[Chunk]) -> list[Pair]:
        """Queries for every chunk as training pairs (see :mod:`embedforge.generate.base`)."""
        return asyncio.run(self.agenerate(chunks))

    async def agenerate(self, chunks: list[Chunk]) -> list[Pair]:
        self._check_credentials()
        t0, s = time.perf_counter(), self.settings
        self.retry = Retrier(self._classify, **s.retrier_args())
        self.stats = {"backend": self.backend, "model": s.model, "chunks": len(chunks)}
        self.stats["failures"] = Counter()
        cache = GenerationCache(self.cache_path)
        if cache.skipped:
            self.stats["cache_lines_skipped"] = dict(cache.skipped)
            self._log(f"cache {self.cache_path}: skipped damaged lines {dict(cache.skipped)}")
        keyed, pending = plan_jobs(chunks, self.prompts, self._key, cache, s.max_output_tokens)
        self.stats["cached"] = len({k for _, k in keyed}) - len(pending)
        self.stats.update(plan_estimate(pending, self._effective_price(), s.max_usd))
        budget = "no limit" if s.max_usd is None else f"max_usd {s.max_usd:.2f}"
        self._log(
            f"{len(pending)} requests to send ({self.stats['cached']} cached), estimated cost"
            f" ${self.stats['estimated_usd']:.4f} ({budget}), model {s.model}"
        )
        tracker = CostTracker(self._effective_price(), s.max_usd)
        if pending:
            await self._send_all(pending, cache, tracker)
        label = f"{self.backend}:{s.model}"
        pairs, self.stats["dropped"] = assemble_pairs(keyed, cache, s.validation, label, s.style)
        pairs, report, self.encoder = round_trip(pairs, chunks, s.filter, self.encoder)
        if report is not None:
            self.stats["round_trip"] = report
            self.stats["dropped"]["round_trip"] = report["dropped"]
        self._finish(tracker, len(pairs), time.perf_counter() - t0)
        return pairs

    async def _send_all(self, pending: list[Job], cache: GenerationCache, tracker: CostTracker):
        from tqdm import tqdm

        client = self._make_client()
        desc, off = f"generate {self.settings.model}", not self.settings.progress
        bar = tqdm(total=len(pending), unit="chunk", desc=desc, disable=off)
        try:
            await self._run_pending(client, pending, cache, tracker, bar)
        finally:
            bar.close()
            cache.close()
            close = getattr(client, "close", None)
            if close is not None:
                await close()

    def _record(self, job: Job, text: str | None, usage: Usage) -> dict[str, Any]:
        record = make_record(job, self.settings.model, text, usage)
        if record["failure"]:
            self.stats["failures"][record["failure"]] += 1
        return record

    async def _run_pending(
        self, client: Any, jobs: list[Job], cache: GenerationCache, tracker: CostTracker, bar: Any
    ) -> None:
        """Send every job, ``concurrency`` at a time (the Batches mode overrides this)."""
        sender = Sender(
            lambda prompt: self._with_retries(lambda: self._request(client, prompt)),
            self._record, tracker, self._effective_price(), self.settings.max_output_tokens,
            cache, self.stats["failures"], lambda: self.retry.stopped, bar,
        )  # fmt: skip
        await run_concurrent(jobs, sender, self.settings.concurrency)

    def _finish(self, tracker: CostTracker, n_pairs: int, seconds: float) -> None:
        """Final stats and the one-line summary."""
        st = self.stats
        st.update(
            self.retry.summary(), input_tokens=tracker.input_tokens, pairs=n_pairs,
            output_tokens=tracker.output_tokens, usd=round(tracker.usd, 6),
            seconds=round(seconds, 3), failures=dict(st["failures"]),
        )  # fmt: skip
        self._log(
            f"requests {st['requests']}, retries {st['retries']}, failures {st['failures'] or 0},"
            f" tokens {tracker.input_tokens}+{tracker.output_tokens}, ${tracker.usd:.4f},"
            f" pairs {n_pairs}, dropped {st['dropped'] or 0}"
        )
