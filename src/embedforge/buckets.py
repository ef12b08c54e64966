"""Split one batch of texts into length buckets, so a model call pads little.

A padded batch costs ``len(batch) * longest`` tokens. Short single-text requests gathered by the
server's micro-batcher vary in length (legal-summarization queries: mean 22 tokens, max 87), so
one padded batch of 32 ran ~2.6x the tokens of its texts and batching made the ONNX backend
*slower* per text (docs/bugs-and-fixes.md). Pure numpy: the ONNX serving path uses it without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: a model call's fixed cost, in tokens of work: a bucket is split off when padding would cost
#: more than one more call (MiniLM on 1-2 CPU threads: ~2 ms per call, ~0.25 ms per token)
CALL_COST_TOKENS = 8


def length_buckets(lengths: Sequence[int], call_cost: int = CALL_COST_TOKENS) -> list[np.ndarray]:
    """Index groups (each sorted by length) that minimize ``sum(call_cost + n * longest)``.

    Exact dynamic programme over the texts sorted by length (a batch is at most a few hundred texts).

    Args:
        lengths: token count of each text.
        call_cost: the fixed cost of one model call, in tokens.

    Returns:
        Groups of indices into ``lengths``, together covering each index once.
    """
    n = len(lengths)
    if n == 0:
        return []
    order = np.argsort(np.asarray(lengths), kind="stable")
    srt = np.asarray(lengths)[order]
    best = np.zeros(n + 1)  # best[j]: cheapest cost of the first j sorted texts
    cut = np.zeros(n + 1, dtype=int)
    for j in range(1, n + 1):
        # last bucket = sorted texts i..j-1; its longest is srt[j-1]
        costs = best[:j] + call_cost + (j - np.arange(j)) * srt[j - 1]
        i = int(np.argmin(costs))
        best[j], cut[j] = costs[i], i
    groups = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]
