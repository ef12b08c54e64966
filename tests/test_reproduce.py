"""Reproduction from a run dir gives identical metrics; a killed run resumes to the same result."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from embedforge.rerun import rerun
from embedforge.runs import diff_metrics, load_summary
from embedforge.train.resume import SimulatedCrash
from tests.conftest import ROOT
from tests.test_experiments import run_tiny_sweep

sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture()
def tiny_sweep(tmp_path_factory):
    return run_tiny_sweep(tmp_path_factory.getbasetemp())


@pytest.fixture()
def one_thread():
    """One torch thread, as the tiny sweep: the same float summation order, bitwise-equal results."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_reproduce_gives_identical_metrics_and_flags_a_mismatch(
    tiny_sweep, tmp_path, one_thread, capsys
):
    import reproduce

    old = tmp_path / "old"
    shutil.copytree(tiny_sweep / "0", old)
    metrics = json.loads((old / "metrics.json").read_text())
    metrics["finetuned"]["mrr@10"] += 0.01  # tampered: the only difference the re-run may report
    (old / "metrics.json").write_text(json.dumps(metrics))
    assert reproduce.main([str(old), "--out", str(tmp_path / "new"), "--tolerance", "0"]) == 1
    out = capsys.readouterr().out
    mismatches = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert len(mismatches) == 1 and mismatches[0].startswith("finetuned.mrr@10"), out
    new = json.loads((tmp_path / "new" / "metrics.json").read_text())
    assert new["provenance"]["pairs_sha"] == metrics["provenance"]["pairs_sha"]
    assert new["provenance"]["eval_sha"] == metrics["provenance"]["eval_sha"]
    assert load_summary(tmp_path / "new").overrides == load_summary(tiny_sweep / "0").overrides + [
        "resume=false"
    ]


def test_killed_run_resumes_to_the_uninterrupted_result(tiny_sweep, tmp_path, one_thread):
    import resume

    run = tmp_path / "killed"
    crash = [
        "+callbacks.crash._target_=embedforge.train.resume.CrashAtStep",
        "+callbacks.crash.step=3",
    ]
    with pytest.raises(SimulatedCrash):
        rerun(tiny_sweep / "0", run, crash)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (
        last["global_step"] == 2 and not (run / "metrics.json").exists()
    )  # checkpoint of step 2, mid-epoch

    assert resume.main([str(run), "~callbacks.crash"]) == 0
    full = json.loads((tiny_sweep / "0" / "metrics.json").read_text())
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["training"]["steps"] == 6 and resumed["training"]["epochs_completed"] >= 1
    assert diff_metrics(full, resumed, tolerance=0.0) == []
    a = torch.load(
        tiny_sweep / "0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    b = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["optimizer_states"][0]["state"][0]["exp_avg"].equal(
        b["optimizer_states"][0]["state"][0]["exp_avg"]
    )
    assert load_summary(run).overrides[-2:] == ["resume=true", "~callbacks.crash"]


def test_a_config_saved_before_conf_callbacks_gets_the_default_callbacks():
    from omegaconf import OmegaConf

    from embedforge.rerun import _add_default_callbacks

    old = OmegaConf.create({"monitor": "val/ndcg@10", "callbacks": {"crash": {"step": 3}}})
    _add_default_callbacks(old)
    assert set(old.callbacks) == {"checkpoint", "resume", "lr_monitor", "crash"}
    assert OmegaConf.to_container(old.callbacks.checkpoint)["monitor"] == "${monitor}"
    new = OmegaConf.create({"callbacks": {"checkpoint": {"monitor": "val/mrr@10"}}})
    _add_default_callbacks(new)  # a config that names its callbacks keeps them
    assert set(new.callbacks) == {"checkpoint"}


def test_a_config_saved_before_eval_empty_queries_keeps_skipping_them():
    from omegaconf import OmegaConf, open_dict

    from embedforge.rerun import _keep_empty_query_semantics

    old = OmegaConf.create({"eval": {"metrics": ["ndcg@10"]}})
    with open_dict(old):
        _keep_empty_query_semantics(old)
    assert old.eval.empty_queries == "skip"
    new = OmegaConf.create({"eval": {"empty_queries": "zero"}})
    _keep_empty_query_semantics(new)
    assert new.eval.empty_queries == "zero"
