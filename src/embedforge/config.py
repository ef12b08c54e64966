"""Config validation: once at startup, cross-field rules, one-line errors naming the keys."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from embedforge.errors import EmbedforgeError
from embedforge.eval.metrics import EMPTY_QUERIES, parse_metric
from embedforge.eval.ship import SHIP_METRIC


def build(node, *args, **kwargs):
    """``hydra.utils.instantiate`` whose failures are one-line :class:`EmbedforgeError` s.

    Hydra wraps errors raised by a ``_target_`` in ``InstantiationException``; an
    :class:`EmbedforgeError` inside is re-raised as is, anything else names the target.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, *args, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, EmbedforgeError):
            cause = cause.__cause__
        if isinstance(cause, EmbedforgeError):
            raise cause from None
        target = node.get("_target_") if hasattr(node, "get") else None
        msg = str(e.__cause__ or e).strip().splitlines()
        raise EmbedforgeError(
            f"could not build {target}: {msg[-1] if msg else type(e).__name__}"
        ) from None


#: where the ``_target_`` s of a saved run's config may point (module prefixes) without ``--trust``:
#: embedforge and the libraries it configures. A run dir is data; its config must not run code.
TRUSTED_TARGETS = (
    "embedforge.",
    "torch.optim.",
    "torch.nn.",
    "pytorch_lightning.",
    "lightning.pytorch.",
    "sentence_transformers.",
    "transformers.",
)


def untrusted_targets(cfg: DictConfig) -> list[str]:
    """``key=value`` of every ``_target_`` (nested ones too) outside :data:`TRUSTED_TARGETS` or
    computed by an interpolation, and of every ``trust_remote_code`` that is not false."""
    found: list[str] = []

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                key = f"{path}.{k}" if path else str(k)
                target_ok = isinstance(v, str) and "${" not in v and v.startswith(TRUSTED_TARGETS)
                if (k == "_target_" and not target_ok) or (k == "trust_remote_code" and v):
                    found.append(f"{key}={v}")
                walk(v, key)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return found


def check_trusted(cfg: DictConfig, where: str | Path, trust: bool = False) -> None:
    """Refuse (one line) to build a saved run's config whose targets could run arbitrary code,
    unless ``trust`` (the user's ``--trust``): see :func:`untrusted_targets`."""
    bad = [] if trust else untrusted_targets(cfg)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise EmbedforgeError(
            f"{where} names {bad[0]}{more}: a saved run only builds targets in"
            f" {', '.join(p.rstrip('.') for p in TRUSTED_TARGETS)}; pass --trust if you trust"
            " this run directory (it can run any code)"
        )


#: ``keep_checkpoints``: which of ``checkpoints/{best,last}.ckpt`` a finished run keeps
KEEP_CHECKPOINTS = {"none": (), "best": ("best.ckpt",), "last": ("last.ckpt",), "all": ("*.ckpt",)}

PRECISIONS = {"32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"}


def _get(cfg: DictConfig, key: str, default=None):
    return OmegaConf.select(cfg, key, default=default)


def validate(cfg: DictConfig) -> None:
    """Raise :class:`EmbedforgeError` on the first contradictory or invalid setting.

    The checks that need no torch (paths, numbers, names) run before those that build objects.
    """
    _validate_paths(cfg)
    _validate_schedule(cfg)
    _validate_eval(cfg)
    _validate_model(cfg)
    _validate_batches(cfg)
    _validate_data(cfg)


