import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from embedforge.errors import EmbedforgeError
from embedforge.eval.ship import check_quality_gate
from embedforge.export import runner
from embedforge.export.checks import Bounds, drop_interval, judge
from embedforge.export.quantize import quantize_int8
from embedforge.export.runner import ExportSettings, export_model

ROOT = Path(__file__).resolve().parents[2]
LEGAL = ROOT / ".." / "shared" / "data" / "legal-summarization"
_spec = importlib.util.spec_from_file_location("export_script", ROOT / "scripts" / "export.py")
export_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export_script)

FAST = dict(beir=str(LEGAL), max_queries=30, max_docs=90, parity_texts=24, speed=False)


def _noised(fp32_dir: Path, out_dir: Path, recipe=None) -> Path:
    """A deliberately broken 'int8' variant: every weight matrix gets large Gaussian noise."""
    quantize_int8(fp32_dir, out_dir, recipe)  # copy tokenizer/configs
    model = onnx.load(str(fp32_dir / "model.onnx"))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim == 2:
            noisy = w + rng.normal(0, 2 * float(w.std()), w.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(out_dir / "model.onnx"))
    return out_dir


@pytest.fixture(scope="module")
def report(tiny_dir, tmp_path_factory):
    return export_model(tiny_dir, tmp_path_factory.mktemp("exp") / "out", ExportSettings(**FAST))


def test_report_fields_and_every_variant_good(report):
    out = Path(report["out"])
    assert json.loads((out / "export_report.json").read_text())["variants"].keys() == {
        "fp32",
        "fp32_fused",
        "int8",
        "int8_fused",
    }
    assert "subset" in report["eval_set"] and report["eval_set"]["n_queries"] == 30
    fp32, int8 = report["variants"]["fp32"], report["variants"]["int8"]
    assert fp32["parity"]["min_cosine"] >= 0.999
    assert report["variants"]["fp32_fused"]["parity"]["min_cosine"] >= 0.999
    assert int8["size_mb"] < fp32["size_mb"]
    assert fp32["fused_ops"] is None and int8["fused_ops"] is None
    for name in (
        "fp32_fused",
        "int8_fused",
    ):  # what the tiny BERT fuses (tests/export/test_fuse.py)
        assert report["variants"][name]["fused_ops"]["Attention"] == 2
    assert report["shipped_int8"] == "int8_fused"  # fused and within bounds: shipped
    assert "int8_blockwise" not in report["variants"]  # the fallback only when needed
    from embedforge.serve.backends import load_backend

    assert load_backend(out, "onnx").encoder.model_dir.name == "int8_fused"
    st_int8 = Path(report["model_dir"]) / report["sentence_transformers_files"]["int8"]
    assert "QAttention" in {n.op_type for n in onnx.load(str(st_int8)).graph.node}
    # the bounds export enforces: NDCG@10 / Recall@5 drop, mean cosine
    for v in report["variants"].values():
        assert v["good"], v["failed"]
        assert v["parity"]["mean_cosine"] >= report["bounds"]["min_mean_cosine"]
        for k, bound in (("ndcg@10", "max_ndcg_drop"), ("recall@5", "max_recall_drop")):
            assert report["torch"]["metrics"][k] - v["metrics"][k] <= report["bounds"][bound] + 1e-9


def test_broken_variant_is_not_marked_good(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "quantize_int8", _noised)
    small = {**FAST, "max_queries": 15, "max_docs": 40}
    rep = export_model(tiny_dir, tmp_path / "out", ExportSettings(**small))
    bad = rep["variants"]["int8"]
    assert not bad["good"]
    assert any("mean cosine" in f for f in bad["failed"]), bad["failed"]
    assert rep["variants"]["fp32"]["good"]
    on_disk = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert on_disk["variants"]["int8"]["failed"] == bad["failed"]


