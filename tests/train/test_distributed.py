"""Cross-device negatives: 2 CPU processes (gloo) equal one process computing the same global batch.

Slow (process start-up and imports dominate: ~1-3 min on a shared 2-core machine): ``pytest -m slow``.
The end-to-end Lightning DDP check runs in the fast suite: tests/train/test_ddp.py.
"""

from __future__ import annotations

import copy
import functools
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from embedforge.models.encoder import Encoder
from embedforge.train.distributed import all_gather_with_grad
from embedforge.train.module import ContrastiveModule
from tests.conftest import build_loss
from tests.train.test_gradcache import grads, make_batch

pytestmark = pytest.mark.slow
WORLD = 2
# (loss, mini_batch_size, hard negatives, gather_queries)
CASES = [
    ("mnrl", None, 0, False),
    ("mnrl", 2, 2, False),
    ("triplet", 3, 1, False),
    ("mnrl_symmetric", 2, 1, True),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _module(
    encoder: Encoder, loss: str, mbs: int | None, gather_queries: bool
) -> ContrastiveModule:
    return ContrastiveModule(
        copy.deepcopy(encoder),
        build_loss(loss),
        functools.partial(torch.optim.SGD, lr=1.0),
        mini_batch_size=mbs,
        gather_queries=gather_queries,
    ).train()


def _shard(batch: dict, rank: int) -> dict:
    n = len(batch["query"]) // WORLD
    return {k: v[rank * n : (rank + 1) * n] for k, v in batch.items()}


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        # the gather itself: values in rank order, gradient = sum over ranks of the local slice
        x = torch.full((2, 3), float(rank + 1), requires_grad=True)
        g = all_gather_with_grad(x)
        (g * torch.arange(1.0, 5.0)[:, None]).sum().backward()
        results = {"gather": g.detach(), "gather_grad": x.grad.clone()}
        encoder = Encoder.tiny(seed=0, dropout=0.0)
        for case in CASES:
            loss, mbs, n_neg, gq = case
            module = _module(encoder, loss, mbs, gq)
            module.freeze_unused_parameters()
            value = module.forward_backward(_shard(make_batch(8, n_neg), rank))
            for p in module.encoder.parameters():
                if not p.requires_grad:
                    continue
                # what DDP does: average the gradients
                dist.all_reduce(p.grad)
                p.grad /= WORLD
            dist.all_reduce(value)
            results[case] = (value / WORLD, grads(module))
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp") / "results.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    return torch.load(out, weights_only=False)


def test_all_gather_sums_gradients_to_the_local_slice(ddp_results):
    torch.testing.assert_close(
        ddp_results["gather"], torch.tensor([1.0, 1, 2, 2])[:, None].expand(4, 3)
    )
    # rank 0 holds rows 0-1 whose weights are 1 and 2, counted once per rank (2 ranks)
    torch.testing.assert_close(
        ddp_results["gather_grad"], 2 * torch.tensor([1.0, 2.0])[:, None].expand(2, 3)
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-mbs{c[1]}-neg{c[2]}-gq{int(c[3])}")
def test_two_processes_equal_one_on_the_global_batch(ddp_results, case):
    torch.set_num_threads(1)
    loss, mbs, n_neg, gq = case
    single = _module(Encoder.tiny(seed=0, dropout=0.0), loss, None, False)
    assert single.freeze_unused_parameters() == [
        "model.0.model.pooler.dense.weight",
        "model.0.model.pooler.dense.bias",
    ]
    value = single.forward_backward(make_batch(8, n_neg))
    ddp_value, ddp_grads = ddp_results[case]
    torch.testing.assert_close(ddp_value, value, rtol=1e-5, atol=1e-6)
    ref = grads(single)
    assert ref.keys() == ddp_grads.keys()
    for k in ref:
        torch.testing.assert_close(
            ddp_grads[k], ref[k], rtol=1e-4, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}"
        )


def test_without_gathering_the_ranks_see_only_local_negatives(ddp_results):
    """The equality above is not automatic: a local-only loss differs from the global one."""
    single = _module(Encoder.tiny(seed=0, dropout=0.0), "mnrl", None, False)
    with torch.no_grad():
        batch = make_batch(8)
        local = [
            single.contrastive_loss(*single.encode_batch(_shard(batch, r))[:2])
            for r in range(WORLD)
        ]
        full = single.contrastive_loss(*single.encode_batch(batch)[:2])
    assert abs(float(sum(local) / WORLD) - float(full)) > 1e-3
    torch.testing.assert_close(ddp_results[CASES[0]][0], full, rtol=1e-5, atol=1e-6)
