"""Experiments and sweeps compose; a local multirun records every job and summarises the sweep."""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from embedforge.config import validate
from tests.conftest import ROOT, SHARED_DATA

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))

# the tiny, fast run used by the multirun, reproduce and resume tests (~4 s a run)
TINY = [
    "model=tiny",
    "trainer=debug",
    "data.chapters=[3]",
    "logger=none",
    "data.batch_size=8",
    "data.max_train_pairs=32",
    "trainer.max_steps=6",
    "trainer.max_epochs=3",
    "data.eval_max_queries=20",
    "data.eval_max_docs=100",
    "data.val_max_queries=20",
    "data.val_max_docs=100",
    "optim.lr=1e-3",
]


@pytest.fixture()
def shared_data(monkeypatch):
    monkeypatch.setenv("EMBEDFORGE_DATA", str(SHARED_DATA))


def test_there_are_recipes_and_sweeps():
    assert {
        "cuad",
        "legal_summarization",
        "offline_domain_adaptation",
        "real_synthetic_mix",
        "hard_negatives_triplet",
        "large_batch_cached",
    } <= set(EXPERIMENTS)
    assert len(SWEEPS) >= 5


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(compose, shared_data, name):
    text = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_")
    cfg = compose(f"experiment={name}")
    validate(cfg)
    path = cfg.data.get("path")  # the ICD-10 demo builds its own dataset: no path
    assert cfg.tags and (path is None or Path(path).is_dir()), path
    assert cfg.monitor == "val/ndcg@10"


def test_recipes_set_what_they_promise(compose, shared_data):
    hn = compose("experiment=hard_negatives_triplet")
    assert hn.loss._target_.endswith("TripletLoss") and hn.data.hard_negatives.num == 3
    big = compose("experiment=large_batch_cached")
    assert (big.data.batch_size, big.module.mini_batch_size) == (256, 32)
    off = compose("experiment=offline_domain_adaptation")
    assert (
        off.generator._target_.endswith("OfflineGenerator")
        and off.data.generate
        and not off.data.train_queries
    )
    mix = compose("experiment=real_synthetic_mix")
    assert (
        mix.data.train_queries
        and mix.data.generate
        and (mix.data.mix_real, mix.data.mix_synthetic) == (1, 3)
    )
    legal = compose("experiment=legal_summarization", "model=e5_small")  # composes with any model
    assert legal.data.path.endswith("legal-summarization") and legal.model.query_prefix == "query: "


def test_data_dir_defaults_to_shared_beside_the_repo(compose, monkeypatch):
    monkeypatch.delenv("EMBEDFORGE_DATA", raising=False)
    cfg = compose("experiment=cuad")
    assert cfg.data.path == "../shared/data/cuad-clause-retrieval"  # from the repo root, as in CI
    assert (ROOT / cfg.data.path).resolve() == (SHARED_DATA / "cuad-clause-retrieval").resolve()


def sweep_points(spec: dict, full_grid: bool = True) -> list[dict]:
    """Grid: every combination. Random/bayes: every listed value and both ends of every range, one
    parameter at a time (the others at their first value)."""
    fixed, axes = {}, {}
    for k, p in spec["parameters"].items():
        if "value" in p:
            fixed[k] = p["value"]
        elif "values" in p:
            axes[k] = p["values"]
        else:
            axes[k] = [p["min"], p["max"]]
    if full_grid:
        return [fixed | dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    first = {k: v[0] for k, v in axes.items()}
    return [fixed | first | {k: v} for k, vs in axes.items() for v in vs]


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_parameter_set_composes(compose, shared_data, path):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    spec = yaml.safe_load(path.read_text())
    assert spec["program"] == "train.py"
    assert spec["command"] == ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
    assert spec["metric"] == {"name": compose().monitor, "goal": "maximize"}
    points = sweep_points(spec, full_grid=spec["method"] == "grid")
    assert len(points) >= 2
    for point in points:
        # the exact arguments `wandb agent` appends for this point
        args = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})[
            "args_no_hyphens"
        ]
        cfg = compose(*args)
        validate(cfg)
        assert cfg.logger._target_ == "embedforge.tracking.WandbRunLogger"
        assert (
            cfg.logger.group == cfg.task == cfg.data.name
            and list(cfg.logger.tags) == list(cfg.tags) != []
        )
        for k, v in point.items():
            if "." in k:
                got = cfg
                for part in k.split("."):
                    got = got[part]
                assert got == pytest.approx(v) if isinstance(v, float) else got == v, (k, got, v)