def _validate_eval(cfg: DictConfig) -> None:
    """The monitored metric, the eval metrics and backends, and WiSE-FT's alphas."""
    monitor = _get(cfg, "monitor")
    if not isinstance(monitor, str) or not monitor.startswith("val/"):
        raise EmbedforgeError(
            f"monitor must be a validation metric like 'val/ndcg@10', got {monitor!r}"
        )
    metrics = list(_get(cfg, "eval.metrics", []))
    for m in metrics:
        try:
            parse_metric(m)
        except ValueError as e:
            raise EmbedforgeError(f"eval.metrics: {e}") from None
    if monitor.removeprefix("val/") not in metrics:
        raise EmbedforgeError(
            f"monitor {monitor!r} is not computed: add {monitor.removeprefix('val/')!r} to eval.metrics"
        )
    empty = _get(cfg, "eval.empty_queries", "zero")
    if empty not in EMPTY_QUERIES:
        raise EmbedforgeError(
            f"eval.empty_queries must be one of {list(EMPTY_QUERIES)}, got {empty!r}"
        )
    from embedforge.eval.retrieval import EVAL_BACKENDS

    backend = _get(cfg, "eval.backend", "torch")
    if backend not in EVAL_BACKENDS:
        raise EmbedforgeError(f"eval.backend must be one of {list(EVAL_BACKENDS)}, got {backend!r}")
    if SHIP_METRIC not in metrics:
        raise EmbedforgeError(
            f"eval.metrics must include {SHIP_METRIC!r}: the report and the ship gate compare it"
        )
    wise = _get(cfg, "eval.wise_alphas")
    if wise:
        if not isinstance(wise, list | ListConfig) or any(
            not isinstance(a, int | float) or not 0 <= a <= 1 for a in wise
        ):
            raise EmbedforgeError(
                f"eval.wise_alphas must be null or a list of numbers in [0, 1] (0 = base,"
                f" 1 = fine-tuned), got {wise!r}"
            )
        if not _get(cfg, "eval.keep_best", True):
            raise EmbedforgeError(
                "eval.wise_alphas needs eval.keep_best=true: interpolation needs the base weights"
            )


def _validate_model(cfg: DictConfig) -> None:
    """LoRA settings, the loss's own arguments and the matryoshka dims."""
    lora = _get(cfg, "module.lora") or {}
    r = lora.get("r", 0) or 0
    if not isinstance(r, int) or r < 0:
        raise EmbedforgeError(f"module.lora.r must be an integer >= 0 (0 = off), got {r!r}")
    if r and not 0 <= float(lora.get("dropout", 0) or 0) < 1:
        raise EmbedforgeError(f"module.lora.dropout must be in [0, 1), got {lora.get('dropout')!r}")
    if r and not float(lora.get("alpha", 1) or 0) > 0:
        raise EmbedforgeError(f"module.lora.alpha must be > 0, got {lora.get('alpha')!r}")
    if _get(cfg, "loss") is not None:
        build(cfg.loss)  # bad loss arguments fail here, before any data is read or model encoded
    dims = _get(cfg, "eval.matryoshka_dims")
    if dims is not None:
        from embedforge.losses.matryoshka import check_dims

        check_dims("eval.matryoshka_dims", list(dims) if not isinstance(dims, str | int) else dims)


def _validate_batches(cfg: DictConfig) -> None:
    """Batch size, length grouping, gradient caching and precision."""
    bs = _get(cfg, "data.batch_size")
    if not isinstance(bs, int) or bs < 2:
        raise EmbedforgeError(
            f"data.batch_size must be an integer >= 2 (in-batch negatives need company), got {bs!r}"
        )
    lg = _get(cfg, "data.length_grouping")
    if lg is not None and (isinstance(lg, bool) or not isinstance(lg, int) or lg < 2):
        raise EmbedforgeError(
            f"data.length_grouping must be null (off) or a mega-batch size in batches >= 2, got {lg!r}"
        )
    if lg is not None and _get(cfg, "data.group_batches", False):
        raise EmbedforgeError(
            "data.group_batches=true and data.length_grouping: choose one batch layout (sorting by"
            " length would scatter the groups)"
        )
    mbs = _get(cfg, "module.mini_batch_size")
    if mbs is not None:
        if not isinstance(mbs, int) or mbs < 1 or mbs > bs:
            raise EmbedforgeError(
                f"module.mini_batch_size must be an integer in [1, data.batch_size={bs}], got {mbs!r}"
            )
        if int(_get(cfg, "trainer.accumulate_grad_batches", 1) or 1) != 1:
            raise EmbedforgeError(
                "module.mini_batch_size (gradient caching) cannot be combined with trainer.accumulate_grad_batches>1:"
                " raise data.batch_size instead (caching keeps every pair a negative of every other)"
            )
    budget = _get(cfg, "module.activation_budget_gb", None)
    if (
        budget is not None
        and budget != "auto"
        and (isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0)
    ):
        raise EmbedforgeError(
            f"module.activation_budget_gb must be auto, null or a positive number, got {budget!r}"
        )
    precision = str(_get(cfg, "trainer.precision", "32-true"))
    if precision not in PRECISIONS:
        raise EmbedforgeError(
            f"trainer.precision must be one of {sorted(PRECISIONS)}, got {precision!r}"
        )
    _validate_large_batches(cfg, bs, precision)


