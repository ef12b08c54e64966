"""Config validation: once at startup, cross-field rules, one-line errors naming the keys."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from embedforge.errors import EmbedforgeError
from embedforge.eval.metrics import parse_metric

PRECISIONS = {"32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"}


def _get(cfg: DictConfig, key: str, default=None):
    return OmegaConf.select(cfg, key, default=default)


def validate(cfg: DictConfig) -> None:
    """Raise :class:`EmbedforgeError` on the first contradictory or invalid setting."""
    monitor = _get(cfg, "monitor")
    if not isinstance(monitor, str) or not monitor.startswith("val/"):
        raise EmbedforgeError(f"monitor must be a validation metric like 'val/ndcg@10', got {monitor!r}")
    metrics = list(_get(cfg, "eval.metrics", []))
    for m in metrics:
        try:
            parse_metric(m)
        except ValueError as e:
            raise EmbedforgeError(f"eval.metrics: {e}") from None
    if monitor.removeprefix("val/") not in metrics:
        raise EmbedforgeError(f"monitor {monitor!r} is not computed: add {monitor.removeprefix('val/')!r} to eval.metrics")
    bs = _get(cfg, "data.batch_size")
    if not isinstance(bs, int) or bs < 2:
        raise EmbedforgeError(f"data.batch_size must be an integer >= 2 (in-batch negatives need company), got {bs!r}")
    mbs = _get(cfg, "module.mini_batch_size")
    if mbs is not None:
        if not isinstance(mbs, int) or mbs < 1 or mbs > bs:
            raise EmbedforgeError(f"module.mini_batch_size must be an integer in [1, data.batch_size={bs}], got {mbs!r}")
        if int(_get(cfg, "trainer.accumulate_grad_batches", 1) or 1) != 1:
            raise EmbedforgeError(
                "module.mini_batch_size (gradient caching) cannot be combined with trainer.accumulate_grad_batches>1:"
                " raise data.batch_size instead (caching keeps every pair a negative of every other)"
            )
    precision = str(_get(cfg, "trainer.precision", "32-true"))
    if precision not in PRECISIONS:
        raise EmbedforgeError(f"trainer.precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    vs, es = _get(cfg, "data.val_split"), _get(cfg, "data.eval_split")
    if vs is not None and vs == es:
        raise EmbedforgeError(f"data.val_split equals data.eval_split ({es!r}): validation must never see the reported split")
    lr = _get(cfg, "optim.lr")
    if lr is not None and not (0 < float(lr) < 1):
        raise EmbedforgeError(f"optim.lr must be in (0, 1), got {lr!r}")
    mix = (_get(cfg, "data.mix_real", 1), _get(cfg, "data.mix_synthetic", 3))
    if any(not isinstance(x, int) or x < 0 for x in mix) or mix == (0, 0):
        raise EmbedforgeError(f"data.mix_real / data.mix_synthetic must be non-negative integers, not both 0, got {mix}")
    if _get(cfg, "trainer.max_steps", -1) in (0,) and _get(cfg, "trainer.max_epochs", 1) in (0,):
        raise EmbedforgeError("trainer.max_steps and trainer.max_epochs are both 0: nothing to train")