def test_fused_int8_out_of_bounds_is_not_shipped(tiny_dir, tmp_path, monkeypatch):
    def quantize(src, out, recipe=None):  # break the fused int8 only
        return (_noised if Path(out).name == "int8_fused" else quantize_int8)(src, out, recipe)

    monkeypatch.setattr(runner, "quantize_int8", quantize)
    small = {**FAST, "max_queries": 15, "max_docs": 40}
    rep = export_model(tiny_dir, tmp_path / "out", ExportSettings(**small))
    assert not rep["variants"]["int8_fused"]["good"] and rep["variants"]["int8"]["good"]
    assert rep["shipped_int8"] == "int8"
    from embedforge.serve.backends import load_backend

    served = load_backend(tmp_path / "out", "onnx")  # the export dir serves what it ships
    assert served.encoder.model_dir.name == "int8"


def test_fast_int8_out_of_bounds_falls_back_to_blockwise(tiny_dir, tmp_path, monkeypatch, capsys):
    def quantize(src, out, recipe=None):  # break both fast int8 variants, not the fallback
        return (_noised if Path(out).name in ("int8", "int8_fused") else quantize_int8)(
            src, out, recipe
        )

    monkeypatch.setattr(runner, "quantize_int8", quantize)
    small = {**FAST, "max_queries": 15, "max_docs": 40}
    rep = export_model(tiny_dir, tmp_path / "out", ExportSettings(**small))
    fb = rep["variants"]["int8_blockwise"]
    assert fb["good"] and rep["shipped_int8"] == "int8_blockwise"
    assert fb["recipe"]["blockwise"] == ["MatMul$"] and fb["fused_ops"]  # on the fused graph
    assert "MatMulNBits" in {n.op_type for n in onnx.load(f"{fb['path']}/model.onnx").graph.node}
    from embedforge.serve.backends import load_backend

    assert load_backend(tmp_path / "out", "onnx").encoder.model_dir.name == "int8_blockwise"
    # the CLI exits 0: what it ships is good, the failed fast variants are reported
    args = ["--beir", str(LEGAL), "--max-queries", "15", "--max-docs", "40", "--no-speed"]
    assert export_script.main([str(tiny_dir), "--out", str(tmp_path / "cli"), *args]) == 0
    out = capsys.readouterr().out
    assert "int8_fused:" in out and "NOT GOOD" in out and "shipped int8: int8_blockwise" in out
    rc = export_script.main(
        [str(tiny_dir), "--out", str(tmp_path / "nofb"), "--no-fallback", *args]
    )
    assert rc == 1 and not (tmp_path / "nofb" / "int8_blockwise").exists()


def test_judge_names_each_failed_bound():
    ref = {"ndcg@10": 0.60, "recall@5": 0.60}
    v = {
        "parity": {"mean_cosine": 0.95, "min_cosine": 0.9},
        "metrics": {"ndcg@10": 0.58, "recall@5": 0.595},
    }
    failed = judge(v, ref, Bounds())
    assert len(failed) == 2 and failed[0].startswith("mean cosine") and "ndcg@10 drop" in failed[1]
    assert judge(v, ref, Bounds(max_ndcg_drop=0.05, min_mean_cosine=0.9)) == []


