"""Weight-space ensembling of the base and fine-tuned models (WiSE-FT; LM-Cocktail).

``theta(alpha) = alpha * theta_ft + (1 - alpha) * theta_base``: ``alpha = 0`` is the base model,
``alpha = 1`` the fine-tuned one. The interpolation often keeps most of the in-domain gain while
giving back less of the base model's generality (Wortsman et al. 2022, "Robust fine-tuning of
zero-shot models"; Xiao et al. 2023, "LM-Cocktail"). ``alpha`` is chosen on the validation set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from embedforge.errors import EmbedforgeError

log = logging.getLogger("embedforge")

#: keys of a LoRA adapter's down-projection: taken from the fine-tuned model, never interpolated.
#: LoRA's up-projection ``B`` starts at 0, so interpolating only ``B`` with the fine-tuned ``A``
#: gives ``W + alpha * B A`` exactly: the interpolation of the merged weights.
LORA_A = "lora_A"


def interpolate(
    base: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``alpha * finetuned + (1 - alpha) * base`` for every floating-point tensor.

    Integer buffers (e.g. ``position_ids``) and LoRA ``A`` matrices come from ``finetuned``; the two
    state dicts must have the same keys.
    """
    if base.keys() != finetuned.keys():
        missing = sorted(set(base) ^ set(finetuned))[:3]
        raise EmbedforgeError(f"WiSE: base and fine-tuned weights differ in keys, e.g. {missing}")
    if alpha == 1.0:
        return {k: v.clone() for k, v in finetuned.items()}
    out = {}
    for k, ft in finetuned.items():
        b = base[k]
        if ft.is_floating_point() and LORA_A not in k:
            out[k] = torch.lerp(b.to(ft.device, ft.dtype), ft, float(alpha))
        else:
            out[k] = ft.clone()
    return out


@dataclass
class WiseCurve:
    """The validation curve of the interpolation and the chosen point.

    Args:
        alphas: the grid, ascending (0 = base, 1 = fine-tuned).
        val: the monitored validation value at each alpha.
        alpha: the chosen alpha (the validation argmax; ties take the smallest alpha, nearest the
            base model, as model selection keeps the base on a tie).
        value: its validation value.
        endpoint: the fine-tuned weights at alpha = 1 (``best_checkpoint`` or ``last``).
    """

    alphas: list[float]
    val: list[float]
    alpha: float
    value: float
    endpoint: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def grid_of(alphas: Sequence[float]) -> list[float]:
    """The sorted, de-duplicated grid (``config.validate`` checks ``eval.wise_alphas`` itself)."""
    grid = sorted({float(a) for a in alphas})
    if not grid or grid[0] < 0.0 or grid[-1] > 1.0:
        raise EmbedforgeError(f"WiSE alphas must be a non-empty list in [0, 1], got {list(alphas)}")
    return grid


def wise_select(
    encoder: torch.nn.Module,
    base_state: dict[str, torch.Tensor],
    alphas: Sequence[float],
    validate: Callable[[], dict[str, float]],
    key: str,
    known: dict[float, float] | None = None,
    endpoint: str = "last",
) -> WiseCurve:
    """Score each alpha on validation and leave the best interpolation in ``encoder``.

    Args:
        encoder: holds the fine-tuned endpoint on entry and the chosen weights on return.
        base_state: the base model's state dict (same keys as ``encoder``).
        alphas: the grid, in [0, 1].
        validate: scores the encoder's current weights (``ContrastiveModule.run_validation``).
        key: the monitored metric (``cfg.monitor``).
        known: validation values already measured (0: the base model, 1: the endpoint), not
            scored again.
        endpoint: the name of the fine-tuned endpoint, for the record.
    """
    grid = grid_of(alphas)
    finetuned = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    known = dict(known or {})
    values: list[float] = []
    for a in grid:
        if a in known:
            values.append(float(known[a]))
            continue
        encoder.load_state_dict(interpolate(base_state, finetuned, a))
        values.append(float(validate().get(key, float("-inf"))))
        log.info("WiSE alpha %.2f: %s %.4f", a, key, values[-1])
    best = max(range(len(grid)), key=lambda i: (values[i], -grid[i]))  # ties: nearest the base
    encoder.load_state_dict(interpolate(base_state, finetuned, grid[best]))
    return WiseCurve(grid, values, grid[best], values[best], endpoint)
