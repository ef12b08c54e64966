"""Training speed and memory: embedforge's Lightning module vs the sentence-transformers trainer.

Same model (packaged all-MiniLM-L6-v2), same pairs (CUAD offline pairs: passage -> keyphrase query,
from ../shared/data), same batch size, epochs, max length, learning rate and MNRL (scale 20). Each
configuration runs in a fresh subprocess so peak RSS is its own. Writes outputs/bench/train.json.

    python scripts/bench_train.py [--pairs 96 --batch-size 16 --max-len 128 --repeats 1]
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

ROOT = Path(__file__).resolve().parents[1]
DATA = (
    Path(os.environ.get("EMBEDFORGE_DATA", ROOT.parent / "shared" / "data"))
    / "cuad-clause-retrieval"
)


def make_pairs(n: int, seed: int) -> list[dict]:
    from embedforge.data.sources import BeirSource
    from embedforge.generate.offline import OfflineGenerator

    chunks = BeirSource(str(DATA), gen_max_docs=n, seed=seed).chunks()
    return OfflineGenerator(strategies=["keyphrase", "title_keyphrase"], seed=seed).generate(
        chunks
    )[:n]


def run_embedforge(pairs, args) -> dict:
    import pytorch_lightning as pl
    import torch

    from embedforge.losses import MultipleNegativesRankingLoss
    from embedforge.models.encoder import Encoder
    from embedforge.train.datamodule import PairDataModule
    from embedforge.train.module import ContrastiveModule

    pl.seed_everything(args.seed, verbose=False)
    enc = Encoder.from_pretrained("packaged:all-MiniLM-L6-v2", max_seq_length=args.max_len)
    module = ContrastiveModule(
        enc,
        MultipleNegativesRankingLoss(scale=20.0),
        optimizer=lambda p: torch.optim.AdamW(p, lr=2e-5),
        warmup_ratio=0.1,
    )
    dm = PairDataModule(pairs, args.batch_size, args.seed, has_val=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision="32-true",
        num_sanity_val_steps=0,
    )
    t = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return {"train_s": time.perf_counter() - t, "steps": int(trainer.global_step)}


def run_st(pairs, args) -> dict:
    import warnings

    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    from embedforge.models.encoder import resolve_model_path

    warnings.simplefilter("ignore")
    model = SentenceTransformer(resolve_model_path("packaged:all-MiniLM-L6-v2"), device="cpu")
    model.max_seq_length = args.max_len
    ds = Dataset.from_dict(
        {"anchor": [p["query"] for p in pairs], "positive": [p["positive"] for p in pairs]}
    )
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(Path(args.tmp) / "st"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=args.seed,
        logging_steps=1000,
        disable_tqdm=True,
        dataloader_drop_last=False,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=targs,
        train_dataset=ds,
        loss=MultipleNegativesRankingLoss(model, scale=20.0),
    )
    t = time.perf_counter()
    out = trainer.train()
    return {"train_s": time.perf_counter() - t, "steps": int(out.global_step)}


def child(args) -> None:
    pairs = make_pairs(args.pairs, args.seed)
    t = time.perf_counter()
    res = (run_embedforge if args.impl == "embedforge" else run_st)(pairs, args)
    res.update(
        impl=args.impl,
        total_s=time.perf_counter() - t,
        n_pairs=len(pairs),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    print("RESULT " + json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--impl", choices=["embedforge", "st"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=str(ROOT / "outputs" / "bench" / "tmp"))
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "train.json"))
    args = ap.parse_args()
    if args.impl:
        return child(args)
    results = []
    for r in range(args.repeats):
        for impl in ["embedforge", "st"]:
            cmd = [
                sys.executable,
                __file__,
                "--impl",
                impl,
                "--pairs",
                str(args.pairs),
                "--batch-size",
                str(args.batch_size),
                "--max-len",
                str(args.max_len),
                "--seed",
                str(args.seed),
                "--tmp",
                args.tmp,
            ]
            out = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            )
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{impl} failed:\n{out.stderr[-3000:]}")
            res = json.loads(line[7:]) | {"repeat": r}
            print(json.dumps(res))
            results.append(res)

    def best(impl, key):
        return min(x[key] for x in results if x["impl"] == impl)

    summary = {
        "settings": {
            "pairs": args.pairs,
            "batch_size": args.batch_size,
            "max_len": args.max_len,
            "epochs": 1,
            "model": "all-MiniLM-L6-v2 (packaged)",
            "data": "CUAD offline keyphrase pairs",
            "threads": os.cpu_count(),
        },
        "runs": results,
        "ratio_train_time_embedforge_over_st": best("embedforge", "train_s")
        / best("st", "train_s"),
        "ratio_peak_rss_embedforge_over_st": best("embedforge", "peak_rss_mb")
        / best("st", "peak_rss_mb"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
