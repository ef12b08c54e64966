"""Which nodes lose quality when quantized: a per-node int8 sensitivity sweep on real texts.

    nice -n 10 python scripts/bench_int8_sensitivity.py [--model packaged:all-MiniLM-L6-v2]
        [--beir ../shared/data/legal-summarization] [--max-queries 200 --max-docs 500]
        [--parity-texts 64] [--out outputs/bench/int8_sensitivity.json]
    nice -n 10 python scripts/bench_int8_sensitivity.py --recipes all_matmuls default [--speed]
        [--beir DIR --max-queries N --max-docs N] --out outputs/bench/int8_recipes_<set>.json

On the fused fp32 graph (what the export ships), the quantizable nodes are each layer's
``Attention`` (Q/K/V in one GEMM), attention output, FFN in and FFN out projections. Phase 1
quantizes one node at a time (the rest fp32) and measures mean/min cosine against the fp32 graph
on ``--parity-texts`` docs + queries; the cosine deficit ranks the nodes (``ranked``, most
sensitive first). ``--recipes NAME ...`` instead evaluates whole recipes (:data:`RECIPES`, built
from that ranking) on the eval subset: NDCG@10 / Recall@5 drop vs fp32 with paired bootstrap
intervals, cosine over every eval text, size, and (``--speed``) texts/s vs torch, best of
``--speed-rounds`` interleaved rounds: the rows of the docs/ship.md tables. ``--model`` may be a
run's ``model/`` dir (the fine-tuned table). The JSON is rewritten after every row and records the load average.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from benchenv import add_load_arguments, loadavg, machine

ROOT = Path(__file__).resolve().parents[1]
KINDS = {
    "qkv": r"^Attention_\d+$",
    "attn_out": r"/attention/output/dense/MatMul$",
    "ffn_in": r"/intermediate/dense/MatMul$",
    "ffn_out": r"/output/dense/MatMul$",
}


def quantizable_nodes(model_path: Path) -> dict[str, str]:
    """``{label: node name}`` of the nodes dynamic int8 quantizes (Attention, constant-B MatMul);
    labels like ``L5.ffn_out``."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    out = {}
    for n in graph.node:
        if n.op_type == "Attention" or (n.op_type == "MatMul" and n.input[1] in inits):
            m = re.search(r"layer\.(\d+)/", n.name) or re.search(r"Attention_(\d+)", n.name)
            kind = next(
                k for k, p in KINDS.items() if re.search(p, n.name) and not _is_attn_out(k, n.name)
            )
            out[f"L{m.group(1)}.{kind}"] = n.name
    return out


def _is_attn_out(kind: str, name: str) -> bool:
    """``/attention/output/dense`` also matches the FFN-out pattern ``/output/dense``."""
    return kind == "ffn_out" and "/attention/output/" in name


def only(nodes: dict[str, str], keep: list[str]) -> list[str]:
    """Exclusion regexes that leave exactly the nodes labelled ``keep`` quantized."""
    return [f"^{re.escape(n)}$" for label, n in nodes.items() if label not in keep]