def _validate_data(cfg: DictConfig) -> None:
    """Splits, the real : generated mix, the validation guard, generators and negatives."""
    vs, es = _get(cfg, "data.val_split"), _get(cfg, "data.eval_split")
    if vs is not None and vs == es:
        raise EmbedforgeError(
            f"data.val_split equals data.eval_split ({es!r}): validation must never see the reported split"
        )
    mix = (_get(cfg, "data.mix_real", 1), _get(cfg, "data.mix_synthetic", 3))
    if any(not isinstance(x, int) or x < 0 for x in mix) or mix == (0, 0):
        raise EmbedforgeError(
            f"data.mix_real / data.mix_synthetic must be non-negative integers, not both 0, got {mix}"
        )
    probe = _get(cfg, "data.mix_select_steps", None)
    if probe not in (None, "auto") and (
        isinstance(probe, bool) or not isinstance(probe, int) or probe < 0
    ):
        raise EmbedforgeError(
            f"data.mix_select_steps must be auto, null or a non-negative integer, got {probe!r}"
        )
    check = _get(cfg, "data.mix_select_check", None)
    if check is not None:
        from embedforge.generate.label_free import LEXICAL

        if check != LEXICAL:
            raise EmbedforgeError(f"data.mix_select_check must be {LEXICAL} or null, got {check!r}")
    guard = _get(cfg, "eval.label_free_guard")
    if guard is not None and guard.get("signal") is not None:
        from embedforge.generate.label_free import MEASURES

        if guard.signal not in MEASURES:
            raise EmbedforgeError(
                f"eval.label_free_guard.signal must be null or one of {list(MEASURES)},"
                f" got {guard.signal!r}"
            )
    vmb = _get(cfg, "data.val_max_base")
    if vmb is not None and (not isinstance(vmb, int | float) or not 0 < vmb <= 1):
        raise EmbedforgeError(f"data.val_max_base must be null or in (0, 1], got {vmb!r}")
    gen = _get(cfg, "generator")
    if _get(cfg, "data.generate", False) and gen is not None and "strategies" in gen:
        build(gen)  # unknown offline strategies and a bad probe band fail before any data is read
        from embedforge.generate.probe import probe_config

        if gen.get("probe") is not None:
            probe_config(OmegaConf.to_container(gen.probe, resolve=True))
    gn = _get(cfg, "data.group_negatives", 0) or 0
    hn = (_get(cfg, "data.hard_negatives", {}) or {}).get("num", 0) or 0
    if gn and hn:
        raise EmbedforgeError(
            f"data.group_negatives={gn} and data.hard_negatives.num={hn}: choose one source of"
            " negatives (mined by the base model, or drawn from the positive's group: set the other"
            " to 0)"
        )
    method = (_get(cfg, "data.hard_negatives", {}) or {}).get("method", "dense")
    from embedforge.data.hard_negatives import RANKERS

    if method not in RANKERS:
        raise EmbedforgeError(
            f"data.hard_negatives.method must be one of {sorted(RANKERS)}, got {method!r}"
        )


