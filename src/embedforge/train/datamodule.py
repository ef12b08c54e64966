"""Training batches: no duplicate positives (or queries) inside a batch, deterministic in (seed, epoch).

Optionally length-grouped: the shuffled pairs are cut into mega-batches of ``M`` batches, each
mega-batch is sorted by text length and cut into batches, and the batch order is shuffled. The
encoder pads each forward pass to its longest text, so similar lengths in a batch waste less
compute on padding, while each batch still draws its pairs (its in-batch negatives) at random
from a span of ``M`` batches.

Optionally group-dense (``data.group_batches``, :class:`BatchGroups`): the pairs of one group (one
contract, one ICD-10 category, one web page) are laid out next to each other, so a batch holds
few groups and every query meets its group's other documents as in-batch negatives: hard
negatives at no extra encoding (topic-aware sampling, Hofstätter et al. 2021), where a drawn
group negative costs one more text per pair. A pair never meets a document its query must not
see as a negative (judged relevant to it, an ancestor or descendant code).
"""

from __future__ import annotations

import functools
import logging
import random
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, Sampler

from embedforge.io import stable_hash
from embedforge.train.distributed import same_on_every_rank
from embedforge.types import DEFAULT_SCORE, BatchGroups, Pair

log = logging.getLogger("embedforge")


