"""Planning and sending the requests of one generation run.

``plan_jobs`` keys every chunk and lists what the cache lacks; ``run_concurrent`` sends jobs with
a concurrency limit and stops everything at the first error that is not a per-request failure
(a fatal API answer, Ctrl-C); ``make_record`` is what the cache keeps for one answer.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from embedforge.generate.base import Chunk
from embedforge.generate.cache import GenerationCache
from embedforge.generate.cost import CostTracker, Price, estimate_tokens, max_input_tokens
from embedforge.generate.parsing import parse_queries
from embedforge.generate.prompts import PromptBuilder
from embedforge.generate.retry import RequestFailed


@dataclass
class Job:
    """One request to send: its cache key, prompt, typical and worst-case token counts."""

    key: str
    prompt: str
    est_input: int
    est_output: int
    max_input: int


def plan_jobs(
    chunks: list[Chunk],
    prompts: PromptBuilder,
    key_of: Callable[[Chunk, str], str],
    cache: GenerationCache,
    max_output_tokens: int,
) -> tuple[list[tuple[Chunk, str]], list[Job]]:
    """Every chunk with its cache key (corpus order), and one job per uncached key."""
    keyed: list[tuple[Chunk, str]] = []
    jobs: dict[str, Job] = {}
    est_out = min(8 + 20 * prompts.queries_per_chunk, max_output_tokens)  # ~a short JSON array
    for chunk in chunks:
        prompt = prompts.build(chunk)
        key = key_of(chunk, prompt)
        keyed.append((chunk, key))
        if key not in cache and key not in jobs:
            est_in = estimate_tokens(prompt) + 8
            jobs[key] = Job(key, prompt, est_in, est_out, max_input_tokens(prompt))
    return keyed, list(jobs.values())


def make_record(job: Job, model: str, text: str | None, usage: dict[str, int]) -> dict[str, Any]:
    """The cache line of one answer: parsed queries (or the raw text when unparseable) and usage."""
    queries = parse_queries(text)
    record: dict[str, Any] = {
        "key": job.key,
        "model": model,
        "queries": queries,
        "usage": {
            "input_tokens": int(usage.get("input_tokens", 0)),
            "output_tokens": int(usage.get("output_tokens", 0)),
        },
        "failure": None if queries is not None else "unparseable",
    }
    if queries is None:
        record["raw"] = (text or "")[:300]
    return record


async def run_concurrent(
    jobs: list[Job], send: Callable[[Job], Awaitable[None]], concurrency: int
) -> None:
    """``send(job)`` for every job, ``concurrency`` at a time; the first exception cancels the
    rest and is raised."""
    sem = asyncio.Semaphore(concurrency)

    async def one(job: Job) -> None:
        async with sem:
            await send(job)

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


@dataclass
class Sender:
    """Sends one job: reserves its worst-case cost (so spend never passes ``max_usd``), sends it
    with retries, records the answer in the cache and counts what failed."""

    send: Callable[[str], Awaitable[tuple[str | None, dict[str, int]]]]  # prompt -> text, usage
    record: Callable[[Job, str | None, dict[str, int]], dict[str, Any]]
    tracker: CostTracker
    price: Price
    max_output_tokens: int
    cache: GenerationCache
    failures: Counter
    stopped: Callable[[], bool]
    bar: Any

    async def __call__(self, job: Job) -> None:
        if self.stopped():
            return
        worst = self.price.usd(job.max_input, self.max_output_tokens)
        if not self.tracker.try_reserve(worst):
            self.failures["budget"] += 1  # not sent: a rerun with more budget does it
            return
        try:
            text, usage = await self.send(job.prompt)
        except RequestFailed as f:
            self.failures[f.kind] += 1
            return
        finally:
            self.tracker.release(worst)
        self.tracker.add(usage.get("input_tokens", 0), usage.get("output_tokens", 0))
        self.cache.put(self.record(job, text, usage))
        self.bar.update(1)
        self.bar.set_postfix(usd=f"{self.tracker.usd:.4f}", refresh=False)
