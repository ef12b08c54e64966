"""The benchmark scripts' own logic: what their figures rest on (no training, no models)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))


def test_fresh_store_holds_no_embeddings_and_shares_datasets_and_baselines(tmp_path):
    import bench_vs_st

    shared = tmp_path / "cache"
    (shared / "datasets").mkdir(parents=True)
    (shared / "datasets" / "d.json").write_text("{}")
    (shared / "embeddings" / "fingerprint").mkdir(parents=True)  # an earlier run's embeddings
    store = tmp_path / "set" / "embedforge_store"
    (store / "embeddings" / "old").mkdir(parents=True)  # and the previous run's own store

    assert bench_vs_st.fresh_store(shared, store) == store
    assert sorted(p.name for p in store.iterdir()) == ["baselines", "datasets"]
    assert (store / "datasets" / "d.json").is_file()
    (store / "baselines" / "b.json").write_text("{}")  # a baseline the run writes is shared
    assert (shared / "baselines" / "b.json").is_file()
    assert (shared / "embeddings" / "fingerprint").is_dir()  # the shared cache is left alone


def _run(tmp_path, val: dict[float, float], shipped: list[float]):
    run = tmp_path / "run"
    run.mkdir()
    metrics = {
        "val": {"base": val[0.0]},
        "monitor_value": val[1.0],
        "selected": "last",
        "baseline": {"ndcg@10": 0.4, "recall@5": 0.5},
        "finetuned": {"ndcg@10": sum(shipped) / len(shipped), "recall@5": 0.6},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    with (run / "per_query.jsonl").open("w") as f:
        for i, v in enumerate(shipped):
            row = {"qid": f"q{i}", "finetuned": {"ndcg@10": v, "recall@5": v}}
            f.write(json.dumps(row) + "\n")
    points = {
        str(a): {
            "val": {"ndcg@10": v},
            "val_s": 2.0,
            "val_per_query": {"v0": {}},
            "test": {"ndcg@10": 0.0, "recall@5": 0.0},
            "test_per_query": {
                f"q{i}": {"ndcg@10": s + a, "recall@5": s} for i, s in enumerate(shipped)
            },
        }
        for a, v in val.items()
        if 0.0 < a < 1.0
    }
    return run, points


def test_wise_summary_picks_as_eval_wise_alphas_does_and_pairs_the_test_change(tmp_path):
    import bench_wise_real_val

    run, points = _run(tmp_path, {0.0: 0.5, 0.25: 0.6, 0.5: 0.7, 0.75: 0.65, 1.0: 0.7}, [0.2, 0.4])
    s = bench_wise_real_val.summarize(run, points)
    assert s["val_picks"] == 0.5  # the tie with alpha 1 goes to the alpha nearest the base
    assert s["picked_minus_shipped"]["delta"] == pytest.approx(0.5)  # each query + alpha
    assert s["test_minus_shipped"]["0.25"]["recall@5"]["delta"] == pytest.approx(0.0)
    assert s["val_s_per_alpha"] == 2.0 and s["n_test_queries"] == 2


def test_wise_summary_keeps_the_shipped_weights_when_they_validate_best(tmp_path):
    import bench_wise_real_val

    run, points = _run(tmp_path, {0.0: 0.5, 0.5: 0.6, 1.0: 0.8}, [0.3])
    s = bench_wise_real_val.summarize(run, points)
    assert s["val_picks"] == 1.0 and s["picked_minus_shipped"] == {"delta": 0.0}
