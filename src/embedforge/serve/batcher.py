"""Micro-batching: concurrent requests share one model call, run in a worker thread."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from embedforge.serve.prom import Metrics

T = TypeVar("T")
EmbedFn = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]


class QueueFull(Exception):
    """More texts are waiting than ``max_queue`` allows."""


class ShuttingDown(Exception):
    """The batcher is draining and accepts no new work."""


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future
    start: int = 0  # texts before it are taken (requests larger than a batch go in chunks)
    parts: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def left(self) -> int:
        return len(self.texts) - self.start


class MicroBatcher:
    """Groups submitted texts into batches of at most ``max_batch_size`` texts.

    The first waiting request waits at most ``max_wait_ms`` for others. A request that fits in a
    batch is never split, so its embeddings come from a single call. A larger one runs in chunks
    of ``max_batch_size`` texts, one chunk per call, and after each chunk its rest goes to the
    back of the queue: other requests take turns with it instead of waiting for all of it. A
    failed model call is retried request by request, so only the faulty request gets the error.
    ``close()`` drains the queue.

    Args:
        fn: ``texts -> (embeddings (N, D), token counts (N,))``; runs in one worker thread.
        max_batch_size: most texts per model call (1 disables batching).
        max_wait_ms: batching window.
        max_queue: most texts waiting; ``submit`` raises ``QueueFull`` beyond it.
        metrics: where batch sizes, durations and queue depth are recorded.
    """

    def __init__(
        self,
        fn: EmbedFn,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        metrics: Metrics | None = None,
    ):
        self.fn = fn
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_wait = max(0.0, max_wait_ms) / 1000
        self.max_queue = int(max_queue)
        self.metrics = metrics or Metrics()
        self._items: deque[_Item] = deque()
        self._pending = 0
        self._closing = False
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    @property
    def pending(self) -> int:
        return self._pending

    async def start(self) -> None:
        self._event = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._task = asyncio.create_task(self._run())

    async def submit(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Queue ``texts`` and wait for their embeddings and token counts."""
        if self._closing or self._task is None:
            raise ShuttingDown("server is shutting down")
        if self._pending + len(texts) > self.max_queue:
            raise QueueFull(f"queue full ({self._pending} texts waiting, max {self.max_queue})")
        item = _Item(list(texts), asyncio.get_running_loop().create_future())
        self._items.append(item)
        self._pending += len(item.texts)
        self.metrics.queue_depth = self._pending
        self._event.set()
        return await item.future

    async def close(self) -> None:
        """Stop accepting work, finish everything queued, stop the worker."""
        self._closing = True
        if self._task is not None:
            self._event.set()
            await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the model thread, between batches (e.g. timing the model)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _call(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        embs, toks = [], []
        for s in range(0, len(texts), self.max_batch_size):
            t0 = time.perf_counter()
            e, t = self.fn(texts[s : s + self.max_batch_size])
            self.metrics.batch(len(e), time.perf_counter() - t0)
            embs.append(e)
            toks.append(np.asarray(t))
        return np.concatenate(embs), np.concatenate(toks)

    async def _run(self) -> None:
        while True:
            if not self._items:
                if self._closing:
                    return
                self._event.clear()
                await self._event.wait()
                continue
            await self._fill_window()
            batch = self._take_batch()
            if batch:
                await self._deliver(batch)
            for item, _, stop in batch:  # a chunk: the rest waits behind all that came meanwhile
                if stop < len(item.texts):
                    if item.future.done():
                        self._pending -= item.left
                    else:
                        self._items.append(item)

    async def _fill_window(self) -> None:
        """Wait up to ``max_wait`` for more texts, unless a full batch is already waiting."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while self._pending < self.max_batch_size and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[tuple[_Item, int, int]]:
        """``(request, start, stop)`` slices in arrival order up to ``max_batch_size`` texts:
        whole requests, or alone the next chunk of one larger than a batch (``_run`` queues its
        rest again after the call). Requests that gave up waiting are dropped here."""
        batch: list[tuple[_Item, int, int]] = []
        n = 0
        while self._items:
            item = self._items[0]
            if item.future.done():  # cancelled: its client timed out or went away
                self._items.popleft()
                self._pending -= item.left
                continue
            if item.left > self.max_batch_size:
                if not batch:  # its rest is queued again once this chunk is done
                    self._items.popleft()
                    batch.append((item, item.start, item.start + self.max_batch_size))
                    item.start += self.max_batch_size
                    self._pending -= self.max_batch_size
                break
            if batch and n + item.left > self.max_batch_size:
                break
            self._items.popleft()
            batch.append((item, item.start, len(item.texts)))
            n += item.left
            self._pending -= item.left
            item.start = len(item.texts)
        self.metrics.queue_depth = self._pending
        return batch

    async def _deliver(self, batch: list[tuple[_Item, int, int]]) -> None:
        """Embed a batch and hand each request its rows (a request's last chunk settles it). If
        the model call fails, every request is re-run alone, so one bad request fails alone."""
        loop = asyncio.get_running_loop()
        texts = [t for item, a, b in batch for t in item.texts[a:b]]
        try:
            emb, tok = await loop.run_in_executor(self._executor, self._call, texts)
        except Exception as e:  # noqa: BLE001 - isolated below, never swallowed
            if len(batch) == 1:
                _settle(batch[0][0].future, exception=e)
                return
            for part in batch:
                await self._deliver([part])
            return
        s = 0
        for item, a, b in batch:
            item.parts.append((emb[s : s + b - a], tok[s : s + b - a]))
            s += b - a
            if b == len(item.texts):
                embs, toks = zip(*item.parts)
                _settle(item.future, result=(np.concatenate(embs), np.concatenate(toks)))


def _settle(future: asyncio.Future, result: Any = None, exception: BaseException | None = None):
    """Set a future's outcome unless its waiter already gave up."""
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