#: recipes of the docs/ship.md table (Int8Recipe arguments); "default" is Int8Recipe() as shipped
RECIPES: dict[str, dict] = {
    "all_matmuls": dict(exclude=[], blockwise=[]),  # before issue 27: every weight MatMul int8
    # the FFN output projections the sweep ranks most sensitive (MiniLM-L6: layers 0, 2, 1)
    "fp32_ffn_out_0": dict(exclude=[r"/layer\.0/output/dense/MatMul$"]),
    "fp32_ffn_out_02": dict(exclude=[r"/layer\.[02]/output/dense/MatMul$"]),
    "fp32_ffn_out_012": dict(exclude=[r"/layer\.[012]/output/dense/MatMul$"]),
    # every weight MatMul blockwise (MatMulNBits), the fused Attention dynamic (QAttention)
    "blockwise_all": dict(blockwise=[r"MatMul$"]),
    "blockwise_128_all": dict(blockwise=[r"MatMul$"], block_size=128),
    "blockwise_ffn_out_012": dict(blockwise=[r"/layer\.[012]/output/dense/MatMul$"]),
    "default": {},
    # the same as all_matmuls on the unfused graph (the export's `int8` variant)
    "plain_all_matmuls": dict(graph="plain"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="packaged:all-MiniLM-L6-v2")
    ap.add_argument("--beir", default=str(ROOT / ".." / "shared" / "data" / "legal-summarization"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-queries", type=int, default=200)
    ap.add_argument("--max-docs", type=int, default=500)
    ap.add_argument("--parity-texts", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--reuse-phase1", action="store_true", help="take phase 1 from --out when it has every node"
    )
    ap.add_argument(
        "--recipes",
        nargs="*",
        default=None,
        choices=list(RECIPES),
        help="skip the sweep; evaluate these recipes (the docs/ship.md table rows)",
    )
    ap.add_argument("--speed", action="store_true", help="with --recipes: also time torch and each")
    ap.add_argument(
        "--speed-rounds", type=int, default=5, help="--speed: best of N interleaved rounds"
    )
    ap.add_argument("--work", default=str(ROOT / "outputs" / "bench" / "int8_sensitivity_models"))
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "int8_sensitivity.json"))
    add_load_arguments(ap)
    args = ap.parse_args(argv)
    if args.recipes:
        run_recipes(args)
    else:
        run(args)
    return 0


def run(args) -> None:
    from embedforge.export.checks import parity
    from embedforge.export.eval_set import beir_eval_set, subset
    from embedforge.export.onnx_encoder import OnnxEncoder
    from embedforge.export.quantize import Int8Recipe, quantize_int8
    from embedforge.io import write_json

    env = machine(args.max_load, args.force)
    work = Path(args.work)
    rset = subset(beir_eval_set(args.beir, args.split), args.max_queries, args.max_docs)
    texts = {
        "doc": list(rset.corpus.values())[: args.parity_texts],
        "query": list(rset.queries.values())[: args.parity_texts],
    }
    fused = _fused_graph(args.model, work)
    nodes = quantizable_nodes(fused / "model.onnx")
    out: dict = {
        "model": args.model,
        "machine": env,
        "eval_set": rset.summary(),
        "parity_texts": {k: len(v) for k, v in texts.items()},
        "nodes": nodes,
        "phase1": {},
    }

    def embed(d: Path) -> np.ndarray:
        enc = OnnxEncoder(d, threads=args.threads)
        return np.concatenate([enc.encode(t, k) for k, t in texts.items()])

    ref = embed(fused)
    qdir = fused.parent / "q"
    if args.reuse_phase1 and Path(args.out).is_file():
        old = json.loads(Path(args.out).read_text()).get("phase1", {})
        out["phase1"] = {lb: old[lb] for lb in nodes if lb in old}
    for label in nodes:
        if label in out["phase1"]:
            continue
        t0 = time.perf_counter()
        quantize_int8(fused, qdir, Int8Recipe(exclude=only(nodes, [label]), name=label))
        par = parity(ref, embed(qdir))
        out["phase1"][label] = {
            "mean_cosine": round(par["mean_cosine"], 6),
            "min_cosine": round(par["min_cosine"], 6),
            "seconds": round(time.perf_counter() - t0, 1),
            "loadavg": loadavg(),
        }
        print(label, json.dumps(out["phase1"][label]), flush=True)
        write_json(args.out, out)
    out["ranked"] = sorted(nodes, key=lambda lb: out["phase1"][lb]["mean_cosine"])
    print("most sensitive first:", " ".join(out["ranked"]))
    write_json(args.out, out)
    print(f"wrote {args.out}")


def run_recipes(args) -> None:
    """The table rows: each recipe on the fused graph vs the fp32 fused graph (= torch to 1e-6):
    NDCG@10/Recall@5 drop with paired bootstrap intervals, cosine over every eval text, size, and
    with ``--speed`` texts/s of torch and each recipe at batch 1 and 32."""
    from bench_export import Recording

    from embedforge.eval.retrieval import evaluate
    from embedforge.export.checks import drop_interval, onnx_size_mb, parity
    from embedforge.export.eval_set import beir_eval_set, subset
    from embedforge.export.onnx_encoder import OnnxEncoder
    from embedforge.export.quantize import Int8Recipe, quantize_int8
    from embedforge.io import write_json

    env = machine(args.max_load, args.force)
    work = Path(args.work)
    fused = _fused_graph(args.model, work)
    rset = subset(beir_eval_set(args.beir, args.split), args.max_queries, args.max_docs)
    out: dict = {"model": args.model, "machine": env, "eval_set": rset.summary(), "rows": {}}
    t0 = time.perf_counter()
    rec = Recording(OnnxEncoder(fused, threads=args.threads))
    ref_res = evaluate(rec, rset)
    ref = np.concatenate([rec.seen["doc"], rec.seen["query"]])
    out["fp32"] = {"metrics": ref_res.metrics, "seconds": round(time.perf_counter() - t0, 1)}
    for name in args.recipes:
        t0 = time.perf_counter()
        vdir = fused.parent / f"int8_{name}"
        recipe = dict(RECIPES[name])
        graph = fused.parent / "fp32" if recipe.pop("graph", "fused") == "plain" else fused
        quantize_int8(graph, vdir, Int8Recipe(name=name, **recipe))
        rec = Recording(OnnxEncoder(vdir, threads=args.threads))
        res = evaluate(rec, rset)
        row = {
            "recipe": RECIPES[name],
            "size_mb": onnx_size_mb(vdir),
            "metrics": res.metrics,
            "drop_ci": {
                m: drop_interval(ref_res.per_query, res.per_query, m)
                for m in ("ndcg@10", "recall@5")
            },
            "parity": parity(ref, np.concatenate([rec.seen["doc"], rec.seen["query"]])),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        row["loadavg"] = loadavg()
        out["rows"][name] = row
        print(name, json.dumps(row), flush=True)
        write_json(args.out, out)
    if args.speed:
        graphs = {name: fused.parent / f"int8_{name}" for name in dict.fromkeys(args.recipes)}
        out["speed"] = _speed(args.model, graphs, list(rset.corpus.values())[:32], args)
        print("speed", json.dumps(out["speed"]), flush=True)
        write_json(args.out, out)
    print(f"wrote {args.out}")


def _speed(model: str, graphs: dict[str, Path], texts: list[str], args) -> dict:
    """Texts/s of torch and each int8 graph at batch 1 and 32 (one padded call per batch, no
    length buckets: the graphs alone), best of ``--speed-rounds`` interleaved rounds (each round
    times every graph once, so a load change hits all alike), and each graph's ratio to torch."""
    import torch
    from bench_export import throughput

    from embedforge.export.onnx_encoder import OnnxEncoder
    from embedforge.models.encoder import Encoder

    torch.set_num_threads(args.threads)
    enc = Encoder.from_pretrained(model)
    fns = {"torch": lambda b: enc.encode(b, "doc", 32, show_progress=False)}  # noqa: E731
    for name, d in graphs.items():
        fns[name] = OnnxEncoder(d, threads=args.threads, bucket=False).embed_raw
    best: dict[str, dict[str, float]] = {n: {} for n in fns}
    for _ in range(args.speed_rounds):
        for name, fn in fns.items():
            for b in (1, 32):
                key = f"batch{b}"
                best[name][key] = max(best[name].get(key, 0.0), throughput(fn, texts, b))
    return {
        "texts": len(texts),
        "rounds": args.speed_rounds,
        "loadavg": loadavg(),
        "texts_per_s": best,
        "speedup_vs_torch": {
            n: {k: round(v / best["torch"][k], 2) for k, v in row.items()}
            for n, row in best.items()
            if n != "torch"
        },
    }


def _fused_graph(model: str, work: Path) -> Path:
    """The fused fp32 graph of ``model`` under ``work`` (exported and fused once)."""
    from embedforge.export.fuse import fuse_graph
    from embedforge.export.onnx_export import export_onnx
    from embedforge.models.encoder import Encoder

    cached = work / hashlib.sha1(str(model).encode()).hexdigest()[:10]  # one folder per model
    fp32, fused = cached / "fp32", cached / "fp32_fused"
    if not (fused / "model.onnx").is_file():
        Encoder.from_pretrained(model).save(cached / "model")
        export_onnx(cached / "model", fp32)
        fuse_graph(fp32, fused)
    return fused


if __name__ == "__main__":
    sys.exit(main())
