"""The served model id names the model, not the folder (``onnx``); start-up says what loaded."""

from __future__ import annotations

import json
from types import SimpleNamespace

from embedforge.cli import serve


def test_served_model_id_from_the_run_or_the_first_informative_folder(tmp_path):
    run = tmp_path / "2026-12-07_03-00-00"
    (run / "onnx" / "int8_fused").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"task": "icd10"}))
    assert serve.served_model_id(run / "onnx" / "int8_fused") == "embedforge-icd10"
    assert serve.served_model_id(run / "onnx") == "embedforge-icd10"
    bare = tmp_path / "contracts-encoder" / "onnx" / "int8"
    bare.mkdir(parents=True)
    assert serve.served_model_id(bare) == "contracts-encoder"


def test_startup_line_names_id_variant_and_dimension(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    variant = run / "onnx" / "int8_fused"
    variant.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"task": "icd10"}))
    backend = SimpleNamespace(encoder=SimpleNamespace(model_dir=variant), dim=384)
    monkeypatch.setattr("embedforge.serve.backends.load_backend", lambda *a, **k: backend)
    monkeypatch.setattr("embedforge.serve.app.create_app", lambda b, cfg: cfg)
    served = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: served.update(cfg=app))
    assert serve.main([str(run), "--backend", "onnx", "--no-calibrate"]) == 0
    assert served["cfg"].model_name == "embedforge-icd10"
    assert (
        f"serving embedforge-icd10: int8_fused, dim 384, from {variant}" in capsys.readouterr().out
    )
