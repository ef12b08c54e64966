"""``scripts/push.py`` against a local stand-in of the Hub HTTP API (HF_ENDPOINT on 127.0.0.1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from embedforge.errors import EmbedforgeError
from embedforge.export.model_card import base_model_info, write_model_card
from embedforge.export.onnx_export import write_st_layout
from embedforge.export.push import push_run
from embedforge.runs import RunMetrics
from tests.conftest import ROOT
from tests.export.hub_fake import FakeHub


def make_run(root: Path, tiny_dir: Path, gain: float) -> Path:
    run = root / "run"
    shutil.copytree(tiny_dir, run / "model", ignore=shutil.ignore_patterns("onnx"))  # as trained
    (run / ".hydra").mkdir()
    cfg = {"task": "legal", "ship": {"min_gain": 0.01}, "model": {"name_or_path": "x"}}
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    metrics = RunMetrics(
        task="legal",
        baseline={"ndcg@10": 0.5, "recall@5": 0.4},
        finetuned={"ndcg@10": 0.5 + gain, "recall@5": 0.45},
        eval_split="test",
        eval_set={"name": "legal-summarization/test"},
    )
    metrics.write(run / "metrics.json")
    info = base_model_info("packaged:all-MiniLM-L6-v2")
    write_model_card(run / "model", {**info, "metrics": metrics})
    return run


def test_push_uploads_the_model_card_and_onnx(tiny_dir, tiny_fp32, tmp_path):
    run = make_run(tmp_path, tiny_dir, gain=0.05)
    write_st_layout(run / "model", tiny_fp32, tiny_fp32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    with FakeHub() as hub:
        env |= {
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": "hf_test_token",
            "HF_HOME": str(tmp_path / "hf"),
        }
        argv = [str(run), "--repo", "acme/legal-minilm", "--private", "--with-onnx"]
        out = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "push.py"), *argv],
            env={**env, "PYTHONPATH": os.pathsep.join(sys.path)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip() == f"{hub.url}/acme/legal-minilm/commit/{'a' * 40}"
    assert hub.repos["acme/legal-minilm"]["private"] is True
    meta = hub.validated[-1]  # the README metadata the Hub checked
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["license"] == "apache-2.0" and "embedforge" in meta["tags"]
    assert meta["model-index"][0]["results"][0]["metrics"][0]["type"] == "ndcg_at_10"
    arrived = hub.files["acme/legal-minilm"]
    local = {
        p.relative_to(run / "model").as_posix() for p in (run / "model").rglob("*") if p.is_file()
    }
    assert set(arrived) == local
    assert {"modules.json", "model.safetensors", "README.md", "onnx/model.onnx"} <= set(arrived)
    assert arrived["model.safetensors"] == (run / "model" / "model.safetensors").read_bytes()
    card = arrived["README.md"].decode()
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card and "ndcg_at_10" in card
    auth = {h.get("Authorization") or h.get("authorization") for _, _, h in hub.requests}
    assert auth == {"Bearer hf_test_token"}
    assert not any(
        "hf_test_token" in p.read_text(errors="ignore") for p in run.rglob("*.*") if p.is_file()
    )


def test_push_without_onnx_leaves_it_out(tiny_dir, tiny_fp32, tmp_path, monkeypatch):
    run = make_run(tmp_path, tiny_dir, gain=0.05)
    write_st_layout(run / "model", tiny_fp32, tiny_fp32)
    from huggingface_hub.utils import reset_sessions

    with FakeHub() as hub:
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", hub.url)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        reset_sessions()  # sessions are built for the offline mode the tests run in
        try:
            push_run(run, "acme/m")
        finally:
            reset_sessions()
    assert not [f for f in hub.files["acme/m"] if f.startswith("onnx/")]
    assert "modules.json" in hub.files["acme/m"]


def test_push_refuses_a_run_that_failed_the_ship_gate(tiny_dir, tmp_path, monkeypatch):
    run = make_run(tmp_path, tiny_dir, gain=0.001)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    with pytest.raises(EmbedforgeError, match="refusing to push"):
        push_run(run, "acme/m")
    with pytest.raises(EmbedforgeError, match="onnx missing"):
        push_run(run, "acme/m", with_onnx=True, force=True)
