"""W&B: one run per job of a multirun, W&B's own mode settings, failed jobs marked failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from embedforge.tracking import WandbRunLogger, finishes_wandb
from tests.conftest import ROOT
from tests.test_experiments import TINY
from tests.wandb_records import read_run


def run_wandb_sweep(root: Path) -> Path:
    """``python train.py -m ... logger=wandb optim.lr=1e-3,2e-3`` in-process, W&B offline."""
    import runpy

    import torch
    from hydra.core.global_hydra import GlobalHydra

    sweep = root / "multirun"
    overrides = [o for o in TINY if not o.startswith(("optim.lr", "logger"))]
    argv, threads, cwd = sys.argv, torch.get_num_threads(), os.getcwd()
    sys.argv = [
        "train.py",
        "-m",
        *overrides,
        "logger=wandb",
        "logger.log_model=true",
        "optim.lr=1e-3,2e-3",
        f"hydra.sweep.dir={sweep}",
    ]
    torch.set_num_threads(1)
    GlobalHydra.instance().clear()
    try:
        os.chdir(ROOT)
        runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
        os.chdir(cwd)
        GlobalHydra.instance().clear()
    return sweep


def test_offline_multirun_leaves_one_wandb_run_per_job(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("EMBEDFORGE_CACHE", str(tmp_path / "cache"))
    sweep = run_wandb_sweep(tmp_path)
    names = set()
    for job, lr in (("0", 1e-3), ("1", 2e-3)):
        runs = list((sweep / job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs  # job 1 has its own run, not job 0's
        run = read_run(runs[0])
        names.add(runs[0].name)
        assert run.exit_code == 0 and run.job_type == "sweep-job"
        assert run.group.endswith("/multirun") and run.name.startswith(f"{job}:")
        assert run.config["optim.lr"] == lr and run.config["data.batch_size"] == 8  # flat
        assert "config" not in run.config and run.config["logger.log_model"] is True
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        for which in ("baseline", "finetuned", "delta"):
            assert run.summary[f"final/{which}/ndcg@10"] == metrics[which]["ndcg@10"]
        assert run.summary["final/per_query/_type"] == "table-file"
        assert run.summary["final/per_query/nrows"] == metrics["n_queries"]
        assert run.summary["final/per_query_plot/_type"] == "image-file"
        assert run.summary["final/pair_diagnostics/_type"] == "image-file"
        assert any(a.startswith("model:model-") for a in run.artifacts), run.artifacts
    assert len(names) == 2


def test_job_type_group_and_name_outside_a_multirun(tmp_path):
    logger = WandbRunLogger(group="legal", save_dir=str(tmp_path), mode="disabled")
    init = logger._wandb_init
    assert (init["group"], init["job_type"], init["mode"], init["name"]) == (
        "legal",
        "train",
        "disabled",
        None,
    )


class FakeRun:
    def __init__(self) -> None:
        self.exit_codes: list[int] = []

    def finish(self, exit_code: int) -> None:
        self.exit_codes.append(exit_code)


@pytest.mark.parametrize(("fails", "code"), [(False, 0), (True, 1)])
def test_the_job_finishes_its_run_failed_when_it_raised(monkeypatch, fails, code):
    import wandb

    run = FakeRun()
    monkeypatch.setattr(wandb, "run", run)

    @finishes_wandb
    def job() -> float:
        if fails:
            raise ValueError("boom")
        return 1.0

    if fails:
        with pytest.raises(ValueError):
            job()
    else:
        assert job() == 1.0
    assert run.exit_codes == [code]


# slow: ~15 s a case (a fresh interpreter imports wandb). Not in .ci/run: with a key set and no
# network, the child interpreter can hang at exit in W&B's service teardown (seen once in CI here).
@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "netrc_host", "mode"),
    [
        ({}, None, "offline"),  # no key: offline, never a login prompt
        ({"WANDB_API_KEY": "k" * 40}, None, "online"),
        ({"WANDB_API_KEY": "k" * 40, "WANDB_MODE": "offline"}, None, "offline"),
        ({"WANDB_MODE": "disabled"}, None, "disabled"),
        ({"WANDB_BASE_URL": "http://127.0.0.1:9"}, "127.0.0.1:9", "online"),  # self-hosted key
        (
            {"WANDB_BASE_URL": "http://127.0.0.1:9"},
            "api.wandb.ai",
            "offline",
        ),  # key of another host
    ],
)
def test_mode_comes_from_wandbs_own_settings(tmp_path, env, netrc_host, mode):
    home = tmp_path / "home"
    home.mkdir()
    if netrc_host:
        (home / ".netrc").write_text(f"machine {netrc_host}\n  login user\n  password {'p' * 40}\n")
        (home / ".netrc").chmod(0o600)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NETRC"))}
    code = "from embedforge.tracking import wandb_mode; print(wandb_mode())"
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**clean, "HOME": str(home), "WANDB_CONFIG_DIR": str(home / ".config"), **env},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.strip().splitlines()[-1] == mode


def test_log_run_puts_each_delta_interval_in_the_summary(tmp_path):
    from types import SimpleNamespace

    from embedforge.runs import RunMetrics
    from embedforge.tracking import WandbRunLogger

    run = SimpleNamespace(summary={}, log=lambda *a, **k: None)

    class Fake(WandbRunLogger):
        experiment = run  # no wandb.init: the summary is all this test reads

    logger = Fake.__new__(Fake)
    logger.log_model_dir = False
    sig = {"delta": 0.1, "low": 0.02, "high": 0.18, "p_value": 0.01, "significant": True}
    m = RunMetrics(
        baseline={"ndcg@10": 0.5},
        finetuned={"ndcg@10": 0.6},
        delta={"ndcg@10": 0.1},
        selected="last",
        ship={"passed": True},
        significance={"ndcg@10": sig},
    )
    logger.log_run(m, tmp_path)
    assert run.summary["final/delta/ndcg@10"] == 0.1
    assert run.summary["final/delta_ci_low/ndcg@10"] == 0.02
    assert run.summary["final/delta_ci_high/ndcg@10"] == 0.18
    assert run.summary["final/delta_p/ndcg@10"] == 0.01
