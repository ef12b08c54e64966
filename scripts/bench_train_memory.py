"""Training memory budget: peak RSS of training steps by batch x length x negatives, with and
without gradient caching, and with glibc's allocator told to give freed blocks back.

    nice -n 10 python scripts/bench_train_memory.py [--steps 3] [--force]
        [--configs B:L:NEG:MINI ...] [--malloc default mmap] [--out outputs/bench/train_memory.json]

Each configuration runs in a fresh subprocess (its peak RSS is its own): the packaged
all-MiniLM-L6-v2 (or ``--model tiny``), ``ContrastiveModule`` with MNRL and AdamW, ``--steps``
optimizer steps on B queries of ``--query-words`` words and B positives (+ B x NEG negatives)
that fill L tokens. Recorded: RSS after loading, peak RSS (``ru_maxrss``) and its rise over
loading, what autograd saved for backward in the last step (distinct storages: allocator-free),
seconds per step after the first. ``MINI`` 0 = plain training, else ``module.mini_batch_size``.
``--malloc mmap`` runs the child with ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB: every large
block is its own mapping, returned to the kernel when freed, instead of glibc's default that
raises the threshold after each free and then serves big tensors from a heap it never shrinks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import add_load_arguments, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORDS = "agreement party termination notice payment clause license warranty breach term".split()
#: the folder run (32 pairs of 254-token chunks) and experiment=cuad (32 pairs + 32 negatives,
#: 256 tokens), each plain and with 8- and 4-text encoder chunks, and a small batch (append
#: ``:ckpt`` to a config to recompute every layer in backward, ``:ckptN`` for the lowest N)
CONFIGS = [
    "32:254:0:0",
    "32:254:0:8",
    "32:254:0:4",
    "32:256:1:0",
    "32:256:1:8",
    "16:128:0:0",
]
MALLOC = {
    "default": {},
    "mmap": {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)},
    "mmap4m": {"MALLOC_MMAP_THRESHOLD_": str(4 * 2**20)},
    "mmap16m": {"MALLOC_MMAP_THRESHOLD_": str(16 * 2**20)},
    "trim": {"MALLOC_TRIM_THRESHOLD_": str(128 * 1024)},
}


def texts(n: int, words: int, salt: str) -> list[str]:
    """``n`` distinct texts of about ``words`` words."""
    return [
        " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(words)) + f" {salt} {i}"
        for i in range(n)
    ]


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(
    model: str,
    batch: int,
    length: int,
    negatives: int,
    mini: int,
    steps: int,
    query_words: int,
    checkpointing: int = 0,
) -> dict:
    """One configuration in this process."""
    import gc

    import torch

    from embedforge.losses import MultipleNegativesRankingLoss
    from embedforge.models.encoder import Encoder
    from embedforge.train.module import ContrastiveModule

    torch.manual_seed(0)
    if model == "tiny":
        enc = Encoder.tiny(max_seq_length=length, seed=0)
    else:
        enc = Encoder.from_pretrained(model, max_seq_length=length)
    module = ContrastiveModule(
        enc,
        MultipleNegativesRankingLoss(),
        lambda params: torch.optim.AdamW(params, lr=1e-5),
        mini_batch_size=mini or None,
    )
    module.freeze_unused_parameters()
    checkpointing = enc.set_gradient_checkpointing(
        enc.num_layers if checkpointing < 0 else checkpointing
    )
    params = [p for p in enc.parameters() if p.requires_grad]
    opt = module.optimizer_factory(params)
    data = {"query": texts(batch, query_words, "q"), "positive": texts(batch, 2 * length, "d")}
    if negatives:
        data["negatives"] = [texts(negatives, 2 * length, f"n{i}") for i in range(batch)]
    gc.collect()
    rss_loaded = rss_now_mb()
    enc.train()
    saved: dict[int, int] = {}

    def pack(x):
        if isinstance(x, torch.Tensor) and not isinstance(x, torch.nn.Parameter):
            st = x.untyped_storage()
            saved[st.data_ptr()] = st.nbytes()
        return x

    times = []
    for _ in range(steps):
        saved.clear()
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            module.forward_backward(data)
        opt.step()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": model,
        "batch_size": batch,
        "max_length": length,
        "negatives": negatives,
        "mini_batch_size": mini or None,
        "checkpointing": checkpointing,
        "texts_per_step": batch * (2 + negatives),
        "rss_after_load_mb": round(rss_loaded),
        "peak_rss_mb": round(peak),
        "step_rss_mb": round(peak - rss_loaded),
        "rss_end_mb": round(rss_now_mb()),
        # the last step's: plain training saves the whole batch's activations, gradient caching
        # one chunk's at a time (the hook sees every chunk, so its sum overstates the cached peak)
        "saved_for_backward_mb": round(sum(saved.values()) / 2**20),
        "seconds_per_step": round(sum(times[1:]) / max(1, len(times) - 1), 2),
        "first_step_s": round(times[0], 2),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="packaged:all-MiniLM-L6-v2")
    ap.add_argument(
        "--configs",
        nargs="+",
        default=CONFIGS,
        help="B:L:NEG:MINI[:ckpt[N]] (MINI 0 = off; ckpt: every layer recomputed in backward, ckptN: N)",
    )
    ap.add_argument("--malloc", nargs="+", default=["default", "mmap"], choices=list(MALLOC))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--query-words", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "train_memory.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    add_load_arguments(ap)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(**json.loads(args.one))))
        return 0
    record = {"machine": machine(max_load=args.max_load, force=args.force), "rows": []}
    for cfg in args.configs:
        b, length, neg, mini = (int(x) for x in cfg.split(":")[:4])
        tail = cfg.split(":")[4:]
        ckpt = 0 if not tail else -1 if tail[0] == "ckpt" else int(tail[0].removeprefix("ckpt"))
        for name in args.malloc:
            spec = dict(
                model=args.model,
                batch=b,
                length=length,
                negatives=neg,
                mini=mini,
                steps=args.steps,
                query_words=args.query_words,
                checkpointing=ckpt,
            )
            env = {**os.environ, **MALLOC[name]}
            p = subprocess.run(
                [sys.executable, __file__, "--one", json.dumps(spec)],
                capture_output=True,
                text=True,
                env=env,
            )
            if p.returncode:
                row = {**spec, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
            else:
                row = json.loads(p.stdout.strip().splitlines()[-1])
            row["malloc"] = name
            row["load"] = round(os.getloadavg()[0], 2)
            record["rows"].append(row)
            print(json.dumps(row), flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(table(record["rows"]))
    print(f"wrote {args.out}")
    return 0


def table(rows: list[dict]) -> str:
    lines = [
        "| B x L | negatives | encoder chunk | layers | malloc | peak RSS MB (rise) | saved for backward MB | s/step |",
        "|---|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['batch']} x {r['length']} | error: {r['error']} |")
            continue
        lines.append(
            f"| {r['batch_size']} x {r['max_length']} | {r['negatives']} |"
            f" {r['mini_batch_size'] or 'off'} |"
            f" {r.get('checkpointing') or 0} recomputed | {r['malloc']} | {r['peak_rss_mb']:,}"
            f" (+{r['step_rss_mb']:,}) | {r['saved_for_backward_mb']:,} | {r['seconds_per_step']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