def _run_dir(tmp_path: Path, tiny_dir: Path, base: float, tuned: float) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_dir, run / "model")
    metrics = {"baseline": {"ndcg@10": base}, "finetuned": {"ndcg@10": tuned}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("ship:\n  min_gain: 0.01\n")
    return run


def test_gate_refuses_a_run_that_does_not_beat_baseline(tmp_path, tiny_dir, capsys):
    run = _run_dir(tmp_path, tiny_dir, base=0.50, tuned=0.505)
    rc = export_script.main([str(run), "--beir", str(LEGAL), "--no-speed"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("error:") and "ship.min_gain=0.01" in err and "--force" in err
    assert not (run / "onnx").exists()


def test_gate_force_exports_and_records_the_override(tmp_path, tiny_dir):
    run = _run_dir(tmp_path, tiny_dir, base=0.50, tuned=0.505)
    args = ["--beir", str(LEGAL), "--max-queries", "10", "--max-docs", "30", "--no-speed"]
    assert export_script.main([str(run), "--force", *args]) == 0
    rep = json.loads((run / "onnx" / "export_report.json").read_text())
    assert rep["gate"]["forced"] and not rep["gate"]["passed"]
    assert (run / "onnx" / "int8" / "model.onnx").is_file()


def test_gate_passes_a_run_that_beats_baseline():
    rec = check_quality_gate({"ndcg@10": 0.5}, {"ndcg@10": 0.52}, 0.01)
    assert rec["passed"] and not rec["forced"] and abs(rec["gain"] - 0.02) < 1e-9
    with pytest.raises(EmbedforgeError, match="no baseline/finetuned"):
        check_quality_gate(None, {"ndcg@10": 0.5}, 0.01)


def _per_query(values: list[float]) -> dict[str, dict[str, float]]:
    return {f"q{i}": {"ndcg@10": v} for i, v in enumerate(values)}


def test_drop_interval_is_paired_seeded_and_covers_the_mean():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 1, 200)
    # a large per-query spread shared by both models: only the paired differences matter
    var = ref - 0.02 + rng.normal(0, 0.01, 200)
    ci = drop_interval(_per_query(list(ref)), _per_query(list(var)), "ndcg@10")
    assert ci == drop_interval(_per_query(list(ref)), _per_query(list(var)), "ndcg@10")
    assert ci["n_queries"] == 200
    assert ci["lo"] < ci["drop"] < ci["hi"] and ci["lo"] > 0.015 and ci["hi"] < 0.025
    # unpaired, the spread of ref (~0.29) would make the interval ~20x wider; paired it is tight
    assert ci["hi"] - ci["lo"] < 0.01
    same = drop_interval(_per_query(list(ref)), _per_query(list(ref)), "ndcg@10")
    assert same["lo"] == same["hi"] == same["drop"] == 0


def test_judge_decides_a_drop_over_the_bound_with_its_interval():
    ref = {"ndcg@10": 0.60, "recall@5": 0.60}
    v = {"parity": {"mean_cosine": 0.99}, "metrics": {"ndcg@10": 0.587, "recall@5": 0.60}}
    # a 0.013 drop whose interval reaches 0: noise of the subset, not a failure
    v["drop_ci"] = {"ndcg@10": {"drop": 0.013, "lo": -0.002, "hi": 0.028}}
    assert judge(v, ref, Bounds()) == []
    # the same point drop, measured tightly enough to exclude 0: a failure, interval named
    v["drop_ci"] = {"ndcg@10": {"drop": 0.013, "lo": 0.004, "hi": 0.022}}
    (failed,) = judge(v, ref, Bounds())
    assert failed.startswith("ndcg@10 drop 0.0130 > 0.01") and "CI [0.0040, 0.0220]" in failed


def test_each_text_is_encoded_once_and_a_second_export_reads_the_store(
    tiny_dir, tmp_path, monkeypatch
):
    """The eval's embeddings serve the parity check (no second encode of its texts), and the
    PyTorch reference goes through the embedding store: a second export encodes nothing."""
    from omegaconf import OmegaConf

    store = {"root": str(tmp_path / "s"), "dtype": "float32", "max_gb": 1}  # as the CLI passes it
    small = {**FAST, "fuse": False, "fallback": None, "default_store": OmegaConf.create(store)}
    first = export_model(tiny_dir, tmp_path / "a", ExportSettings(**small))
    n_texts = first["eval_set"]["n_docs"] + first["eval_set"]["n_queries"]

    def store_counts(report):  # summed over the query and document fingerprints (prompts differ)
        counts = report["torch"]["encodes"]["by_weights"].values()
        return sum(c["texts_encoded"] for c in counts), sum(c["cache_hits"] for c in counts)

    assert store_counts(first) == (n_texts, 0)
    for v in first["variants"].values():
        assert v["texts_encoded"] == n_texts  # parity's texts came from the eval's embeddings
    second = export_model(tiny_dir, tmp_path / "b", ExportSettings(**small))
    assert store_counts(second) == (0, n_texts)
    assert second["torch"]["metrics"] == first["torch"]["metrics"]
