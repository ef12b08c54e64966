"""Anthropic backend: the official SDK's ``AsyncAnthropic``, with an optional Message Batches mode.

Batches cost half and suit large corpora that can wait (results within 24 h). The batch id is saved
to ``<cache_dir>/anthropic-batches.json`` right after submission, so a rerun after a crash polls
the same batch instead of paying for it twice.
"""

from __future__ import annotations

import json
import os
from typing import Any

from embedforge.errors import EmbedforgeError
from embedforge.generate.cache import GenerationCache
from embedforge.generate.cost import CostTracker, Price
from embedforge.generate.dispatch import Job
from embedforge.generate.llm import LLMGenerator, Usage
from embedforge.generate.retry import ErrorInfo, RequestFailed, classify_sdk_error
from embedforge.io import write_json


class AnthropicGenerator(LLMGenerator):
    """Queries from Claude (default ``claude-haiku-4-5``); key from ``ANTHROPIC_API_KEY`` only.

    Args:
        model: Claude model name.
        batch: use the Message Batches API (``batch_discount`` times the price, asynchronous).
        batch_discount: price multiplier in batch mode.
        poll_interval_s: seconds between batch status checks.
        max_batch_requests: requests per submitted batch.
        **kwargs: see :class:`~embedforge.generate.settings.LLMSettings`.
    """

    backend = "anthropic"

    def __init__(
        self,
        model: str = "claude-haiku-4-5",
        batch: bool = False,
        batch_discount: float = 0.5,
        poll_interval_s: float = 60.0,
        max_batch_requests: int = 10_000,
        **kwargs: Any,
    ):
        super().__init__(model=model, **kwargs)
        self.batch = bool(batch)
        self.batch_discount = float(batch_discount)
        self.poll_interval_s = float(poll_interval_s)
        self.max_batch_requests = int(max_batch_requests)
        if self.batch and self.settings.cache_dir is None:
            raise EmbedforgeError(
                "generator.batch=true needs generator.cache_dir (the batch id is saved there)"
            )

    def _check_credentials(self) -> None:
        if not os.environ.get("ANTHROPIC_API_KEY"):
            raise EmbedforgeError(
                "ANTHROPIC_API_KEY is not set: export it in the environment (keys are never read from config)"
            )

    def _make_client(self) -> Any:
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=os.environ["ANTHROPIC_API_KEY"],
            base_url=self.settings.base_url,  # None: ANTHROPIC_BASE_URL, else the public API
            max_retries=0,  # our retries are the only ones: counted, bounded, testable
            timeout=self.settings.timeout_s,
            http_client=self.settings.http_client,
        )

    def _params(self, prompt: str) -> dict[str, Any]:
        return {
            "model": self.settings.model,
            "max_tokens": self.settings.max_output_tokens,
            "messages": [{"role": "user", "content": prompt}],
        }

    @staticmethod
    def _unpack(message: Any) -> tuple[str | None, Usage]:
        text = "".join(
            getattr(b, "text", "")
            for b in (message.content or [])
            if getattr(b, "type", "") == "text"
        )
        u = message.usage
        return text or None, {
            "input_tokens": u.input_tokens or 0,
            "output_tokens": u.output_tokens or 0,
        }

    async def _request(self, client: Any, prompt: str) -> tuple[str | None, Usage]:
        return self._unpack(await client.messages.create(**self._params(prompt)))

    def _classify(self, exc: BaseException) -> ErrorInfo:
        import anthropic

        return classify_sdk_error(exc, anthropic)

    def _effective_price(self) -> Price:
        p = self.settings.price
        return Price(
            p.input_per_mtok, p.output_per_mtok, self.batch_discount if self.batch else 1.0
        )

    # ------------------------------------------------------------------ Message Batches
    @property
    def batch_state_path(self):
        return self.settings.cache_dir / "anthropic-batches.json"

    def _load_state(self) -> dict[str, Any]:
        p = self.batch_state_path
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}

    async def _run_pending(
        self, client: Any, jobs: list[Job], cache: GenerationCache, tracker: CostTracker, bar: Any
    ) -> None:
        if not self.batch:
            return await super()._run_pending(client, jobs, cache, tracker, bar)
        by_key = {j.key: j for j in jobs}
        state = self._load_state()
        covered: set[str] = set()
        batch_ids = []
        for bid, info in state.items():
            mine = [k for k in info.get("keys", []) if k in by_key]
            if mine:
                batch_ids.append(bid)
                covered.update(mine)
                self._log(f"resuming batch {bid} ({len(mine)} requests)")
        self.stats["batches_resumed"] = len(batch_ids)
        todo = [j for j in jobs if j.key not in covered]
        for s in range(0, len(todo), self.max_batch_requests):
            group = todo[s : s + self.max_batch_requests]
            requests = [{"custom_id": j.key, "params": self._params(j.prompt)} for j in group]
            batch = await self._with_retries(
                lambda r=requests: client.messages.batches.create(requests=r)
            )
            state[batch.id] = {"model": self.settings.model, "keys": [j.key for j in group]}
            write_json(self.batch_state_path, state)  # before anything else can fail
            batch_ids.append(batch.id)
            self._log(f"submitted batch {batch.id} ({len(group)} requests)")
        self.stats["batches_submitted"] = len(batch_ids) - self.stats["batches_resumed"]
        for bid in batch_ids:
            await self._collect(client, bid, by_key, cache, tracker, bar)
            state.pop(bid, None)
            write_json(self.batch_state_path, state)

    async def _collect(
        self,
        client: Any,
        bid: str,
        by_key: dict[str, Job],
        cache: GenerationCache,
        tracker: CostTracker,
        bar: Any,
    ) -> None:
        while True:
            batch = await self._with_retries(lambda: client.messages.batches.retrieve(bid))
            if batch.processing_status == "ended":
                break
            await self.settings.sleep(self.poll_interval_s)
        try:
            results = await self._with_retries(lambda: client.messages.batches.results(bid))
        except RequestFailed as f:
            self.stats["failures"][f"batch_{f.kind}"] += 1
            return
        async for item in results:
            job = by_key.get(item.custom_id)
            if job is None or job.key in cache:
                continue
            if item.result.type != "succeeded":
                self.stats["failures"][f"batch_{item.result.type}"] += 1  # redone by a rerun
                continue
            text, usage = self._unpack(item.result.message)
            tracker.add(usage["input_tokens"], usage["output_tokens"])
            cache.put(self._record(job, text, usage))
            bar.update(1)
