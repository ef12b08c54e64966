"""A real uvicorn on loopback: the openai client, and no request lost under concurrent load."""

import asyncio

import httpx
import numpy as np
import openai


def test_openai_client_against_the_server(live_server, reference, texts):
    url, _ = live_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="x")
    res = client.embeddings.create(input=texts[:3], model="tiny")  # the client asks for base64
    got = np.array([d.embedding for d in res.data], dtype=np.float32)
    np.testing.assert_allclose(got, reference(texts[:3]), atol=1e-5)
    assert res.usage.prompt_tokens > 0 and res.model == "tiny"


def test_no_request_lost_under_concurrent_load(live_server, reference, texts):
    url, app = live_server

    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            return await asyncio.gather(
                *(
                    c.post("/v1/embeddings", json={"input": texts[i % len(texts)]})
                    for i in range(150)
                )
            )

    rs = asyncio.run(go())
    assert [r.status_code for r in rs] == [200] * 150
    ref = dict(zip(texts, reference(texts)))
    for i, r in enumerate(rs):
        np.testing.assert_allclose(
            r.json()["data"][0]["embedding"], ref[texts[i % len(texts)]], atol=1e-5
        )
    assert app.state.metrics.batch_size.count < 150  # they were batched
    assert httpx.get(url + "/readyz").status_code == 200
