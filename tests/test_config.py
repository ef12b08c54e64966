"""Every config composes; validation gives one-line errors naming the keys."""

from __future__ import annotations

import pytest

from embedforge.config import build as instantiate
from embedforge.config import validate
from embedforge.errors import EmbedforgeError
from tests.conftest import ROOT


def options(group: str) -> list[str]:
    """The options of a config group (``_base.yaml`` and other ``_`` files are shared parts)."""
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml") if p.stem[0] != "_")


def test_defaults_compose_and_validate(compose):
    cfg = compose()
    validate(cfg)
    assert cfg.model.name_or_path == "packaged:all-MiniLM-L6-v2"
    assert cfg.monitor == "val/ndcg@10" and cfg.trainer.precision == "32-true"


def test_a_datasets_recipe_applies_only_to_it_and_yields_to_experiments_and_the_command_line(
    compose,
):
    """conf/recipe/icd10.yaml tunes the demo (lr 2e-4, 2 epochs: the option table) without moving
    the settings of any other dataset, experiment or explicit override."""
    demo = compose()
    assert (demo.optim.lr, demo.trainer.max_epochs, demo.data.group_negatives) == (2e-4, 2, 1)
    other = compose("data=beir", "data.path=/some/dir")
    assert (other.optim.lr, other.trainer.max_epochs) == (1e-4, 1)
    assert compose("optim.lr=3e-5").optim.lr == 3e-5
    cuad = compose("experiment=cuad")  # an experiment's own data choice: no demo recipe
    assert (cuad.optim.lr, cuad.trainer.max_epochs) == (1e-4, 1)
    for name in options("recipe"):
        assert name in options("data"), f"conf/recipe/{name}.yaml names no data config"


def accepted_keys(target: str) -> set[str] | None:
    """Keyword arguments a ``_target_`` accepts (following ``**kwargs`` up to the base class);
    None when it takes any keyword."""
    import inspect

    from hydra.utils import get_object

    obj = get_object(target)
    chain = [c.__init__ for c in obj.__mro__] if isinstance(obj, type) else [obj]
    names: set[str] = set()
    for fn in chain:
        params = inspect.signature(fn).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names
    return None


@pytest.mark.parametrize(
    "group", ["model", "loss", "data", "generator", "optim", "trainer", "logger", "callbacks"]
)
def test_every_option_composes_and_its_keys_are_constructor_arguments(compose, group):
    for opt in options(group):
        extra = []
        if group == "data" and opt in {"beir", "pairs", "folder"}:
            extra = [f"data.path={ROOT}"]  # validate checks that it exists
        cfg = compose(f"{group}={opt}", *extra)
        validate(cfg)
        nodes = cfg[group].values() if group == "callbacks" else [cfg[group]]
        for node in nodes:
            if "_target_" not in node:
                assert not node, f"{group}={opt}: keys without a _target_ build nothing"
                continue
            accepted = accepted_keys(node._target_)
            extra_keys = set(node) - {"_target_", "_partial_"} - (accepted or set(node))
            assert not extra_keys, f"{group}={opt}: {sorted(extra_keys)} are not arguments"


def test_data_sources_share_their_common_keys_from_base(compose):
    import yaml

    base = yaml.safe_load((ROOT / "conf" / "data" / "_base.yaml").read_text())
    for opt in options("data"):
        own = yaml.safe_load((ROOT / "conf" / "data" / f"{opt}.yaml").read_text())
        copied = {k for k in base if k in own and own[k] == base[k]}
        assert not copied, f"conf/data/{opt}.yaml repeats {sorted(copied)} from _base.yaml"
        cfg = compose(f"data={opt}", "data.path=/x") if "path" in own else compose(f"data={opt}")
        assert set(base) <= set(cfg.data)


def test_chunking_defaults_are_the_code_defaults(compose):
    from dataclasses import asdict

    from embedforge.data.ingest import DEFAULTS

    data = compose("data=folder", "data.path=/x").data
    assert {k: data[k] for k in asdict(DEFAULTS)} == asdict(DEFAULTS)


def test_default_metric_list_is_the_code_default(compose):
    from embedforge.eval.metrics import DEFAULT_METRICS

    assert list(compose().eval.metrics) == list(DEFAULT_METRICS)


