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
    assert "| ndcg@10 | 0.5000 | 0.5500 | +0.0500 |\n" in text  # a run without intervals
    assert "| recall@5 | 0.4000 | 0.4700 | +0.0700 |" in text
    metrics.significance = {"ndcg@10": {"low": 0.01, "high": 0.09, "p_value": 0.02}}
    with_ci = write_model_card(tmp_path / "card", {"metrics": metrics}).read_text()
    assert "| ndcg@10 | 0.5000 | 0.5500 | +0.0500 | [+0.0100, +0.0900] |" in with_ci
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in text
    assert "2707 queries" in text and "1234" in text and "name_or_path: packaged" in text
    assert "encode_query" in text and 'backend="onnx"' in text and "embeddings.create" in text
    assert "'query: '" in text  # the saved prompts
    assert SentenceTransformer(str(model_dir), device="cpu").prompts["query"] == "query: "


def test_card_keeps_sentence_transformers_card_and_has_valid_hub_metadata(tiny_dir, tmp_path):
    import shutil

    from huggingface_hub import ModelCard

    from embedforge.export.model_card import base_model_info

    model_dir = tmp_path / "run" / "model"
    shutil.copytree(tiny_dir, model_dir)
    st_card = (model_dir / "README.md").read_text()
    assert "Full Model Architecture" in st_card  # what sentence-transformers wrote on save
    info = base_model_info("packaged:all-MiniLM-L6-v2")
    assert info == {"base_model": "sentence-transformers/all-MiniLM-L6-v2", "license": "apache-2.0"}
    metrics = RunMetrics(
        baseline={"ndcg@10": 0.5, "recall@5": 0.4},
        finetuned={"ndcg@10": 0.55, "recall@5": 0.47},
        eval_split="test",
        eval_set={"name": "legal-summarization/test"},
    )
    for _ in range(2):  # a rewrite replaces our section instead of stacking a second one
        write_model_card(model_dir, {**info, "metrics": metrics, "name": "legal-minilm"})
    text = (model_dir / "README.md").read_text()
    assert text.count("<!-- embedforge -->") == 1 and "Full Model Architecture" in text
    card = ModelCard(text)  # parses and validates the metadata
    data = card.data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.license == "apache-2.0" and data.datasets == ["legal-summarization"]
    assert {"sentence-transformers", "embedforge", "dense"} <= set(data.tags)
    results = {(r.metric_type, r.metric_value, r.dataset_split) for r in data.eval_results}
    assert results == {("ndcg_at_10", 0.55, "test"), ("recall_at_5", 0.47, "test")}
    assert data.model_name == "legal-minilm" and "model-index" in text
