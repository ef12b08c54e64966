"""Corpus encoding sharded over DDP ranks: 2 CPU processes (gloo) give one process's embeddings,
and in-training validation encodes a share per rank and scores what one process scores."""

from __future__ import annotations

import functools
import json
import os
import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from embedforge.eval.retrieval import RetrievalSet
from embedforge.models.encoder import Encoder
from embedforge.train.distributed import encode_sharded
from embedforge.train.module import ContrastiveModule
from tests.conftest import build_loss

WORLD = 2
TEXTS = [f"passage {i} " + "about the clause " * (i % 5) for i in range(23)]  # not a multiple of 2


#: a validation set over TEXTS: query i is relevant to passage i
VAL = RetrievalSet(
    corpus={f"d{i}": t for i, t in enumerate(TEXTS)},
    queries={f"q{i}": t.split(" about")[0] for i, t in enumerate(TEXTS)},
    qrels={f"q{i}": {f"d{i}": 1} for i in range(len(TEXTS))},
    name="val",
)


def validation_module() -> tuple[ContrastiveModule, list[int]]:
    """A module over VAL whose encoder counts the texts it is asked to encode."""
    enc = Encoder.tiny(seed=0)
    asked: list[int] = []
    plain = enc.encode
    enc.encode = lambda texts, *a, **k: asked.append(len(texts)) or plain(texts, *a, **k)
    module = ContrastiveModule(
        enc, build_loss("mnrl"), functools.partial(torch.optim.SGD, lr=0.1), val_set=VAL
    )
    return module, asked


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        got = encode_sharded(Encoder.tiny(seed=0), TEXTS, "doc", batch_size=4)
        np.save(f"{out}.{rank}.npy", got)
        module, asked = validation_module()  # in-training validation: a share per rank
        scores = module.run_validation(sharded=True)
        with open(f"{out}.{rank}.json", "w") as f:
            json.dump({"scores": scores, "asked": asked}, f)
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
    # validation: each rank encoded about half of the corpus and of the queries, and every rank
    # scored what one process scores
    module, asked = validation_module()
    alone = module.run_validation()
    assert asked == [len(TEXTS), len(TEXTS)]  # docs, then queries
    for rank in range(WORLD):
        got = json.loads(Path(f"{out}.{rank}.json").read_text())
        assert got["asked"] == [11 + rank, 11 + rank]  # 23 texts: shares of 11 and 12
        assert got["scores"].keys() == alone.keys() and "val/ndcg@10" in alone
        for k, v in alone.items():
            assert abs(got["scores"][k] - v) < 1e-6, k
