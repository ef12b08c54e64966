"""LangChain's ``OpenAIEmbeddings`` against the server (skipped where langchain-openai is absent).

LangChain's default (``check_embedding_ctx_length=True``) tokenizes with tiktoken and sends
OpenAI's token ids; a server started with ``token_ids="cl100k_base"`` decodes them with the same
encoding. tiktoken downloads its BPE files on first use, so here both sides use a byte-level
encoding built locally under that name (the decode path is the same).
"""

import numpy as np
import pytest

from embedforge.serve.config import ServeConfig

langchain_openai = pytest.importorskip("langchain_openai")


@pytest.fixture()
def serve_config() -> ServeConfig:
    return ServeConfig(model_name="tiny", token_ids="cl100k_base")


@pytest.fixture(autouse=True)
def local_tiktoken(monkeypatch):
    """``cl100k_base`` as a byte-level tiktoken encoding (no download)."""
    import tiktoken

    enc = tiktoken.Encoding(
        name="cl100k_base",
        pat_str=r"\S+|\s+",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={"<|endoftext|>": 256},
    )
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: enc)
    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda name: enc)
    return enc


def test_langchain_defaults_send_token_ids_the_server_decodes(live_server, reference, texts):
    url, _ = live_server
    emb = langchain_openai.OpenAIEmbeddings(base_url=url + "/v1", api_key="unused")
    assert emb.check_embedding_ctx_length and emb.model == "text-embedding-ada-002"  # defaults
    docs = np.array(emb.embed_documents(texts[:3]), dtype=np.float32)
    np.testing.assert_allclose(docs, reference(texts[:3]), atol=1e-5)


def test_langchain_embeddings_query_and_documents(live_server, reference, texts):
    url, _ = live_server
    emb = langchain_openai.OpenAIEmbeddings(
        model="tiny-document",
        base_url=url + "/v1",
        api_key="unused",
        check_embedding_ctx_length=False,
    )
    docs = np.array(emb.embed_documents(texts[:3]), dtype=np.float32)
    np.testing.assert_allclose(docs, reference(texts[:3]), atol=1e-5)
    query = langchain_openai.OpenAIEmbeddings(
        model="tiny-query", base_url=url + "/v1", api_key="unused", check_embedding_ctx_length=False
    )
    q = np.array(query.embed_query(texts[0]), dtype=np.float32)
    np.testing.assert_allclose(q, reference(texts[:1], "query")[0], atol=1e-5)


def test_langchain_dimensions(live_server, backend):
    url, _ = live_server
    emb = langchain_openai.OpenAIEmbeddings(
        model="tiny",
        base_url=url + "/v1",
        api_key="unused",
        dimensions=backend.dim // 2,
        check_embedding_ctx_length=False,
    )
    v = np.array(emb.embed_query("a lease agreement"))
    assert v.shape == (backend.dim // 2,) and abs(np.linalg.norm(v) - 1) < 1e-5
