"""embedforge's default real-query run vs the sentence-transformers trainer on the same real queries.

    nice -n 10 python scripts/bench_vs_st.py [--sets icd10 cuad medquad] [--steps icd10=0 cuad=20
        medquad=60] [--st-lr 5e-5|run] [--st-seed N] [--reuse] [--work outputs/bench/vs_st]
        [--out outputs/bench/vs_st_lr_<st-lr>.json] [--force]

Per dev set with real training queries (ICD-10, CUAD, medquad-qa):
1. ``embedforge train`` with the set's default real-query configuration (:data:`SETS`; ``--steps``
   caps ``trainer.max_steps``, 0 = the configuration's own budget), in a subprocess: wall time,
   peak RSS, its metrics.json (baseline and fine-tuned, per query).
2. The sentence-transformers trainer (``SentenceTransformerTrainer``, MNRL scale 20, no-duplicates
   batches, its defaults otherwise) on **exactly the real pairs that run trained on** (the
   ``source: real`` rows of its ``pairs.jsonl``, with the run's query/document prompts), from the
   same base model, with the run's batch size, number of optimizer steps, warmup ratio and max
   length, and ``--st-lr`` (default 5e-5, its own default; ``run``: the run's learning rate); then evaluated by embedforge on the run's own eval set (rebuilt from its
   saved config): a subprocess too, for its own wall time and peak RSS.
3. NDCG@10 and Recall@5 of both, the difference embedforge - ST with its paired bootstrap 95%
   interval and randomization p-value (``eval.significance.paired_delta``), embedforge's Recall@5
   against the base, wall times and their ratio, peak RSS.

Writes the JSON after every set (a killed run keeps what it measured) and prints the table of
docs/real-queries.md. Every embedforge run starts from an empty embedding store
(:func:`fresh_store`: its train seconds include encoding each in-training validation, never
embeddings an earlier run with the same weights left behind); the datasets and the base model's
eval results are shared under ``--work``/cache, as is everything the ST child encodes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import add_load_arguments, loadavg, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EMBEDFORGE_DATA", ROOT.parent / "shared" / "data"))
#: each set's default real-query run (the overrides a user would type)
SETS: dict[str, list[str]] = {
    "icd10": [],  # the demo: real ICD-10 index terms + one sibling code as negative
    "cuad": ["experiment=cuad"],  # real train queries, batches cut from few contracts
    "medquad": [  # the generic default: real queries + offline pairs 1:3, dev-split validation
        "data=beir",
        f"data.path={DATA / 'medquad-qa'}",
        "data.name=medquad",
        "data.train_queries=true",
        "data.eval_max_queries=300",
        "data.eval_max_docs=3000",
    ],
}
DEFAULT_STEPS = {"icd10": 0, "cuad": 20, "medquad": 60}
HEADLINE = ("ndcg@10", "recall@5")


def run_child(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``cmd``; its wall seconds and peak RSS (this child alone: ``wait4``)."""
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    if rc:
        tail = log.read_text().strip().splitlines()[-3:]
        raise SystemExit(f"{' '.join(cmd[:4])} ... exited {rc}: {' | '.join(tail)} (log {log})")
    return {
        "wall_s": round(time.perf_counter() - t, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
    }


def fresh_store(shared: Path, store: Path) -> Path:
    """An embedding store for one embedforge run: no embeddings (each set of weights the run
    validates is encoded within its timed training, as a user's first run would), the shared
    cache's ``datasets`` and ``baselines`` (outside the train seconds) linked in."""
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    for sub in ("datasets", "baselines"):
        (shared / sub).mkdir(parents=True, exist_ok=True)
        (store / sub).symlink_to((shared / sub).resolve(), target_is_directory=True)
    return store


def st_child(run_dir: str, out_dir: str, lr: str = "run", seed: str = "run") -> dict[str, Any]:
    """In this process: the ST trainer on the run's real pairs, then embedforge's eval of it."""
    import warnings

    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    from embedforge.eval.retrieval import evaluate
    from embedforge.io import read_jsonl
    from embedforge.models.encoder import Encoder, resolve_model_path
    from embedforge.runs import load_run, run_eval_set

    warnings.simplefilter("ignore")
    run = Path(run_dir)
    cfg, metrics = load_run(run)
    real = [p for p in read_jsonl(run / "pairs.jsonl") if p.get("source") == "real"]
    qp, dp = cfg.model.get("query_prefix") or "", cfg.model.get("doc_prefix") or ""
    model = SentenceTransformer(resolve_model_path(cfg.model.name_or_path), device="cpu")
    model.max_seq_length = int(cfg.model.max_seq_length)
    ds = Dataset.from_dict(
        {"anchor": [qp + p["query"] for p in real], "positive": [dp + p["positive"] for p in real]}
    )
    steps = int(metrics.training["steps"])
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(Path(out_dir) / "st_trainer"),
        per_device_train_batch_size=int(cfg.data.batch_size),
        max_steps=steps,
        learning_rate=float(cfg.optim.lr) if lr == "run" else float(lr),
        warmup_ratio=float(cfg.module.warmup_ratio),
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=int(cfg.seed) if seed == "run" else int(seed),
        logging_steps=max(1, steps // 10),
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=targs,
        train_dataset=ds,
        loss=MultipleNegativesRankingLoss(model, scale=20.0),
    )
    t = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t
    model.save(str(Path(out_dir) / "st_model"))
    del trainer, model
    torch.set_num_threads(os.cpu_count() or 1)
    enc = Encoder.from_pretrained(
        str(Path(out_dir) / "st_model"), qp, dp, max_seq_length=int(cfg.model.max_seq_length)
    )
    t = time.perf_counter()
    res = evaluate(enc, run_eval_set(cfg, run), list(cfg.eval.metrics), int(cfg.eval.batch_size))
    return {
        "key": st_key(run, lr, seed),
        "seed": int(cfg.seed) if seed == "run" else int(seed),
        "real_pairs": len(real),
        "steps": steps,
        "lr": targs.learning_rate,
        "train_s": round(train_s, 1),
        "eval_s": round(time.perf_counter() - t, 1),
        "metrics": res.metrics,
        "per_query": res.per_query,
    }


def compare(ef: dict, st: dict) -> dict[str, Any]:
    """embedforge - ST per headline metric, paired over the eval queries both scored."""
    from embedforge.eval.significance import paired_delta

    out = {}
    for m in HEADLINE:
        qids = sorted(set(ef["per_query"]) & set(st["per_query"]))
        out[m] = paired_delta(
            [st["per_query"][q][m] for q in qids], [ef["per_query"][q][m] for q in qids]
        )
    return out


def one_set(name: str, steps: int, args, env: dict[str, str]) -> dict[str, Any]:
    work = Path(args.work) / name
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / "embedforge_run"
    overrides = [*SETS[name], f"hydra.run.dir={run_dir}"]
    if steps:
        overrides.append(f"trainer.max_steps={steps}")
    exe = Path(sys.executable).parent / "embedforge"
    ef_json = work / "embedforge_process.json"
    if args.reuse and (run_dir / "metrics.json").is_file() and ef_json.is_file():
        ef_proc = json.loads(ef_json.read_text())  # the run of an earlier invocation
    else:
        print(f"[{name}] embedforge train {' '.join(overrides)}", file=sys.stderr, flush=True)
        store = fresh_store(Path(env["EMBEDFORGE_CACHE"]), work / "embedforge_store")
        ef_proc = run_child(
            [str(exe), "train", *overrides],
            {**env, "EMBEDFORGE_CACHE": str(store)},
            work / "embedforge.log",
        )
        ef_json.write_text(json.dumps(ef_proc))
    m = json.loads((run_dir / "metrics.json").read_text())
    st_dir = (
        work / f"st_lr_{args.st_lr}" / ("" if args.st_seed == "run" else f"seed_{args.st_seed}")
    )
    st_dir.mkdir(parents=True, exist_ok=True)
    key, st_json, proc_json = (
        st_key(run_dir, args.st_lr, args.st_seed),
        st_dir / "st.json",
        st_dir / "process.json",
    )
    if (
        st_json.is_file()
        and proc_json.is_file()
        and json.loads(st_json.read_text()).get("key") == key
    ):
        print(f"[{name}] ST trainer: same real pairs and settings, result kept", file=sys.stderr)
        st_proc = json.loads(proc_json.read_text())
    else:
        print(f"[{name}] sentence-transformers trainer (lr {args.st_lr})", file=sys.stderr)
        st_proc = run_child(
            [
                sys.executable,
                __file__,
                "--st-child",
                str(run_dir),
                str(st_dir),
                args.st_lr,
                args.st_seed,
            ],
            env,
            st_dir / "st.log",
        )
        proc_json.write_text(json.dumps(st_proc))
    st = json.loads(st_json.read_text())
    per_query = [json.loads(line) for line in (run_dir / "per_query.jsonl").open()]
    ef = {"per_query": {r["qid"]: r["finetuned"] for r in per_query}}
    base = {"per_query": {r["qid"]: r["baseline"] for r in per_query}}
    row = {
        "overrides": overrides,
        "eval_set": m.get("eval_set"),
        "n_queries": m.get("n_queries"),
        "pairs_by_source": m.get("pairs_by_source"),
        "steps": m["training"]["steps"],
        "selected": m.get("selected"),
        "baseline": m["baseline"],
        "embedforge": m["finetuned"],
        "st": st["metrics"],
        "embedforge_minus_st": compare(ef, st),
        "embedforge_minus_base": compare(ef, base),
        "st_minus_base": compare(st, base),
        "wall_s": {
            "embedforge_run": ef_proc["wall_s"],
            # training includes choosing the pairs on validation (data.mix_select_steps)
            "embedforge_train": round(m["seconds"]["train"] + m["seconds"].get("mix_choice", 0), 2),
            "embedforge_mix_choice": m["seconds"].get("mix_choice", 0),
            "st_train": st["train_s"],
            "st_eval": st["eval_s"],
            "st_process": st_proc["wall_s"],
        },
        "peak_rss_mb": {"embedforge": ef_proc["peak_rss_mb"], "st": st_proc["peak_rss_mb"]},
        "st_real_pairs": st["real_pairs"],
        "st_lr": st["lr"],
        "embedforge_lr": load_lr(run_dir),
        "load_after": loadavg(),
    }
    row["wall_ratio"] = {
        "train": round(row["wall_s"]["embedforge_train"] / st["train_s"], 2),
        "run_vs_st_train_and_eval": round(ef_proc["wall_s"] / (st["train_s"] + st["eval_s"]), 2),
    }
    return row


def st_key(run_dir: Path, lr: str, seed: str = "run") -> str:
    """What the ST trainer's result depends on: the run's real pairs, steps, batch, seed, model
    and the learning rate (an unchanged key reuses the result: the trainer is seeded)."""
    from embedforge.io import read_jsonl, stable_hash
    from embedforge.runs import load_run

    cfg, metrics = load_run(run_dir)
    real = [
        (p["query"], p["positive"])
        for p in read_jsonl(run_dir / "pairs.jsonl")
        if p.get("source") == "real"
    ]
    return stable_hash(
        real,
        int(metrics.training["steps"]),
        int(cfg.data.batch_size),
        int(cfg.seed) if seed == "run" else int(seed),
        str(cfg.model.name_or_path),
        int(cfg.model.max_seq_length),
        float(cfg.module.warmup_ratio),
        str(cfg.optim.lr) if lr == "run" else lr,
    )


def load_lr(run_dir: Path) -> float:
    from embedforge.runs import load_config

    return float(load_config(run_dir).optim.lr)


def table(rows: dict[str, dict]) -> str:
    lines = [
        "| set | steps | base NDCG@10 / R@5 | embedforge | ST trainer | embedforge − ST NDCG@10 [95% CI] | R@5 [95% CI] | embedforge R@5 − base | train s (ef / ST) | peak RSS MB (ef / ST) |",
        "|---|---:|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        d, b = r["embedforge_minus_st"], r["embedforge_minus_base"]

        def ci(x):
            return f"{x['delta']:+.4f} [{x['low']:+.4f}, {x['high']:+.4f}]"

        lines.append(
            f"| {name} | {r['steps']} | {r['baseline']['ndcg@10']:.4f} / {r['baseline']['recall@5']:.4f}"
            f" | {r['embedforge']['ndcg@10']:.4f} / {r['embedforge']['recall@5']:.4f}"
            f" | {r['st']['ndcg@10']:.4f} / {r['st']['recall@5']:.4f}"
            f" | {ci(d['ndcg@10'])} | {ci(d['recall@5'])} | {ci(b['recall@5'])}"
            f" | {r['wall_s']['embedforge_train']} / {r['wall_s']['st_train']}"
            f" ({r['wall_ratio']['train']}x) | {r['peak_rss_mb']['embedforge']:,} /"
            f" {r['peak_rss_mb']['st']:,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--steps", nargs="*", default=[], help="SET=N (0: the config's own budget)")
    ap.add_argument("--work", default=str(ROOT / "outputs" / "bench" / "vs_st"))
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "vs_st.json"))
    ap.add_argument(
        "--st-lr",
        default="5e-5",
        help="the ST trainer's learning rate: a number (default 5e-5, its own default) or 'run'",
    )
    ap.add_argument(
        "--st-seed",
        default="run",
        help="the ST trainer's seed (default: the run's); another seed shows the spread of its result",
    )
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep an embedforge run already in --work (compare another ST setting to it)",
    )
    ap.add_argument("--st-child", nargs="+", help=argparse.SUPPRESS)  # RUN_DIR OUT_DIR [LR]
    add_load_arguments(ap)
    args = ap.parse_args(argv)
    if args.st_child:
        res = st_child(*args.st_child)
        (Path(args.st_child[1]) / "st.json").write_text(json.dumps(res))
        return 0
    if args.out == ap.get_default("out"):
        seed = "" if args.st_seed == "run" else f"_seed_{args.st_seed}"
        args.out = str(Path(args.out).with_name(f"vs_st_lr_{args.st_lr}{seed}.json"))
    steps = {**DEFAULT_STEPS, **{k: int(v) for k, v in (s.split("=") for s in args.steps)}}
    env = {
        **os.environ,
        "EMBEDFORGE_CACHE": str(Path(args.work) / "cache"),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
    }
    record: dict[str, Any] = {"machine": machine(args.max_load, args.force), "sets": {}}
    for name in args.sets:
        record["sets"][name] = one_set(name, steps[name], args, env)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
        print(table({name: record["sets"][name]}), flush=True)
    record["children_peak_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    )
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(table(record["sets"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
