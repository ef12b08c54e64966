"""The settings of an LLM generator: the YAML keys of ``conf/generator/*.yaml``, validated once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedforge.errors import EmbedforgeError
from embedforge.generate.cost import Price


@dataclass
class LLMSettings:
    """Args:
    model: model name sent to the API (part of every cache key).
    base_url: API endpoint; ``None`` = the SDK default or its environment variable.
    concurrency: requests in flight at once.
    max_retries: retries per request after the first attempt (the SDK's own are disabled).
    timeout_s: per-request time-out.
    queries_per_chunk / style / few_shot / few_shot_path / few_shot_k / domain / max_words:
        prompt options (see :class:`~embedforge.generate.prompts.PromptBuilder`).
    max_output_tokens: the response cap sent with each request.
    max_usd: refuse to start when the estimate exceeds it; each call reserves its worst case
        first, so spend never passes it. ``None`` = no limit.
    price: ``{input_per_mtok, output_per_mtok}`` USD per million tokens (a :class:`Price` after
        validation).
    cache_dir: where results are appended (``None`` = memory only, nothing resumable).
    backoff_base_s / backoff_max_s / max_retry_after_s: see :class:`~.retry.Retrier`.
    filter: ``{round_trip_k, model, batch_size}``: keep a query only if ``model`` ranks its
        source chunk in the top ``round_trip_k`` of all chunks (``null`` = off).
    near_copy_ratio / near_copy_min_words / max_copied_words: see
        :func:`~embedforge.generate.parsing.validate_queries`.
    progress: show a tqdm bar.
    seed: few-shot sampling and backoff jitter.
    http_client: an ``httpx2.AsyncClient`` handed to the SDK (tests, proxies); not for YAML.
    sleep: awaitable sleep used between retries (tests inject a recorder); not for YAML.
    """

    model: str
    base_url: str | None = None
    concurrency: int = 8
    max_retries: int = 6
    timeout_s: float = 60.0
    queries_per_chunk: int = 3
    style: str = "search"
    few_shot: list[str] | None = None
    few_shot_path: str | None = None
    few_shot_k: int = 5
    domain: str | None = None
    max_words: int = 24
    max_output_tokens: int = 512
    max_usd: float | None = 5.0
    price: Any = None
    cache_dir: Any = None
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    max_retry_after_s: float = 300.0
    filter: Any = None
    near_copy_ratio: float = 0.9
    near_copy_min_words: int = 5
    max_copied_words: int = 12
    progress: bool = True
    seed: int = 0
    http_client: Any = field(default=None, repr=False)
    sleep: Callable[[float], Awaitable[None]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if int(self.concurrency) < 1:
            raise EmbedforgeError(f"generator.concurrency must be >= 1, got {self.concurrency!r}")
        self.model = str(self.model)
        self.concurrency = int(self.concurrency)
        self.max_output_tokens = int(self.max_output_tokens)
        self.max_usd = None if self.max_usd is None else float(self.max_usd)
        price = dict(self.price or {})
        self.price = Price(
            float(price.get("input_per_mtok", 0.0)), float(price.get("output_per_mtok", 0.0))
        )
        self.cache_dir = Path(str(self.cache_dir)).expanduser() if self.cache_dir else None
        self.filter = dict(self.filter or {})
        self.sleep = self.sleep or asyncio.sleep

    @property
    def validation(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~embedforge.generate.parsing.validate_queries`."""
        return dict(
            max_words=int(self.max_words), near_copy_ratio=float(self.near_copy_ratio),
            near_copy_min_words=int(self.near_copy_min_words),
            max_copied_words=int(self.max_copied_words),
        )  # fmt: skip

    def retrier_args(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~embedforge.generate.retry.Retrier`."""
        return dict(
            max_retries=int(self.max_retries), base_s=float(self.backoff_base_s),
            max_s=float(self.backoff_max_s), max_retry_after_s=float(self.max_retry_after_s),
            seed=self.seed, sleep=self.sleep,
        )  # fmt: skip
