import asyncio
import time

import numpy as np
import pytest

from embedforge.serve.batcher import MicroBatcher, ShuttingDown


def fake_embed(texts):
    time.sleep(0.01)
    return np.array([[float(t)] for t in texts], dtype=np.float32), np.ones(len(texts), int)


def test_close_drains_queued_work_then_refuses():
    async def go():
        b = MicroBatcher(fake_embed, max_batch_size=4, max_wait_ms=1)
        await b.start()
        futs = [asyncio.create_task(b.submit([str(i), str(i + 100)])) for i in range(20)]
        await asyncio.sleep(0)  # all queued
        await b.close()
        with pytest.raises(ShuttingDown):
            await b.submit(["1"])
        return [f.result() for f in futs], b.metrics

    results, metrics = asyncio.run(go())
    for i, (emb, tok) in enumerate(results):
        assert emb[:, 0].tolist() == [i, i + 100] and tok.tolist() == [1, 1]
    assert metrics.batch_size.count == 10  # 40 texts, batches of 4, requests never split


def test_large_request_runs_alone_in_chunks():
    async def go():
        b = MicroBatcher(fake_embed, max_batch_size=4, max_wait_ms=1)
        await b.start()
        emb, _ = await b.submit([str(i) for i in range(10)])
        await b.close()
        return emb

    assert asyncio.run(go())[:, 0].tolist() == list(range(10))
