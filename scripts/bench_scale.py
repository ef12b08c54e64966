"""Scale benchmark (issue 24): seconds and peak RSS per stage on synthetic corpora, and their growth.

End to end through the library's own code on synthetic passages (words of the packaged MiniLM
vocabulary, 20-100 words each; queries are 8 words of one passage, which is their one relevant
document), one fresh process per size, each stage's peak RSS taken from ``VmHWM`` (reset before
the stage through ``/proc/self/clear_refs``):

- ``encode``: the corpus through the embedding store (a miss: every passage encoded);
- ``evaluate``: full-corpus evaluation (queries encoded, corpus from the store, exact search);
- ``mine``: hard-negative mining, 1 negative per pair (corpus from the store, exact search).

Then the search path alone (``embedforge.eval.retrieval.search``, as evaluation and mining call
it) on random unit vectors: ``--search-sizes 1000000`` (1.5 GB of vectors; 10,000,000 needs 15 GB
and is supported, not run by default). Growth exponent of a stage between sizes n1 < n2:
``log(t2 / t1) / log(n2 / n1)`` (1.0 = linear).

    python scripts/bench_scale.py --sizes 10000 50000 200000 --out docs/bench_scale.json --force

With ``PYTHONPATH`` pointing at an older checkout (no embedding store) the same stages run without
a store: before/after figures from one script.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from benchenv import loadavg, machine  # noqa: E402

#: the end-to-end stages, in the order they run
STAGES = ["encode", "evaluate", "mine"]


def rss_mb(field: str = "VmRSS") -> float:
    """This process's ``VmRSS`` (now) or ``VmHWM`` (peak since the last reset), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Restart ``VmHWM`` from the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def stage(name: str, fn, rows: dict[str, Any]) -> Any:
    """Run ``fn`` and record its seconds, peak RSS, the RSS it started from, and the peak of the
    anonymous (heap) part alone, sampled every 0.2 s: memory-mapped vectors count in RSS as page
    cache the kernel can drop, ``RssAnon`` is what the process really holds."""
    import gc
    import threading

    gc.collect()
    reset_peak()
    before = rss_mb()
    anon = [rss_mb("RssAnon")]
    done = threading.Event()

    def sample_anon():
        while not done.wait(0.2):
            anon.append(rss_mb("RssAnon"))

    sampler = threading.Thread(target=sample_anon, daemon=True)
    sampler.start()
    t = time.perf_counter()
    try:
        out = fn()
    finally:
        done.set()
        sampler.join()
    rows[name] = {
        "seconds": round(time.perf_counter() - t, 2),
        "peak_rss_mb": round(rss_mb("VmHWM")),
        "peak_anon_mb": round(max(anon + [rss_mb("RssAnon")])),
        "rss_before_mb": round(before),
        "load": loadavg()[0],
    }
    print(f"  {name}: {rows[name]}", file=sys.stderr, flush=True)
    return out


def synthetic(n_docs: int, n_queries: int, seed: int = 0):
    """(corpus id -> text, queries id -> text, qrels): passages of vocabulary words."""
    import numpy as np

    from embedforge.models.encoder import resolve_model_path

    vocab_file = Path(resolve_model_path("packaged:all-MiniLM-L6-v2")) / "vocab.txt"
    words = [w for w in vocab_file.read_text().split() if w.isalpha() and len(w) > 2]
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 100, n_docs)
    picks = rng.integers(0, len(words), int(lengths.sum()))
    corpus, start = {}, 0
    for i, n in enumerate(lengths):
        corpus[f"d{i}"] = " ".join(words[j] for j in picks[start : start + n])
        start += n
    queries, qrels = {}, {}
    for q, d in enumerate(rng.choice(n_docs, n_queries, replace=False)):
        text = corpus[f"d{d}"].split()
        queries[f"q{q}"] = " ".join(rng.choice(text, 8))
        qrels[f"q{q}"] = {f"d{d}": 1}
    return corpus, queries, qrels