def run_tiny_sweep(root: Path) -> Path:
    """``python train.py -m ... loss=mnrl,triplet optim.lr=1e-3,2.0`` in-process (one torch thread):
    2 jobs train, 2 fail validation. Run once per session, shared with test_reproduce.py."""
    sweep = root / "multirun"
    if (sweep / "sweep_summary.json").exists():  # already run in this session
        return sweep
    import runpy

    import torch
    from hydra.core.global_hydra import GlobalHydra

    overrides = [o for o in TINY if not o.startswith("optim.lr")]
    argv, threads, cwd = sys.argv, torch.get_num_threads(), os.getcwd()
    sys.argv = [
        "train.py",
        "-m",
        *overrides,
        "loss=mnrl,triplet",
        "optim.lr=1e-3,2.0",
        "keep_checkpoints=last",  # test_reproduce.py compares them
        f"hydra.sweep.dir={sweep}",
    ]
    torch.set_num_threads(1)
    GlobalHydra.instance().clear()
    try:
        os.chdir(ROOT)
        runpy.run_path(str(ROOT / "train.py"), run_name="__main__")  # as `python train.py -m ...`
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
        os.chdir(cwd)
        GlobalHydra.instance().clear()
    return sweep


@pytest.fixture()
def tiny_sweep(tmp_path_factory) -> Path:
    return run_tiny_sweep(tmp_path_factory.getbasetemp())


def test_multirun_records_every_job_and_summarises(tiny_sweep):
    jobs = {p.name: p for p in tiny_sweep.iterdir() if p.is_dir()}
    assert sorted(jobs) == ["0", "1", "2", "3"]
    for ok in ("0", "2"):
        m = json.loads((jobs[ok] / "metrics.json").read_text())
        assert m["finetuned"]["ndcg@10"] > 0 and m["training"]["steps"] == 6
    for bad in ("1", "3"):
        failed = json.loads((jobs[bad] / "failed.json").read_text())
        assert "optim.lr" in failed["error"] and "optim.lr=2.0" in failed["overrides"]
        assert not (jobs[bad] / "metrics.json").exists()
    summary = json.loads((tiny_sweep / "sweep_summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["ok", "ok", "failed", "failed"]
    assert summary["jobs"][0]["val/ndcg@10"] >= summary["jobs"][1]["val/ndcg@10"]
    assert {j["overrides"] for j in summary["jobs"]} == {
        "loss=mnrl optim.lr=0.001",
        "loss=triplet optim.lr=0.001",
        "loss=mnrl optim.lr=2.0",
        "loss=triplet optim.lr=2.0",
    }
    assert "2 ok, 2 failed" in (tiny_sweep / "sweep_summary.md").read_text()


def test_compare_runs_lists_both_jobs_with_the_differing_keys(tiny_sweep, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    import compare_runs

    assert compare_runs.main([str(tiny_sweep / "0"), str(tiny_sweep / "2")]) == 0
    out = capsys.readouterr().out
    assert (
        "| 0 |" in out
        and "| 2 |" in out
        and "MultipleNegativesRankingLoss" in out
        and "TripletLoss" in out
    )
    assert "differing keys: loss._target_" in out
    assert compare_runs.main([str(tiny_sweep), "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["differing_keys"] == ["loss._target_", "optim.lr"]
    assert [r["status"] for r in data["runs"]] == ["ok", "ok", "failed", "failed"]
