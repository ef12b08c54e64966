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


def test_large_request_takes_turns_and_a_failed_chunk_fails_it_alone():
    """Chunks of a large request alternate with the other requests; when one of its chunks
    fails, it alone gets the error and its later chunks never run."""
    calls = []

    def embed(texts):
        calls.append(list(texts))
        if "15" in texts:
            raise RuntimeError("bad chunk")
        return fake_embed(texts)

    async def go():
        b = MicroBatcher(embed, max_batch_size=4, max_wait_ms=1)
        await b.start()
        big = asyncio.create_task(b.submit([str(i) for i in range(10, 30)]))
        await asyncio.sleep(0)
        small = [asyncio.create_task(b.submit([str(i)])) for i in range(3)]
        done = await asyncio.gather(big, *small, return_exceptions=True)
        await b.close()
        return done

    big, *small = asyncio.run(go())
    assert isinstance(big, RuntimeError)
    assert [s[0][:, 0].tolist() for s in small] == [[0], [1], [2]]
    assert calls[:3] == [["10", "11", "12", "13"], ["0", "1", "2"], ["14", "15", "16", "17"]]
    assert not any("18" in c for c in calls)  # the rest of the failed request was dropped
