"""The server in-process (TestClient / ASGI transport) with the tiny model."""

import asyncio
import base64
import threading

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from embedforge.serve.app import create_app
from embedforge.serve.config import ServeConfig


@pytest.fixture()
def client(backend):
    cfg = ServeConfig(max_inputs=8, max_chars=500, model_name="tiny")
    with TestClient(create_app(backend, cfg)) as c:
        yield c


def test_embeddings_shape_order_and_prefix(client, backend, reference, texts):
    r = client.post("/v1/embeddings", json={"input": texts[:5], "input_type": "query"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "tiny"
    assert [d["index"] for d in body["data"]] == list(range(5))
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert got.shape == (5, backend.dim)
    np.testing.assert_allclose(got, reference(texts[:5], "query"), atol=1e-5)
    assert not np.allclose(got, reference(texts[:5]), atol=1e-4)  # prefix really applied
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 5


def test_base64_and_single_string(client, reference, texts):
    r = client.post("/v1/embeddings", json={"input": texts[0], "encoding_format": "base64"})
    emb = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(emb, reference(texts[:1])[0], atol=1e-5)


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        (b'{"input": ["a",', 400, "malformed JSON"),
        ({"input": []}, 422, "non-empty"),
        ({"input": ""}, 422, "non-empty"),
        ({"input": [1.5, 2]}, 422, "input"),
        ({"input": "x", "dimensions": 0}, 422, "dimensions"),
        ({"input": ["x"] * 9}, 413, "too many inputs: 9 > 8"),
        ({"input": ["ok", "y" * 501]}, 413, "input[1] has 501 characters > 500"),
        ({"input": "x", "input_type": "passage"}, 422, "input_type"),
    ],
)
def test_bad_requests_get_4xx_with_a_message(client, payload, status, needle):
    if isinstance(payload, bytes):
        r = client.post(
            "/v1/embeddings", content=payload, headers={"content-type": "application/json"}
        )
    else:
        r = client.post("/v1/embeddings", json=payload)
    assert r.status_code == status
    assert needle in r.json()["error"]["message"]


def test_probes_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    client.post("/v1/embeddings", json={"input": ["a b c"]})
    client.post("/v1/embeddings", json={"input": []})
    text = client.get("/metrics").text
    for line in [
        'embedforge_requests_total{code="200"} 1',
        'embedforge_requests_total{code="422"} 1',
        "embedforge_queue_depth 0",
        "embedforge_batch_size_count",
        "embedforge_request_latency_seconds_bucket",
    ]:
        assert line in text


async def _concurrent(app, bodies):
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await asyncio.gather(*(c.post("/v1/embeddings", json=b) for b in bodies))


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(backend, reference, texts):
    app = create_app(backend, ServeConfig(max_batch_size=16, max_wait_ms=50))
    bodies = [{"input": texts[i : i + 1 + i % 3]} for i in range(24)]
    rs = asyncio.run(_concurrent(app, bodies))
    for b, r in zip(bodies, rs):
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, reference(b["input"]), atol=1e-5)
    m = app.state.metrics
    assert m.batch_size.count < 24 + 1  # 24 requests (+ warm-up) shared fewer model calls
    assert m.batch_size.sum == sum(len(b["input"]) for b in bodies) + 1


class Blocking:
    """A backend whose model call waits on an event: fills the queue deterministically."""

    def __init__(self, inner):
        self.inner, self.prompts, self.dim = inner, inner.prompts, inner.dim
        self.max_tokens, self.count_tokens = inner.max_tokens, inner.count_tokens
        self.call_cost = inner.call_cost
        self.gate = threading.Event()
        self.gate.set()

    def embed(self, texts):
        self.gate.wait(timeout=30)
        return self.inner.embed(texts)


def _gated_posts(app, slow, n, **kw):
    """``n`` concurrent posts while the model is blocked; the gate opens after 0.5 s."""

    async def go():
        async with app.router.lifespan_context(app):
            slow.gate.clear()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                tasks = [
                    asyncio.create_task(c.post("/v1/embeddings", json={"input": f"t {i}"}))
                    for i in range(n)
                ]
                await asyncio.sleep(0.5)
                slow.gate.set()
                return await asyncio.gather(*tasks), app.state.metrics.render()

    return asyncio.run(go())


def test_start_up_times_the_model_on_its_model_thread(backend, monkeypatch):
    """Before it is ready the server learns its model's call cost, on the batcher's model thread
    (torch keeps an OpenMP team per calling thread); ``calibrate=False`` keeps the backend's."""
    threads = []

    def timed(embed, count_tokens):
        threads.append(threading.current_thread().name)
        return 123

    monkeypatch.setattr("embedforge.serve.backends.measure_call_cost", timed)

    async def start_and_stop(app):
        async with app.router.lifespan_context(app):
            pass

    on, off = Blocking(backend), Blocking(backend)  # wrappers: the shared backend keeps its cost
    asyncio.run(start_and_stop(create_app(on, ServeConfig())))
    asyncio.run(start_and_stop(create_app(off, ServeConfig(calibrate=False))))
    assert on.call_cost == 123 and off.call_cost == backend.call_cost
    assert len(threads) == 1 and threads[0].startswith("embed")


def test_queue_full_gets_503_with_retry_after_and_nothing_is_lost(backend):
    slow = Blocking(backend)
    app = create_app(slow, ServeConfig(max_batch_size=2, max_wait_ms=0, max_queue=4))
    rs, _ = _gated_posts(app, slow, 12)
    codes = [r.status_code for r in rs]
    assert 503 in codes and 200 in codes
    for r in rs:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and "queue full" in r.json()["error"]["message"]
        else:
            assert len(r.json()["data"]) == 1


def test_limit_concurrency_refuses_with_503(backend):
    slow = Blocking(backend)
    app = create_app(slow, ServeConfig(limit_concurrency=2, max_wait_ms=0))
    rs, metrics = _gated_posts(app, slow, 6)
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 200, 503, 503, 503, 503]
    refused = next(r for r in rs if r.status_code == 503)
    assert "limit 2" in refused.json()["error"]["message"] and refused.headers["retry-after"]
    assert 'embedforge_requests_total{code="503"} 4' in metrics


def test_request_deadline_gives_504(backend):
    slow = Blocking(backend)
    app = create_app(slow, ServeConfig(request_timeout_s=0.2, max_wait_ms=0))
    rs, metrics = _gated_posts(app, slow, 3)
    assert [r.status_code for r in rs] == [504] * 3
    assert "within 0.2 s" in rs[0].json()["error"]["message"]
    assert 'embedforge_requests_total{code="504"} 3' in metrics