def test_hub_models_have_their_prefixes_and_pooling(compose):
    e5 = compose("model=e5_base", "loss=triplet")
    assert (e5.model.query_prefix, e5.model.doc_prefix, e5.model.pooling) == (
        "query: ",
        "passage: ",
        "mean",
    )
    assert e5.loss._target_.endswith("TripletLoss")
    bge = compose("model=bge_small")
    assert (
        bge.model.query_prefix.startswith("Represent this sentence") and bge.model.pooling == "cls"
    )
    assert compose("model=e5").model.name_or_path == "intfloat/e5-base-v2"


def test_hub_model_fails_clearly_offline(compose, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose("model=e5_base")
    with pytest.raises(EmbedforgeError, match="not in the local Hugging Face cache"):
        instantiate(cfg.model)


def test_trainer_args_pass_through(compose):
    cfg = compose(
        "model=tiny", "trainer.max_steps=7", "trainer.max_epochs=3", "trainer.precision=bf16-mixed"
    )
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_steps == 7 and trainer.max_epochs == 3 and "bf16" in str(trainer.precision)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["data.batch_size=1"], "data.batch_size"),
        (["module.mini_batch_size=64"], "module.mini_batch_size"),
        (
            ["module.mini_batch_size=8", "trainer.accumulate_grad_batches=4"],
            "accumulate_grad_batches",
        ),
        (["trainer.precision=fp8"], "trainer.precision"),
        (["data.val_split=test"], "data.val_split"),
        (["monitor=train/loss"], "monitor"),
        (["monitor=val/map@10"], "eval.metrics"),
        (["optim.lr=5"], "optim.lr"),
        (["eval.backend=tensorrt"], "eval.backend"),
        # defect: passed validation, then crashed after training on baseline["ndcg@10"]
        (["monitor=val/recall@5", "eval.metrics=[recall@5]"], "ndcg@10"),
        # defect: a bad loss argument failed only after the baseline had been evaluated
        (["loss.similarity=cosine"], "loss.similarity"),
        (["loss.false_negative_margin=nan"], "loss.false_negative_margin"),
        (["loss=triplet", "+loss.scale=20"], "scale"),
        (["data.mix_real=0", "data.mix_synthetic=0"], "data.mix_real"),
        (["data.length_grouping=1"], "data.length_grouping"),
        (["data.length_grouping=true"], "data.length_grouping"),
        (["data.length_grouping=eight"], "data.length_grouping"),
        (
            [
                "data=beir",
                f"data.path={ROOT}",
                "data.group_negatives=1",
                "data.hard_negatives.num=2",
            ],
            "choose one source of negatives",
        ),
        (
            ["data=beir", f"data.path={ROOT}", "data.group_batches=true", "data.length_grouping=4"],
            "choose one batch layout",
        ),
        (["data.hard_negatives.method=sparse"], "data.hard_negatives.method"),
        (["module.lora.r=-1"], "module.lora.r"),
        (["module.lora.r=8", "module.lora.dropout=1.0"], "module.lora.dropout"),
        (["eval.wise_alphas=[0.5,1.5]"], "eval.wise_alphas"),
        (["eval.wise_alphas=0.5"], "eval.wise_alphas"),
        (["eval.wise_alphas=[0.5]", "eval.keep_best=false"], "eval.keep_best"),
    ],
)
def test_bad_combinations_one_line_error(compose, overrides, match):
    with pytest.raises(EmbedforgeError, match=match) as e:
        validate(compose(*overrides))
    assert "\n" not in str(e.value)


def test_length_grouping_is_off_by_default_and_reaches_the_data_source(compose):
    assert compose().data.length_grouping is None
    cfg = compose("data.length_grouping=8")
    validate(cfg)
    assert instantiate(cfg.data).length_grouping == 8


def test_run_dir_named_after_the_dataset(compose):
    assert compose().task == "icd10"
    assert (
        compose("data=beir", "data.path=/x/cuad-clause-retrieval/").task == "cuad-clause-retrieval"
    )
    assert compose("data=pairs", "data.path=/x/my_pairs.jsonl").task == "my_pairs"
    assert compose("data=beir", "data.path=/x/y", "data.name=legal").task == "legal"


def test_wandb_logger_leaves_the_mode_to_wandb(compose, tmp_path):
    cfg = compose("logger=wandb", f"paths.output_dir={tmp_path}")
    assert cfg.logger._target_ == "embedforge.tracking.WandbRunLogger"
    assert cfg.logger.mode is None and cfg.logger.group == cfg.task  # tests/test_tracking.py
