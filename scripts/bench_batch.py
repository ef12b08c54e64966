"""Benchmark large batches on CPU: peak memory and seconds per pair, plain vs gradient-cached vs
sentence-transformers' CachedMultipleNegativesRankingLoss, on real CUAD passages (max length 256).

    nice -n 10 python scripts/bench_batch.py [--batch-sizes 16 64] [--steps 3] [--force]

Every configuration runs in a fresh subprocess (clean peak RSS); a watchdog kills a configuration
whose RSS passes ``--max-rss-gb`` (recorded as "did not fit") so a shared machine is never swapped
out. Each configuration runs one untimed warm-up step, then ``--steps`` timed optimizer steps on the
same batches for every mode; the fastest counts (wall time; CPU time is recorded beside it, steadier
on a shared machine). Target rows: cached / plain time per pair <= 1.3 at each batch size. Writes
``batch.json`` (after every configuration) and ``batch.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchenv import add_load_arguments, load1, machine, target

ROOT = Path(__file__).resolve().parents[1]
DATA = (
    Path(os.environ.get("EMBEDFORGE_DATA", ROOT.parent / "shared" / "data"))
    / "cuad-clause-retrieval"
)
MODES = ("plain", "cached", "st_cached")


def load_pairs(n: int) -> dict[str, list[str]]:
    """The first ``n`` (query, relevant passage) pairs of CUAD's train split, no repeated passage."""
    from embedforge.data.beir import doc_text, load_beir

    ds = load_beir(DATA)
    queries, positives, seen = [], [], set()
    for qid, rels in ds.qrels["train"].items():
        did = next((d for d, r in rels.items() if r > 0 and d not in seen), None)
        if did is None or qid not in ds.queries:
            continue
        seen.add(did)
        queries.append(ds.queries[qid])
        positives.append(doc_text(ds.corpus[did]))
        if len(queries) == n:
            break
    return {"query": queries, "positive": positives}