def child(n_docs: int, args: argparse.Namespace) -> dict[str, Any]:
    """One size, end to end, in this (fresh) process."""
    from embedforge.data.hard_negatives import mine_hard_negatives
    from embedforge.eval.retrieval import RetrievalSet, evaluate
    from embedforge.models.encoder import Encoder

    rows: dict[str, Any] = {"start_rss_mb": round(rss_mb())}
    corpus, queries, qrels = stage("synthesize", lambda: synthetic(n_docs, args.queries), rows)
    if args.model == "tiny":
        encoder = Encoder.tiny()
    else:
        encoder = Encoder.from_pretrained("packaged:all-MiniLM-L6-v2")
    try:
        from embedforge.models.store import EmbeddingStore

        encoder.store = EmbeddingStore(Path(args.cache_dir) / f"{args.model}-{n_docs}")
        rows["store"] = True
    except ImportError:  # an older checkout: every stage encodes for itself
        rows["store"] = False
    texts = list(corpus.values())
    rows["sizes"] = {"docs": n_docs, "queries": len(queries)}
    if "encode" in args.stages:
        stage("encode", lambda: encoder.encode(texts, "doc", args.batch_size, False), rows)
    if "evaluate" in args.stages:
        rset = RetrievalSet(corpus, queries, qrels, name="synthetic")
        res = stage("evaluate", lambda: evaluate(encoder, rset, show_progress=False), rows)
        rows["ndcg@10"] = round(res.metrics["ndcg@10"], 4)
    if "mine" in args.stages:
        pairs = [{"query": queries[q], "positive": corpus[next(iter(qrels[q]))]} for q in queries]
        stage(
            "mine",
            lambda: mine_hard_negatives(pairs, corpus, encoder, 1, margin=None),
            rows,
        )
    if rows["store"]:
        rows["encodes"] = encoder.store.summary()["by_weights"]
    return rows