class PairDataset(Dataset):
    def __init__(self, pairs: list[Pair]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Pair:
        return self.pairs[i]


class UniqueBatchSampler(Sampler[list[int]]):
    """Shuffled batches in which no key (query, positive or hard-negative text) appears twice.

    A duplicate positive in a batch would be a false in-batch negative for the other query. Items
    that collide are deferred to the next batch, never dropped. With ``groups`` the shuffled order
    is group-major (groups in shuffled order, each group's items shuffled), so batches are cut from
    few groups, and an item also collides with a batch holding a document its query must not see
    (``groups.exclude``), or whose queries must not see one of its documents. Under DDP each rank
    takes its slice of every global batch of ``batch_size`` (so ``batch_size`` is the global
    batch); every rank computes the same global batches from the same (seed, epoch).

    Args:
        keys: for each item, the strings that must be unique in a batch (:func:`batch_keys`).
        batch_size: global batch size.
        seed: shuffle seed; epoch ``e`` uses ``seed + e`` (call ``set_epoch``).
        drop_last: drop a final batch smaller than ``batch_size``.
        num_replicas / rank: DDP layout.
        lengths: for each item, its length (:func:`pair_length`); needed by ``mega_batch``.
        mega_batch: group by length: sort each run of ``mega_batch`` shuffled global batches by
            ``lengths`` before cutting it into batches, then shuffle the batch order (None = off).
        groups: group-dense batches (None = off); not with ``mega_batch`` (sorting by length
            would scatter the groups).
    """

    def __init__(
        self,
        keys: list[tuple[str, ...]],
        batch_size: int,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        lengths: list[int] | None = None,
        mega_batch: int | None = None,
        groups: BatchGroups | None = None,
    ):
        self.keys = keys
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = drop_last
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self.resume_at: tuple[int, int] | None = (
            None  # (epoch, batches already trained): set on resume
        )
        if self.batch_size % self.num_replicas:
            raise ValueError(f"batch size {batch_size} is not divisible by {num_replicas} devices")
        self.mega_batch = int(mega_batch) if mega_batch else None
        if self.mega_batch is not None and (lengths is None or len(lengths) != len(keys)):
            raise ValueError("length grouping (mega_batch) needs one length per item")
        self.lengths = lengths
        if groups is not None and (
            len(groups.groups) != len(keys) or len(groups.exclude) != len(keys)
        ):
            raise ValueError("group-dense batches need one group and one exclusion list per item")
        if groups is not None and self.mega_batch is not None:
            raise ValueError("group-dense batches and length grouping do not combine")
        self.groups = groups
        # the texts (as document keys) each item's query must not meet, and the ones it shows
        self._excluded = (
            [frozenset(("d", t) for t in ex) for ex in groups.exclude] if groups else []
        )
        self._docs = [frozenset(k for k in ks if k[0] == "d") for ks in keys] if groups else []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_batches(self) -> list[list[int]]:
        order = list(range(len(self.keys)))
        rng = random.Random(self.seed + self.epoch)
        rng.shuffle(order)
        if self.mega_batch is not None:
            order = self._length_sorted(order)
        if self.groups is not None:
            order = self._group_major(order)
        batches: list[list[int]] = []
        pending: deque[int] = deque(order)
        while pending:  # every round takes >= 1 item (the first never collides), so this ends
            batch, used, deferred = [], set(), []
            blocked: set[tuple[str, str]] = set()  # documents the batch's queries must not see
            while pending and len(batch) < self.batch_size:
                i = pending.popleft()
                if any(k in used for k in self.keys[i]) or self._conflicts(i, used, blocked):
                    deferred.append(i)
                else:
                    batch.append(i)
                    used.update(self.keys[i])
                    if self.groups is not None:
                        blocked.update(self._excluded[i])
            pending.extendleft(reversed(deferred))  # deferred items lead the next batch
            batches.append(batch)
        if self.drop_last or self.num_replicas > 1:  # DDP ranks need equal shares
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.mega_batch is not None:  # else the epoch would run from short to long batches
            rng.shuffle(batches)
        return [b for b in batches if len(b) >= 2]  # a single pair has no in-batch negative

    def _group_major(self, order: list[int]) -> list[int]:
        """``order`` (shuffled) regrouped: each group's items together, in the order the groups
        first appear in ``order``, so both the group order and the order within a group are
        shuffled."""
        by_group: dict[str, list[int]] = {}
        for i in order:
            by_group.setdefault(self.groups.groups[i], []).append(i)
        return [i for members in by_group.values() for i in members]

    def _conflicts(self, i: int, used: set, blocked: set) -> bool:
        """Whether item ``i`` would show a batch query a document it must not see, or would see one
        itself (group-dense batches only)."""
        if self.groups is None:
            return False
        return bool(self._docs[i] & blocked) or any(k in used for k in self._excluded[i])

    def _length_sorted(self, order: list[int]) -> list[int]:
        """``order`` with each run of ``mega_batch`` batches sorted by length, alternately up and
        down, so a batch that straddles two runs (deferred collisions shift the cuts) still joins
        similar lengths. The sort is stable: ties keep their shuffled order."""
        span = self.mega_batch * self.batch_size
        out: list[int] = []
        for k, start in enumerate(range(0, len(order), span)):
            run = order[start : start + span]
            out += sorted(run, key=self.lengths.__getitem__, reverse=k % 2 == 1)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        per_rank = self.batch_size // self.num_replicas
        skip = 0
        if self.resume_at is not None and self.resume_at[0] == self.epoch:
            skip, self.resume_at = self.resume_at[1], None
        for b in self.global_batches()[skip:]:
            yield (
                b[self.rank * per_rank : (self.rank + 1) * per_rank] if self.num_replicas > 1 else b
            )

    def __len__(self) -> int:
        return len(self.global_batches())


def group_layout(sampler: UniqueBatchSampler) -> dict[str, Any]:
    """How group-dense a group sampler's batches are: the mean number of groups a global batch of
    its current epoch holds, beside the same pairs shuffled without groups (a pair whose positive
    names no group counts as a group of its own)."""
    groups = sampler.groups.groups

    def per_batch(batches: list[list[int]]) -> float:
        return round(sum(len({groups[i] for i in b}) for b in batches) / max(1, len(batches)), 1)

    shuffled = UniqueBatchSampler(sampler.keys, sampler.batch_size, sampler.seed, sampler.drop_last)
    shuffled.set_epoch(sampler.epoch)
    return {
        "layout": "group-dense",
        "groups": len(set(groups)),
        "groups_per_batch": per_batch(sampler.global_batches()),
        "shuffled_groups_per_batch": per_batch(shuffled.global_batches()),
    }


def equal_negatives(
    pairs: list[Pair], seed: int, stats: dict[str, Any] | None = None
) -> list[Pair]:
    """Give every pair the same number of hard negatives, so every batch on every rank has one
    dense ``(B, N)`` block and DDP ranks gather tensors of one shape.

    ``N`` is the most common count (ties: the larger). Longer lists keep their first ``N`` (mined
    lists are hardest first); shorter non-empty ones are padded by resampling their own negatives
    (seeded); pairs with none are dropped when ``N > 0``. ``stats`` records what was done.
    """
    counts = Counter(len(p.get("negatives") or []) for p in pairs)
    if not pairs or set(counts) == {0}:
        return pairs
    n = max(counts, key=lambda c: (counts[c], c))
    rng = random.Random(seed)
    out: list[Pair] = []
    done = {"truncated": 0, "padded": 0, "dropped": 0}
    for p in pairs:
        negs = list(p.get("negatives") or [])
        if n and not negs:
            done["dropped"] += 1
            continue
        if len(negs) > n:
            done["truncated"] += 1
        elif len(negs) < n:
            done["padded"] += 1
            negs += rng.choices(negs, k=n - len(negs))
        q = {k: v for k, v in p.items() if k != "negatives"}
        out.append({**q, "negatives": negs[:n]} if n else q)
    if stats is not None:
        stats["equalized"] = {"per_pair": n, **done}
    return out


def collate_pairs(items: list[Pair], scored: bool = False) -> dict[str, Any]:
    """Lists of strings; negatives as a dense (B, N) block (every pair must have the same N).

    ``scored`` (the training set has graded pairs): ``score`` is a list of floats, ``DEFAULT_SCORE``
    for a pair without one, in every batch.
    """
    batch: dict[str, Any] = {
        "query": [p["query"] for p in items],
        "positive": [p["positive"] for p in items],
    }
    if scored:
        batch["score"] = [float(p.get("score", DEFAULT_SCORE)) for p in items]
    counts = {len(p.get("negatives") or []) for p in items}
    if len(counts) > 1:
        raise ValueError(
            f"pairs with different negative counts {sorted(counts)} in one batch:"
            " equal_negatives() must run before batching"
        )
    if counts != {0}:
        batch["negatives"] = [list(p["negatives"]) for p in items]
    return batch


def pair_length(pair: Pair) -> int:
    """A tokenizer-free stand-in for :func:`token_lengths`: characters of the positive plus the
    query (what the sampler sorts by when it is given no token lengths)."""
    return len(pair["positive"]) + len(pair["query"])


def token_lengths(pairs: Sequence[Pair], count: Callable[[list[str], str], Any]) -> list[int]:
    """What length grouping sorts by: the tokens a pair costs the model, its query's plus its
    positive's, each as the model sees it (prefixed, cut at its max length).

    Characters mislead where passages run past the max length: CUAD's 200-word chunks (240-320
    tokens, 1,100-1,600 characters) all cost 256 tokens, but their character counts outweighed the
    queries' in a character sum, so grouping sorted by an irrelevant passage length and left
    queries (45-120 tokens) mixed.

    Args:
        pairs: the training pairs.
        count: ``(texts, kind) -> token counts`` (``Encoder.token_counts``).
    """
    queries = count([p["query"] for p in pairs], "query")
    positives = count([p["positive"] for p in pairs], "doc")
    return [int(q) + int(d) for q, d in zip(queries, positives)]


def batch_keys(pair: Pair) -> tuple[tuple[str, str], ...]:
    """The texts that must be unique in a batch: the query, and the positive and hard negatives in
    one document namespace (another pair's positive among my negatives would be a false negative)."""
    docs = [pair["positive"], *(pair.get("negatives") or [])]
    return (("q", pair["query"]), *(("d", t) for t in docs))


class PairDataModule(pl.LightningDataModule):
    """Serves the training pairs (and a one-item validation loader that triggers IR validation).

    ``length_grouping``: mega-batch size in batches for length-grouped batches (None = off); see
    :class:`UniqueBatchSampler`. ``lengths``: each pair's length for it (:func:`token_lengths`;
    None: :func:`pair_length`). ``groups``: group-dense batches (None = off).
    """

    def __init__(
        self,
        pairs: list[Pair],
        batch_size: int,
        seed: int = 0,
        num_workers: int = 0,
        has_val: bool = True,
        drop_last: bool = False,
        length_grouping: int | None = None,
        lengths: Sequence[int] | None = None,
        groups: BatchGroups | None = None,
    ):
        super().__init__()
        self.pairs = pairs
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.has_val = has_val
        self.drop_last = drop_last
        self.length_grouping = int(length_grouping) if length_grouping else None
        self.lengths = list(lengths) if lengths is not None else None
        self.groups = groups
        #: with ``groups``: :func:`group_layout` of the first epoch (``metrics.json``
        #: ``training.batches``)
        self.layout: dict[str, Any] | None = None

    def setup(self, stage: str) -> None:
        # under DDP every rank must train on rank 0's pairs (a different list means different
        # batch counts: a hang), so compare content hashes once the process group exists
        if stage == "fit":
            same_on_every_rank(stable_hash(self.pairs), "the hash of the training pairs")

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        world, rank = self._replicas()
        keys = [batch_keys(p) for p in self.pairs]
        lengths = None
        if self.length_grouping:
            lengths = self.lengths or [pair_length(p) for p in self.pairs]
        sampler = UniqueBatchSampler(
            keys,
            self.batch_size,
            self.seed,
            self.drop_last,
            world,
            rank,
            lengths=lengths,
            mega_batch=self.length_grouping,
            groups=self.groups,
        )
        if self.groups is not None and self.layout is None:
            self.layout = group_layout(sampler)
            log.info(
                "group-dense batches: %d pairs in %d groups, %.1f groups per batch of %d"
                " (shuffled without groups: %.1f)",
                len(self.pairs),
                self.layout["groups"],
                self.layout["groups_per_batch"],
                self.batch_size,
                self.layout["shuffled_groups_per_batch"],
            )
        return DataLoader(
            PairDataset(self.pairs),
            batch_sampler=sampler,
            # every batch carries scores when any pair has one (graded losses need them in all)
            collate_fn=functools.partial(
                collate_pairs, scored=any("score" in p for p in self.pairs)
            ),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader | list:
        # IR validation encodes its own corpus; the loader only tells Lightning when to run it
        return DataLoader([0], batch_size=1) if self.has_val else []
