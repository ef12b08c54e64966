from sentence_transformers import SentenceTransformer

from embedforge.export.model_card import write_model_card
from embedforge.runs import RunMetrics


def test_model_card_has_metrics_table_data_config_and_loads(tiny_dir, tmp_path):
    import shutil

    model_dir = tmp_path / "run" / "model"
    shutil.copytree(tiny_dir, model_dir)
    metrics = RunMetrics(
        baseline={"ndcg@10": 0.5, "recall@5": 0.4},
        finetuned={"ndcg@10": 0.55, "recall@5": 0.47},
        eval_split="test",
        n_queries=290,
        n_docs=445,
        n_train_pairs=1234,
        eval_set={"name": "legal-summarization"},
    )
    path = write_model_card(
        model_dir,
        {
            "base_model": "sentence-transformers/all-MiniLM-L6-v2",
            "data": {"cuad-clause-retrieval/train": "2707 queries", "synthetic": 500},
            "config": "model:\n  name_or_path: packaged:all-MiniLM-L6-v2\n",
            "metrics": metrics,
        },
    )
    text = path.read_text()
    assert "| ndcg@10 | 0.5000 | 0.5500 | +0.0500 |" in text
    assert "| recall@5 | 0.4000 | 0.4700 | +0.0700 |" in text
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in text
    assert "2707 queries" in text and "1234" in text and "name_or_path: packaged" in text
    assert "encode_query" in text and "OnnxEncoder" in text and "embeddings.create" in text
    assert "'query: '" in text  # the saved prompts
    assert SentenceTransformer(str(model_dir), device="cpu").prompts["query"] == "query: "