def run_one(mode: str, batch_size: int, mini_batch_size: int, steps: int, max_length: int) -> dict:
    """One configuration in this process: load, one untimed warm-up step, time ``steps`` steps."""
    import resource

    import torch

    from embedforge.losses import MultipleNegativesRankingLoss
    from embedforge.models.encoder import Encoder
    from embedforge.train.module import ContrastiveModule

    torch.manual_seed(0)
    enc = Encoder.from_pretrained("packaged:all-MiniLM-L6-v2", max_seq_length=max_length)
    enc.train()
    batches = [load_pairs(batch_size * steps)]
    data = batches[0]
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-5)
    if mode == "st_cached":
        from sentence_transformers.losses import CachedMultipleNegativesRankingLoss

        st = enc.model
        loss_fn = CachedMultipleNegativesRankingLoss(
            st, scale=20.0, mini_batch_size=mini_batch_size
        )
        tok = st.tokenize if hasattr(st, "tokenize") else st.preprocess

        def step(q, d):
            feats = [tok(q), tok(d)]
            loss = loss_fn(feats, torch.zeros(len(q)))
            loss.backward()  # the loss's backward hook runs the cached second pass
            return float(loss)
    else:
        module = ContrastiveModule(
            enc,
            MultipleNegativesRankingLoss(scale=20.0),
            lambda p: opt,
            mini_batch_size=mini_batch_size if mode == "cached" else None,
        )

        def step(q, d):
            return float(module.forward_backward({"query": q, "positive": d}))

    seconds, cpu_seconds, losses = [], [], []
    for s in range(-1, steps):  # step -1: warm-up (first-call allocations, optimizer state)
        q = data["query"][max(s, 0) * batch_size : (max(s, 0) + 1) * batch_size]
        d = data["positive"][max(s, 0) * batch_size : (max(s, 0) + 1) * batch_size]
        t, c = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = step(q, d)
        opt.step()
        if s >= 0:
            seconds.append(time.perf_counter() - t)
            cpu_seconds.append(time.process_time() - c)
            losses.append(loss)
    tokens = (
        enc.tokenize(data["positive"][:batch_size])["attention_mask"].sum(1).float().mean().item()
    )
    return {
        "mode": mode,
        "batch_size": batch_size,
        "mini_batch_size": mini_batch_size if mode != "plain" else None,
        "steps": steps,
        "seconds_per_step": seconds,
        "seconds_per_pair": min(seconds) / batch_size,
        "cpu_seconds_per_step": cpu_seconds,
        "cpu_seconds_per_pair": min(cpu_seconds) / batch_size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mb": rss_loaded,
        "loss": losses,
        "mean_passage_tokens": tokens,
        "torch_threads": torch.get_num_threads(),
    }


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_isolated(mode: str, b: int, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        json.dumps(
            {
                "mode": mode,
                "batch_size": b,
                "mini_batch_size": args.mini_batch_size,
                "steps": args.steps,
                "max_length": args.max_length,
            }
        ),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    peak, t0 = 0.0, time.time()
    while proc.poll() is None:
        peak = max(peak, _rss_mb(proc.pid))
        if peak > args.max_rss_gb * 1024 or time.time() - t0 > args.timeout:
            proc.kill()
            proc.wait()
            why = (
                f"RSS above {args.max_rss_gb} GB"
                if peak > args.max_rss_gb * 1024
                else f"over {args.timeout} s"
            )
            return {
                "mode": mode,
                "batch_size": b,
                "error": f"did not fit: {why}",
                "peak_rss_mb": peak,
            }
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode != 0:
        return {"mode": mode, "batch_size": b, "error": (err.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.strip().splitlines()[-1])


def cached_over_plain(rows: list[dict], b: int, goal: float = 1.3) -> dict | None:
    """The target row for batch ``b``: cached / plain seconds per pair (wall; CPU time beside it)."""
    got = {r["mode"]: r for r in rows if r["batch_size"] == b and r["mode"] in ("plain", "cached")}
    if len(got) < 2:
        return None
    ok = all("error" not in r for r in got.values())
    ratio = got["cached"]["seconds_per_pair"] / got["plain"]["seconds_per_pair"] if ok else None
    row = target(f"gradient-cached / plain seconds per pair at B={b}", ratio, goal, False)
    for r in got.values():
        if "error" in r:  # e.g. plain did not fit under --max-rss-gb: raise it on a quiet machine
            print(f"       ({r['mode']}: {r['error']})")
            row[f"{r['mode']}_error"] = r["error"]
    if ok:
        row["cpu_ratio"] = (
            got["cached"]["cpu_seconds_per_pair"] / got["plain"]["cpu_seconds_per_pair"]
        )
        print(f"       (CPU time ratio {row['cpu_ratio']:.3g})")
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for mode in MODES:
        ok = sorted(
            (r for r in rows if r["mode"] == mode and "error" not in r),
            key=lambda r: r["batch_size"],
        )
        if not ok:
            continue
        bs = [r["batch_size"] for r in ok]
        axes[0].plot(bs, [r["peak_rss_mb"] / 1024 for r in ok], "o-", label=mode)
        axes[1].plot(bs, [r["seconds_per_pair"] for r in ok], "o-", label=mode)
    for ax, title in zip(axes, ["peak RSS (GB)", "seconds per pair"]):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (pairs)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("MiniLM-L6, CPU, max length 256, CUAD passages; cached = mini-batch 16")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--mini-batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument(
        "--max-rss-gb", type=float, default=8.0, help="kill a configuration above this RSS"
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    add_load_arguments(ap)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(**json.loads(args.one))))
        return 0
    env = machine(args.max_load, args.force)
    if not DATA.is_dir():
        print(f"error: CUAD data not found at {DATA} (set EMBEDFORGE_DATA)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for b in args.batch_sizes:
        for mode in args.modes:
            r = run_isolated(mode, b, args)
            rows.append(r)
            print(
                json.dumps({k: v for k, v in r.items() if k not in ("loss", "seconds_per_step")}),
                flush=True,
            )
            (out / "batch.json").write_text(
                json.dumps({"settings": vars(args), "machine": env, "results": rows}, indent=1)
            )
    targets = [t for b in args.batch_sizes if (t := cached_over_plain(rows, b)) is not None]
    (out / "batch.json").write_text(
        json.dumps(
            {
                "settings": vars(args),
                "machine": env,
                "loadavg_end": load1(),
                "results": rows,
                "targets": targets,
            },
            indent=1,
        )
    )
    plot(rows, out / "batch.png")
    print(f"wrote {out / 'batch.json'} and {out / 'batch.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
