from pathlib import Path

import numpy as np
import pytest

from embedforge.models.encoder import Encoder
from embedforge.serve.app import create_app
from embedforge.serve.backends import TorchBackend
from embedforge.serve.config import ServeConfig
from tests.faults.conftest import on_uvicorn

LEGAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "legal-summarization"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    enc = Encoder.tiny(query_prefix="query: ", doc_prefix="", dropout=0.0)
    return enc.save(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def backend(model_dir):
    return TorchBackend(model_dir)


@pytest.fixture(scope="session")
def reference(model_dir):
    """``reference(texts, prompt_name=None)``: embeddings from an independent
    ``SentenceTransformer.encode`` of the saved model dir, one text at a time (no padding)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")

    def encode(texts, prompt_name=None):
        rows = [st.encode([t], prompt_name=prompt_name, convert_to_numpy=True)[0] for t in texts]
        return np.stack(rows).astype(np.float32)

    return encode


@pytest.fixture(scope="session")
def texts() -> list[str]:
    from embedforge.io import read_jsonl

    return [r["text"] for r in read_jsonl(LEGAL / "queries.jsonl")[:64] if r["text"].strip()]


@pytest.fixture()
def serve_config() -> ServeConfig:
    """The live server's config (a test module may override this fixture)."""
    return ServeConfig(max_batch_size=16, max_wait_ms=20, model_name="tiny")


@pytest.fixture()
def live_server(backend, serve_config):
    """A real uvicorn on 127.0.0.1:<free port> in a thread; yields its base URL."""
    app = create_app(backend, serve_config)
    with on_uvicorn(app) as url:
        yield url, app