#: the data keys naming an input file or folder (``???`` = required by the chosen ``data=``)
PATH_KEYS = ("data.path", "data.eval_path", "data.pairs_path")


def _validate_paths(cfg: DictConfig) -> None:
    """Every input path the data config names exists (checked before any model loads)."""
    from pathlib import Path

    for key in PATH_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = _get(cfg, parent)
        if node is None or leaf not in node.keys():
            continue
        if OmegaConf.is_missing(node, leaf):
            raise EmbedforgeError(f"{key} is required: add {key}=/path/to/your/data")
        value = node[leaf]
        if OmegaConf.is_config(
            value
        ):  # built by a `_target_` (a trusted saved run): not a path yet
            continue
        if value and not Path(str(value)).expanduser().exists():
            raise EmbedforgeError(f"{key}: no such file or folder: {value}")


def expected_number(key: str, value) -> EmbedforgeError:
    """The one-line error for a setting that must be a number (``optim.lr=abc``)."""
    return EmbedforgeError(f"{key}: expected a number, got {value!r}")


def _validate_schedule(cfg: DictConfig) -> None:
    """Learning rate, training length and the checkpoints kept."""
    keep = _get(cfg, "keep_checkpoints", "none")
    if keep not in KEEP_CHECKPOINTS:
        raise EmbedforgeError(
            f"keep_checkpoints must be one of {', '.join(KEEP_CHECKPOINTS)}, got {keep!r}"
        )
    lr = _get(cfg, "optim.lr")
    if isinstance(lr, str | bool):
        raise expected_number("optim.lr", lr)
    if lr is not None and not (0 < float(lr) < 1):
        raise EmbedforgeError(f"optim.lr must be in (0, 1), got {lr!r}")
    if _get(cfg, "trainer.max_steps", -1) in (0,) and _get(cfg, "trainer.max_epochs", 1) in (0,):
        raise EmbedforgeError(
            "trainer.max_steps and trainer.max_epochs are both 0: nothing to train"
        )


def _validate_large_batches(cfg: DictConfig, bs: int, precision: str) -> None:
    """Rules for manual optimization, gradient caching, precision and DDP (docs/large-batches.md)."""
    if _get(cfg, "trainer.gradient_clip_val") is not None:
        raise EmbedforgeError(
            "trainer.gradient_clip_val must be null: the module clips gradients (manual optimization),"
            " set module.gradient_clip_val instead"
        )
    if int(_get(cfg, "trainer.accumulate_grad_batches", 1) or 1) != 1:
        raise EmbedforgeError(
            "trainer.accumulate_grad_batches must be 1 (accumulation adds no in-batch negatives and the"
            " module optimizes manually): raise data.batch_size and set module.mini_batch_size to fit memory"
        )
    clip = _get(cfg, "module.gradient_clip_val")
    if clip is not None and (not isinstance(clip, int | float) or clip < 0):
        raise EmbedforgeError(
            f"module.gradient_clip_val must be null or a number >= 0, got {clip!r}"
        )
    accelerator = str(_get(cfg, "trainer.accelerator", "auto"))
    if accelerator == "cpu" and precision in {"16-mixed", "16", "16-true"}:
        raise EmbedforgeError(
            f"trainer.precision={precision} needs a GPU (trainer.accelerator=cpu): use bf16-mixed or 32-true on CPU"
        )
    if _get(cfg, "module.gather_queries", False) and not _get(
        cfg, "module.gather_across_devices", True
    ):
        raise EmbedforgeError(
            "module.gather_queries=true needs module.gather_across_devices=true (queries are gathered with documents)"
        )
    devices, nodes = _get(cfg, "trainer.devices", 1), _get(cfg, "trainer.num_nodes", 1) or 1
    if isinstance(devices, int) and devices > 0 and isinstance(nodes, int):
        world = devices * nodes
        if world > 1 and bs % world:
            raise EmbedforgeError(
                f"data.batch_size={bs} (the global batch) must be divisible by trainer.devices x"
                f" trainer.num_nodes = {world}"
            )
