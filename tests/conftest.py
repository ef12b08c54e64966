"""Shared fixtures: the tiny in-process model, the shared real datasets, config composition."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import embedforge  # noqa: F401  (registers the ${ef.*} config resolvers)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EMBEDFORGE_DATA", ROOT.parent / "shared" / "data"))
LEGAL = SHARED_DATA / "legal-summarization"
CUAD = SHARED_DATA / "cuad-clause-retrieval"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: what a test module (or its folder's conftest) names when it reads the shared datasets
_SHARED_NAMES = ("SHARED_DATA", "LEGAL", "CUAD", "shared_data", '"shared"')
_NO_DATA = (
    f"needs the shared datasets at {SHARED_DATA} (a folder beside the checkout holding"
    " legal-summarization/ and cuad-clause-retrieval/; or set EMBEDFORGE_DATA=DIR): see README, Quickstart"
)


def _reads_shared_data(module: Path) -> bool:
    texts = [module.read_text()]
    if (module.parent / "conftest.py").is_file() and module.parent != ROOT / "tests":
        texts.append((module.parent / "conftest.py").read_text())
    return any(name in text for text in texts for name in _SHARED_NAMES)


def pytest_report_header(config) -> str:
    found = "found" if SHARED_DATA.is_dir() else "MISSING, the tests that read them are skipped"
    return f"shared datasets {SHARED_DATA}: {found}"


def pytest_collection_modifyitems(config, items) -> None:
    """Without the shared datasets, the tests that read them skip with a reason saying where."""
    if SHARED_DATA.is_dir():
        return
    reads: dict[Path, bool] = {}
    for item in items:
        path = Path(str(item.fspath))
        if path.name != "conftest.py" and reads.setdefault(path, _reads_shared_data(path)):
            item.add_marker(pytest.mark.skip(reason=_NO_DATA))


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny matrices: threads only add contention on a shared CPU (``pytestmark`` a module with it)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_encoder():
    from embedforge.models.encoder import Encoder

    return Encoder.tiny(seed=0)


def compose_config(*overrides: str, return_hydra_config: bool = False):
    """The train config of ``conf/`` composed with ``overrides`` (no Hydra run dir needed)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return hydra_compose(
                "train", overrides=list(overrides), return_hydra_config=return_hydra_config
            )
    finally:
        GlobalHydra.instance().clear()


def loss_configs() -> list[str]:
    """Every ``conf/loss/*.yaml`` by name: tests parametrized over it cover a new loss unasked."""
    return sorted(p.stem for p in (ROOT / "conf" / "loss").glob("*.yaml"))


#: overrides that fit a loss config to the small embeddings of tests (random 8-dim, tiny BERT 32)
LOSS_TEST_OVERRIDES = {"matryoshka": ("loss.matryoshka_dims=[8,4]",)}


def build_loss(name: str, *overrides: str):
    """The loss ``conf/loss/<name>.yaml`` builds (with ``LOSS_TEST_OVERRIDES`` and ``overrides``)."""
    from embedforge.config import build

    extra = (*LOSS_TEST_OVERRIDES.get(name, ()), *overrides)
    return build(compose_config(f"loss={name}", *extra).loss)


@pytest.fixture()
def compose():
    """``compose(*overrides)`` -> the composed train config (no Hydra run dir needed)."""
    return compose_config


def make_beir(
    root: Path,
    corpus: list[dict],
    queries: list[dict],
    qrels: dict[str, list[tuple[str, str, int]]],
) -> Path:
    """Write a small BEIR dataset for tests."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels").mkdir(exist_ok=True)
    for split, rows in qrels.items():
        (root / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows)
        )
    return root
