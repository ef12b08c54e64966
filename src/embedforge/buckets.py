"""Length buckets, so a model call pads little: within one batch (serving) and over a corpus
(evaluation).

``length_buckets`` splits one batch of texts into length groups; ``token_batches`` plans a whole
corpus into batches of similar token length under a token budget (``Encoder.encode`` and
``OnnxEncoder.encode``).

A padded batch costs ``len(batch) * longest`` tokens. Short single-text requests gathered by the
server's micro-batcher vary in length (legal-summarization queries: mean 22 tokens, max 87), so
one padded batch of 32 ran ~2.6x the tokens of its texts and batching made the ONNX backend
*slower* per text (docs/bugs-and-fixes.md). Pure numpy: the ONNX serving path uses it without torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

#: a model call's fixed cost, in tokens of work, until measured (:func:`measure_call_cost`): a
#: bucket is split off when padding would cost more than one more call. It depends on the backend
#: and the machine: on 2 CPU cores MiniLM int8 ONNX costs ~3 ms per call and ~0.13 ms per token
#: (~20 tokens), torch fp32 ~22 ms per call whatever its input and ~0.3 ms per token (~75).
CALL_COST_TOKENS = 8
MAX_CALL_COST = 1024


def measure_call_cost(
    embed: Callable[[list[str]], object],
    count_tokens: Callable[[list[str]], np.ndarray],
    rows: int = 8,
    words: int = 62,
    repeats: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> int:
    """A model's fixed cost per call in tokens of work, timed here: one one-word text against
    ``rows`` equal texts of ``words`` words (each one call). The fastest of ``repeats`` counts.

    Args:
        embed: runs the model on a list of texts.
        count_tokens: each text's token count.

    Returns:
        ``fixed seconds per call / seconds per token``, within ``[1, MAX_CALL_COST]``.
    """
    short, long = ["a"], [("a " * words).strip()] * rows
    n_short, n_long = int(np.sum(count_tokens(short))), int(np.sum(count_tokens(long)))

    def fastest(texts: list[str]) -> float:
        times = []
        for _ in range(repeats):
            t0 = clock()
            embed(texts)
            times.append(clock() - t0)
        return min(times)

    embed(long)  # first calls allocate
    t_short, t_long = fastest(short), fastest(long)
    per_token = max(t_long - t_short, 1e-9) / max(n_long - n_short, 1)
    fixed = max(t_short - n_short * per_token, 0.0)
    return int(np.clip(round(fixed / per_token), 1, MAX_CALL_COST))


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


#: how much padding a batch may add beyond ``batch_size`` texts (0.1: padded <= 1.1 x real tokens)
MAX_PADDING = 0.1


def token_batches(
    lengths, batch_size: int, max_length: int, max_padding: float = MAX_PADDING
) -> list[np.ndarray]:
    """Split texts into batches of similar token length, longest first.

    A batch takes texts in order of decreasing length while its padded size (texts x its longest)
    stays within ``batch_size * max_length`` tokens. Its first ``batch_size`` texts always go
    together (what a fixed batch size would do, with less padding since the sort is by tokens);
    beyond them it grows only while padding stays under ``max_padding`` of its real tokens, so a
    set of short, similar texts (queries) runs in a few large batches and a set of mixed lengths
    is not padded to its longest. (With no padding limit, the legal-summarization queries computed
    2.8x their real tokens; with it 1.5x, as batches of 64.)

    Args:
        lengths: each text's token count (after truncation, special tokens included).
        batch_size: texts per batch at ``max_length``; similar shorter texts get more.
        max_length: the model's max sequence length (the budget is ``batch_size * max_length``).
        max_padding: padded / real tokens - 1 a batch may reach by growing past ``batch_size``.

    Returns:
        Index arrays into ``lengths``; together they hold every index exactly once.
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}")
    budget = batch_size * max_length
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start, n = 0, len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)  # sorted: a batch's first text is its longest
        end, real = start + 1, longest
        while end < n and (end - start + 1) * longest <= budget:
            size, real_next = end - start + 1, real + max(int(lengths[order[end]]), 1)
            if size > batch_size and size * longest > (1 + max_padding) * real_next:
                break
            end, real = end + 1, real_next
        batches.append(order[start:end])
        start = end
    return batches


def padded_tokens(lengths, batches: list[np.ndarray]) -> int:
    """Tokens the model computes for ``batches``, padding included (each batch to its longest)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return int(sum(len(b) * int(lengths[b].max()) for b in batches if len(b)))
