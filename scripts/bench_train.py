"""Training speed and memory: embedforge's Lightning module vs the sentence-transformers trainer.

Same model (packaged all-MiniLM-L6-v2), same pairs, batch size, epochs, max length, learning rate
and MNRL (scale 20). The pairs are real CUAD training pairs (a query of ``qrels/train.tsv`` and a
passage judged relevant to it, ``title + text``, from ../shared/data), a seeded sample, so their
lengths vary as in the data (queries ~45-120 tokens, passages ~240-320, a few far longer).

Rows: embedforge with length grouping off and on (``data.length_grouping``, mega-batch ``M``), and
the sentence-transformers trainer with its no-duplicates batch sampler (the one that matches ours;
its default sampler allows duplicate texts in a batch) and otherwise its defaults: it does not group
by length (``group_by_length`` is a Hugging Face Trainer option its batch samplers ignore). Each
configuration runs in a fresh subprocess so peak RSS is its own. Reports pairs/s and the ratio to
the sentence-transformers trainer, with PASS/FAIL target rows; writes outputs/bench/train.json.

    nice -n 10 python scripts/bench_train.py [--pairs 256 --batch-size 16 --max-len 256
        --mega-batch 8 --repeats 2] [--force]
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
    """``n`` real CUAD training pairs (query, relevant passage), a seeded sample of all of them."""
    import random

    from embedforge.data.beir import doc_text, load_beir

    ds = load_beir(DATA)
    pairs = [
        {"query": ds.queries[qid], "positive": doc_text(ds.corpus[did])}
        for qid, rels in sorted(ds.qrels["train"].items())
        if qid in ds.queries
        for did, rel in sorted(rels.items())
        if rel > 0 and did in ds.corpus
    ]
    random.Random(seed).shuffle(pairs)
    return pairs[:n]


def padding(pairs: list[dict], batches: list[list[int]], max_len: int) -> dict:
    """Token counts the encoder pads to (each forward pads to its longest text) vs real tokens."""
    from transformers import AutoTokenizer

    from embedforge.models.encoder import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("packaged:all-MiniLM-L6-v2"))
    out = {}
    for col in ("query", "positive"):
        ids = tok([p[col] for p in pairs], truncation=True, max_length=max_len)["input_ids"]
        n = [len(x) for x in ids]
        real = sum(n[i] for b in batches for i in b)
        padded = sum(len(b) * max(n[i] for i in b) for b in batches)
        out[f"{col}_pad_fraction"] = round(1 - real / padded, 4)
    return out


def run_embedforge(pairs, args) -> dict:
    import pytorch_lightning as pl
    import torch

    from embedforge.losses import MultipleNegativesRankingLoss
    from embedforge.models.encoder import Encoder
    from embedforge.train.datamodule import PairDataModule, token_lengths
    from embedforge.train.module import ContrastiveModule

    pl.seed_everything(args.seed, verbose=False)
    enc = Encoder.from_pretrained("packaged:all-MiniLM-L6-v2", max_seq_length=args.max_len)
    module = ContrastiveModule(
        enc,
        MultipleNegativesRankingLoss(scale=20.0),
        optimizer=lambda p: torch.optim.AdamW(p, lr=2e-5),
        warmup_ratio=0.1,
    )
    grouping = args.length_grouping
    dm = PairDataModule(
        pairs,
        args.batch_size,
        args.seed,
        has_val=False,
        length_grouping=grouping,
        lengths=token_lengths(pairs, enc.token_counts) if grouping else None,
    )
    pad = padding(pairs, list(dm.train_dataloader().batch_sampler), args.max_len)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision="32-true",
        num_sanity_val_steps=0,
    )
    t = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return {"train_s": time.perf_counter() - t, "steps": int(trainer.global_step), **pad}


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
        num_train_epochs=args.epochs,
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


ROWS = {  # row name -> (implementation, data.length_grouping)
    "embedforge": ("embedforge", None),
    "embedforge_length_grouped": ("embedforge", "mega"),
    "st": ("st", None),
}


def child(args) -> None:
    pairs = make_pairs(args.pairs, args.seed)
    t = time.perf_counter()
    res = (run_embedforge if args.impl == "embedforge" else run_st)(pairs, args)
    res.update(
        impl=args.impl,
        length_grouping=args.length_grouping,
        total_s=time.perf_counter() - t,
        n_pairs=len(pairs),
        pairs_per_s=len(pairs) * args.epochs / res["train_s"],
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    print("RESULT " + json.dumps(res))


def main() -> None:
    from benchenv import add_load_arguments, load1, machine, target

    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--mega-batch", type=int, default=8, help="length grouping's mega-batch (M)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--impl", choices=["embedforge", "st"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--length-grouping", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=str(ROOT / "outputs" / "bench" / "tmp"))
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "train.json"))
    add_load_arguments(ap)
    args = ap.parse_args()
    if args.impl:
        return child(args)
    env = machine(args.max_load, args.force)
    results = []
    for r in range(args.repeats):
        for row in args.rows:
            impl, grouping = ROWS[row]
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
                "--epochs",
                str(args.epochs),
                "--seed",
                str(args.seed),
                "--tmp",
                args.tmp,
            ]
            if grouping:
                cmd += ["--length-grouping", str(args.mega_batch)]
            out = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            )
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{row} failed:\n{out.stderr[-3000:]}")
            res = json.loads(line[7:]) | {"row": row, "repeat": r, "load1": load1()}
            print(json.dumps(res), flush=True)
            results.append(res)

    def best(row, key, pick=max):
        vals = [x[key] for x in results if x["row"] == row]
        return pick(vals) if vals else None

    def ratio(row, key, pick=max):
        a, b = best(row, key, pick), best("st", key, pick)
        return a / b if a is not None and b else None

    targets = [
        target(
            "embedforge (length grouping off) / sentence-transformers trainer, pairs/s",
            ratio("embedforge", "pairs_per_s"),
            1.0,
        ),
        target(
            f"embedforge (length grouping M={args.mega_batch}) / sentence-transformers trainer,"
            " pairs/s",
            ratio("embedforge_length_grouped", "pairs_per_s"),
            1.2,
        ),
    ]
    summary = {
        "settings": {
            "pairs": args.pairs,
            "batch_size": args.batch_size,
            "max_len": args.max_len,
            "epochs": args.epochs,
            "mega_batch": args.mega_batch,
            "model": "all-MiniLM-L6-v2 (packaged)",
            "data": "CUAD train qrels pairs (query, relevant passage title + text), seeded sample",
            "st_trainer": "batch_sampler=NO_DUPLICATES, no length grouping (its default)",
        },
        "machine": env,
        "loadavg_end": load1(),
        "runs": results,
        "pairs_per_s": {row: best(row, "pairs_per_s") for row in args.rows},
        "ratio_pairs_per_s_over_st": {
            row: ratio(row, "pairs_per_s") for row in args.rows if row != "st"
        },
        "ratio_peak_rss_over_st": {
            row: ratio(row, "peak_rss_mb", min) for row in args.rows if row != "st"
        },
        "targets": targets,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
