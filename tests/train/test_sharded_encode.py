"""Corpus encoding sharded over DDP ranks: 2 CPU processes (gloo) give one process's embeddings."""

from __future__ import annotations

import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from embedforge.models.encoder import Encoder
from embedforge.train.distributed import encode_sharded

WORLD = 2
TEXTS = [f"passage {i} " + "about the clause " * (i % 5) for i in range(23)]  # not a multiple of 2


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        got = encode_sharded(Encoder.tiny(seed=0), TEXTS, "doc", batch_size=4)
        np.save(f"{out}.{rank}.npy", got)
    finally:
        dist.destroy_process_group()


def test_two_ranks_encode_a_share_each_and_every_rank_gets_all(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "emb")
    mp.spawn(_worker, args=(port, out), nprocs=WORLD, join=True)
    one = Encoder.tiny(seed=0).encode(TEXTS, "doc", batch_size=4, show_progress=False)
    for rank in range(WORLD):
        got = np.load(f"{out}.{rank}.npy")
        assert got.shape == one.shape
        np.testing.assert_allclose(got, one, atol=1e-6)
    assert encode_sharded(Encoder.tiny(seed=0), TEXTS[:3], "doc").shape == (3, one.shape[1])