def search_child(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The search path alone on ``n`` random unit vectors of ``args.dim`` dimensions."""
    import numpy as np

    from embedforge.eval.retrieval import search

    rows: dict[str, Any] = {"start_rss_mb": round(rss_mb())}

    def vectors():
        rng = np.random.default_rng(0)
        centers = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
        if args.vectors_dir:  # on disk, as the embedding store keeps them: page cache, not heap
            path = Path(args.vectors_dir) / f"vectors_{n}_{args.dim}_{args.vector_dtype}.npy"
            d = np.lib.format.open_memmap(path, "w+", args.vector_dtype, (n, args.dim))
        else:
            d = np.empty((n, args.dim), args.vector_dtype)
        for s in range(0, n, 100_000):  # filled in blocks: no float64 copy of the whole
            m = min(100_000, n - s)
            block = rng.standard_normal((m, args.dim), dtype=np.float32)
            if args.clusters:  # embeddings cluster by topic; uniform random vectors do not
                block = block + 2.0 * centers[rng.integers(0, args.clusters, m)]
            d[s : s + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
        q = d[rng.choice(n, args.queries, replace=False)] + 0.05 * rng.standard_normal(
            (args.queries, args.dim), dtype=np.float32
        )
        if args.vectors_dir:
            d.flush()
            del d
            d = np.load(path, mmap_mode="r")
        return q.astype(np.float32), d

    q, d = stage("vectors", vectors, rows)
    # exact search on every query, or on a seeded sample of them (10M: ~1.5 min per 1,000 queries)
    sample = np.arange(len(q))
    if args.exact_sample and args.exact_sample < len(q):
        sample = np.sort(np.random.default_rng(1).choice(len(q), args.exact_sample, replace=False))
    rows["exact_queries"] = int(len(sample))
    exact, _ = stage("exact_top100", lambda: search(q[sample], d, 100), rows)
    try:
        from embedforge.eval.ann import SearchSettings, faiss_search, recall_vs_exact
    except ImportError:  # an older checkout
        return rows
    settings = SearchSettings(approx_above=0, nprobe=args.nprobe)
    approx, _, info = stage("approx_top100", lambda: faiss_search(q, d, 100, settings), rows)
    rows["approx"] = {**info, **recall_vs_exact(approx, exact, sample)}
    if args.vectors_dir:
        Path(d.filename).unlink()
    return rows


def exponents(by_size: dict[int, dict[str, Any]], stages: list[str]) -> dict[str, dict]:
    """Each stage's growth exponent of seconds and of peak RSS above the start, per size step."""
    sizes = sorted(by_size)
    out: dict[str, dict] = {}
    for s in stages:
        steps = {}
        for a, b in zip(sizes, sizes[1:]):
            ta, tb = by_size[a][s]["seconds"], by_size[b][s]["seconds"]
            if ta > 0 and tb > 0:
                steps[f"{a}->{b}"] = round(math.log(tb / ta) / math.log(b / a), 2)
        out[s] = steps
    return out


def table(result: dict[str, Any]) -> str:
    """The markdown table of sizes x stages (seconds / peak RSS MB) with exponents."""
    stages = result["stages"]
    lines = [
        "| docs | " + " | ".join(f"{s} s / peak MB" for s in stages) + " | load |",
        "|---:|" + "---:|" * len(stages) + "---:|",
    ]
    for n, r in sorted(result["sizes"].items(), key=lambda x: int(x[0])):
        cells = [f"{r[s]['seconds']} / {r[s]['peak_rss_mb']}" for s in stages]
        lines.append(f"| {int(n):,} | " + " | ".join(cells) + f" | {r[stages[-1]]['load']} |")
    for s, steps in result["exponents"].items():
        if steps:
            lines.append(f"\n{s} time exponents: {steps}")
    for n, r in sorted(result.get("search", {}).items(), key=lambda x: int(x[0])):
        e = r["exact_top100"]
        lines.append(
            f"\nsearch {int(n):,} x {result['dim']}-d, {result['queries']} queries;"
            f" exact top-100 of {r.get('exact_queries', result['queries'])}: {e['seconds']} s,"
            f" peak {e['peak_rss_mb']} MB (heap {e.get('peak_anon_mb', '?')} MB;"
            f" vectors {r['vectors']['peak_rss_mb']} MB)"
        )
        if "approx" in r:
            a, t = r["approx"], r["approx_top100"]
            lines.append(
                f"approximate ({a['index']}, nprobe {a['nprobe']}): {t['seconds']} s"
                f" (build {a['build_s']} s), peak {t['peak_rss_mb']} MB (heap"
                f" {t.get('peak_anon_mb', '?')} MB), recall@100 {a['recall@100']}"
                f" on {a['recall_sample']} queries"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[10_000, 50_000, 200_000])
    p.add_argument("--search-sizes", type=int, nargs="*", default=[1_000_000])
    p.add_argument(
        "--stages", nargs="*", default=STAGES, choices=STAGES, help="which stages (in order)"
    )
    p.add_argument("--model", choices=["tiny", "minilm"], default="tiny")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--nprobe", type=int, default=64, help="FAISS cells searched per query")
    p.add_argument(
        "--clusters",
        type=int,
        default=1000,
        help="search vectors around this many centers (0: uniform)",
    )
    p.add_argument(
        "--vectors-dir",
        default=None,
        help="search vectors as a memory-mapped .npy here (as the store keeps them), deleted after",
    )
    p.add_argument("--vector-dtype", choices=["float32", "float16"], default="float32")
    p.add_argument(
        "--exact-sample", type=int, default=0, help="exact search on this many queries (0: all)"
    )
    p.add_argument("--cache-dir", default=None, help="embedding store root (default: a temp dir)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--force", action="store_true", help="measure on a busy machine")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--search-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None or args.search_child is not None:
        rows = child(args.child, args) if args.child else search_child(args.search_child, args)
        print(json.dumps(rows))
        return
    env = machine(force=args.force)
    cache = args.cache_dir or tempfile.mkdtemp(prefix="bench_scale_")
    result: dict[str, Any] = {"machine": env, "model": args.model, "queries": args.queries}
    result["dim"], result["sizes"], result["search"] = args.dim, {}, {}
    result["stages"] = args.stages
    forwarded = [
        "--stages",
        *args.stages,
        "--model",
        args.model,
        "--queries",
        str(args.queries),
        "--dim",
        str(args.dim),
    ]
    forwarded += ["--batch-size", str(args.batch_size), "--cache-dir", cache]
    forwarded += ["--nprobe", str(args.nprobe), "--clusters", str(args.clusters)]
    forwarded += ["--vector-dtype", args.vector_dtype, "--exact-sample", str(args.exact_sample)]
    if args.vectors_dir:
        forwarded += ["--vectors-dir", args.vectors_dir]
    for flag, sizes, key in [
        ("--child", args.sizes, "sizes"),
        ("--search-child", args.search_sizes, "search"),
    ]:
        for n in sizes:
            print(f"{key} {n:,}", file=sys.stderr, flush=True)
            out = subprocess.run(
                [sys.executable, __file__, flag, str(n), *forwarded],
                stdout=subprocess.PIPE,
                text=True,
                check=True,
                env={**os.environ},
            ).stdout
            result[key][n] = json.loads(out.strip().splitlines()[-1])
    result["exponents"] = exponents(result["sizes"], args.stages)
    result["load_after"] = loadavg()
    print(table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
