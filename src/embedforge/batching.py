"""Token-length bucketing for inference: batches of similar token length under a token budget.

Pure numpy (no torch), so the torch ``Encoder`` and the torch-free ``OnnxEncoder`` share it.
Sorting by token count (not characters) and padding each batch only to its own longest text keeps
the padded tokens, which cost FLOPs and produce nothing, near zero; a token budget lets short texts
(queries) go in larger batches, so every matmul sees about the same number of rows.
"""

from __future__ import annotations

import numpy as np


def token_batches(lengths, batch_size: int, max_length: int) -> list[np.ndarray]:
    """Split texts into batches, longest first, each at most ``batch_size * max_length`` padded tokens.

    Args:
        lengths: each text's token count (after truncation, special tokens included).
        batch_size: texts per batch at ``max_length``; shorter texts get proportionally more.
        max_length: the model's max sequence length (the budget is ``batch_size * max_length``).

    Returns:
        Index arrays into ``lengths``; together they hold every index exactly once.
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}")
    budget = batch_size * max_length
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        # sorted longest first: the first text of a batch is its longest
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, budget // longest)
        batches.append(order[start : start + size])
        start += size
    return batches


def padded_tokens(lengths, batches: list[np.ndarray]) -> int:
    """Tokens the model computes for ``batches``, padding included (each batch to its longest)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return int(sum(len(b) * int(lengths[b].max()) for b in batches if len(b)))
