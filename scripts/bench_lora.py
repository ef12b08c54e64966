"""Benchmark LoRA vs full fine-tuning: peak memory of one training step at bge-base size.

    nice -n 10 python scripts/bench_lora.py [--batch-size 8] [--max-length 128] [--r 16] [--force]

The model is a BERT-base config (12 layers, hidden 768, 110M parameters; bge-base / e5-base size)
built in-process with random weights (no download; memory does not depend on the weights). Each
configuration runs in a fresh subprocess, so its peak RSS is its own: one step = encode B queries
and B passages of ``--max-length`` tokens, MNRL loss, backward, AdamW step (AdamW allocates its
state on the first step, so one step shows the whole training footprint). On a GPU the peak
allocated CUDA memory is recorded too. Writes ``outputs/bench/lora.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import add_load_arguments, machine, target  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: BERT-base, as Encoder.tiny arguments
BASE = dict(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072)
MODES = ("full", "lora", "lora_cached")
WORDS = "agreement party termination notice payment clause license warranty breach term".split()


def texts(n: int, words: int, salt: str) -> list[str]:
    """``n`` distinct texts of ``words`` words (long enough to fill ``--max-length`` tokens)."""
    return [
        " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(words)) + f" {salt} {i}"
        for i in range(n)
    ]


def rss_now_mb() -> float:
    """This process's current resident memory (``ru_maxrss`` is a high-water mark)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(
    mode: str,
    batch_size: int,
    max_length: int,
    r: int,
    mini_batch_size: int,
    layers: int = 12,
    lora_dropout: float = 0.1,
) -> dict:
    """One configuration in this process: build, one optimizer step, peak memory."""
    import torch

    from embedforge.losses import MultipleNegativesRankingLoss
    from embedforge.models.encoder import Encoder
    from embedforge.train.module import ContrastiveModule

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    arch = {**BASE, "num_layers": layers}
    enc = Encoder.tiny(**arch, max_seq_length=max_length, dropout=0.1, seed=0).to(device)
    lora = {
        "r": r,
        "alpha": 2 * r,
        "dropout": lora_dropout,
        "target_modules": ["query", "key", "value", "dense"],
    }
    module = ContrastiveModule(
        enc,
        MultipleNegativesRankingLoss(),
        lambda params: torch.optim.AdamW(params, lr=1e-5),
        mini_batch_size=mini_batch_size if mode == "lora_cached" else None,
        lora=lora if mode.startswith("lora") else None,
    ).to(device)
    module.freeze_unused_parameters()  # as at fit: BERT's pooler (and its adapters) never train
    params = [p for p in enc.parameters() if p.requires_grad]
    opt = module.optimizer_factory(params)
    import gc

    gc.collect()
    rss_loaded = rss_now_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        cuda_loaded = torch.cuda.memory_allocated() / 2**20
    batch = {"query": texts(batch_size, 200, "q"), "positive": texts(batch_size, 200, "d")}
    enc.train()
    saved: dict[
        int, int
    ] = {}  # storage -> bytes: what autograd keeps for backward (no allocator noise)

    def pack(x):
        if isinstance(x, torch.Tensor) and not isinstance(x, torch.nn.Parameter):
            st = x.untyped_storage()
            saved[st.data_ptr()] = st.nbytes()
        return x

    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss = float(module.forward_backward(batch))
    opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    tokens = enc.tokenize(batch["positive"])["attention_mask"].sum(1).float().mean().item()
    out = {
        "mode": mode,
        "device": device,
        "batch_size": batch_size,
        "max_length": max_length,
        "mean_tokens": tokens,
        "layers": layers,
        "lora_r": r if mode.startswith("lora") else None,
        "lora_dropout": lora_dropout if mode.startswith("lora") else None,
        "mini_batch_size": mini_batch_size if mode == "lora_cached" else None,
        "parameters": sum(p.numel() for p in enc.parameters()),
        "trainable_parameters": sum(p.numel() for p in params),
        "rss_after_load_mb": round(rss_loaded, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds_step": round(seconds, 3),
        # distinct storages autograd saved (weights excluded; frozen ones may appear as views)
        "saved_for_backward_mb": round(sum(saved.values()) / 2**20, 1),
        "grad_and_adam_state_mb": round(
            3 * sum(p.numel() * p.element_size() for p in params) / 2**20, 1
        ),
        "loss": loss,
        "torch_threads": torch.get_num_threads(),
    }
    out["step_rss_mb"] = round(out["peak_rss_mb"] - out["rss_after_load_mb"], 1)
    if device == "cuda":
        out["cuda_after_load_mb"] = round(cuda_loaded, 1)
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["step_cuda_mb"] = round(out["cuda_peak_mb"] - cuda_loaded, 1)
    return out


def run_isolated(spec: dict, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--one", json.dumps(spec)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if p.returncode != 0:
        return {**spec, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--mini-batch-size", type=int, default=4, help="lora_cached's chunk size")
    ap.add_argument("--layers", type=int, default=12, help="fewer for a quick smoke run")
    ap.add_argument("--lora-dropout", type=float, default=0.1)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    add_load_arguments(ap)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(**json.loads(args.one))))
        return 0
    env_record = machine(max_load=args.max_load, force=args.force)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as cache:  # the 440 MB random BERT-base, built once
        env = {**os.environ, "EMBEDFORGE_CACHE": cache}
        for mode in args.modes:
            spec = {
                "mode": mode,
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "r": args.r,
                "mini_batch_size": args.mini_batch_size,
                "layers": args.layers,
                "lora_dropout": args.lora_dropout,
            }
            rows.append(run_isolated(spec, env))
            print(json.dumps(rows[-1]), flush=True)
    by = {r["mode"]: r for r in rows if "error" not in r}
    targets = []
    if "full" in by and "lora" in by:

        def step(
            r: dict,
        ) -> float:  # allocator-independent: saved activations + grads + AdamW state
            return r["saved_for_backward_mb"] + r["grad_and_adam_state_mb"]

        # LoRA drops the grads and AdamW moments of the weights (3x the weights) but keeps the
        # activations, which dominate at this batch; its dropout adds a copy of each adapted input
        targets.append(
            target(
                "LoRA / full step memory (saved + grads + AdamW)",
                step(by["lora"]) / step(by["full"]),
                0.8,
                higher_is_better=False,
            )
        )
        key = "step_cuda_mb" if "step_cuda_mb" in by["full"] else "step_rss_mb"
        targets.append(
            target(
                f"LoRA / full step memory ({key})",
                by["lora"][key] / max(1e-9, by["full"][key]),
                0.8,
                higher_is_better=False,
            )
        )
        targets.append(
            target(
                "LoRA trainable parameter share",
                by["lora"]["trainable_parameters"] / by["lora"]["parameters"],
                0.05,
                higher_is_better=False,
            )
        )
    record = {
        "settings": {k: v for k, v in vars(args).items() if k != "one"},
        "machine": {**env_record, "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "results": rows,
        "targets": targets,
    }
    (out / "lora.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out / 'lora.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
