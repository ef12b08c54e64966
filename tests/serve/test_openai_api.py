"""The server through the official ``openai`` client (real uvicorn on 127.0.0.1)."""

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from embedforge.serve.app import create_app
from embedforge.serve.config import ServeConfig


@pytest.fixture()
def client(live_server):
    url, _ = live_server
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def _rows(resp) -> np.ndarray:
    return np.array([d.embedding for d in resp.data], dtype=np.float32)


def test_plain_client_call_gets_document_embeddings(client, reference, texts):
    resp = client.embeddings.create(model="tiny", input=texts[:3])
    np.testing.assert_allclose(_rows(resp), reference(texts[:3]), atol=1e-5)
    assert resp.usage.prompt_tokens > 3 and resp.model == "tiny"


def test_model_name_suffix_chooses_the_prompt(client, reference, texts):
    q = client.embeddings.create(model="tiny-query", input=texts[:3])
    np.testing.assert_allclose(_rows(q), reference(texts[:3], "query"), atol=1e-5)
    d = client.embeddings.create(model="tiny-document", input=texts[:3])
    np.testing.assert_allclose(_rows(d), reference(texts[:3]), atol=1e-5)


def test_dimensions_truncate_and_renormalize(client, backend, reference, texts):
    dims = backend.dim // 2
    got = _rows(client.embeddings.create(model="tiny", input=texts[:4], dimensions=dims))
    full = reference(texts[:4])[:, :dims]
    assert got.shape == (4, dims)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-5)
    b64 = client.embeddings.create(model="tiny", input=texts[:4], dimensions=dims)  # base64 default
    assert len(b64.data[0].embedding) == dims


def test_dimensions_larger_than_the_model_is_422_with_string_codes(client, backend):
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.embeddings.create(model="tiny", input="a lease", dimensions=backend.dim + 1)
    err = e.value.body
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_value"
    assert err["param"] == "dimensions" and str(backend.dim) in err["message"]


def test_token_id_arrays_single_and_batched(client, backend, reference):
    tok = backend.encoder.model.tokenizer
    texts = ["the tenant paid the rent late", "a court ruling on contract law"]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    single = _rows(client.embeddings.create(model="tiny", input=ids[0]))
    batched = _rows(client.embeddings.create(model="tiny", input=ids))
    np.testing.assert_allclose(single[0], reference(texts[:1])[0], atol=1e-5)
    np.testing.assert_allclose(batched, reference(texts), atol=1e-5)


def test_models_endpoint_lists_the_served_names(client):
    assert [m.id for m in client.models.list()] == ["tiny", "tiny-query", "tiny-document"]
    assert client.models.retrieve("tiny-query").owned_by == "embedforge"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("other")
    assert e.value.body["code"] == "not_found"


def test_default_input_type_is_a_server_setting(backend, reference, texts):
    cfg = ServeConfig(model_name="tiny", default_input_type="query")
    with TestClient(create_app(backend, cfg)) as c:
        body = c.post("/v1/embeddings", json={"input": texts[:2]}).json()
        doc = c.post("/v1/embeddings", json={"input": texts[:2], "input_type": "document"}).json()
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, reference(texts[:2], "query"), atol=1e-5)
    got_doc = np.array([d["embedding"] for d in doc["data"]], dtype=np.float32)
    np.testing.assert_allclose(got_doc, reference(texts[:2]), atol=1e-5)
