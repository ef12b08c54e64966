from pathlib import Path

import pytest

from embedforge.eval.retrieval import RetrievalSet
from embedforge.export.eval_set import beir_eval_set, subset
from embedforge.models.encoder import Encoder

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
LEGAL = DATA / "legal-summarization"


@pytest.fixture(scope="session")
def legal_small() -> RetrievalSet:
    """40 real queries of legal-summarization with their relevant docs + distractors (120 docs)."""
    return subset(beir_eval_set(LEGAL, "test"), max_queries=40, max_docs=120)


@pytest.fixture(scope="session")
def real_texts(legal_small) -> list[str]:
    return list(legal_small.corpus.values())[:24] + list(legal_small.queries.values())[:24]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny random BERT with a query prompt, saved as a SentenceTransformer dir."""
    enc = Encoder.tiny(query_prefix="query: ", doc_prefix="passage: ", dropout=0.0)
    return enc.save(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_fp32(tiny_dir, tmp_path_factory) -> Path:
    """``tiny_dir`` exported to ONNX fp32 (pooling + normalize inside)."""
    from embedforge.export.onnx_export import export_onnx

    return export_onnx(tiny_dir, tmp_path_factory.mktemp("onnx") / "fp32")
