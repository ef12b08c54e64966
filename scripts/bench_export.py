"""Benchmark int8 recipes and backends: torch fp32 vs ONNX fp32 vs ONNX int8 on real texts.

    nice -n 10 python scripts/bench_export.py [--model packaged:all-MiniLM-L6-v2]
        [--beir ../shared/data/legal-summarization] [--out outputs/bench/export.json]

For every int8 recipe: graph size, cosine parity against the torch model, NDCG@10/Recall@5 on the
eval set (drop vs torch), and encode throughput at batch 32; the torch and ONNX fp32 baselines too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from embedforge.errors import EmbedforgeError

ATTN_ACT_MATMULS = [r"attention/self/MatMul$", r"attention/self/MatMul_1$"]
RECIPES = {
    # optimum's AutoQuantizationConfig.avx2(is_static=False): u8 weights, per channel, + Gather.
    "optimum_avx2_default": dict(
        per_channel=True,
        reduce_range=False,
        weight_type="quint8",
        op_types=["MatMul", "Gather", "Attention", "EmbedLayerNormalization"],
    ),
    "s8_per_tensor": dict(per_channel=False, reduce_range=False),
    "s8_per_channel": dict(per_channel=True, reduce_range=False),
    "s8_per_channel_reduce_range": dict(per_channel=True, reduce_range=True),
    "s8_pc_rr_fp32_attention_matmuls": dict(
        per_channel=True, reduce_range=True, exclude=ATTN_ACT_MATMULS
    ),
    "s8_pc_rr_fp32_attention_matmuls_last_ffn": dict(
        per_channel=True,
        reduce_range=True,
        exclude=ATTN_ACT_MATMULS + [r"layer\.5/(intermediate|output)/dense"],
    ),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="packaged:all-MiniLM-L6-v2")
    repo = Path(__file__).resolve().parents[1]
    ap.add_argument("--beir", default=str(repo / ".." / "shared" / "data" / "legal-summarization"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--max-docs", type=int, default=None)
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES))
    ap.add_argument("--speed-texts", type=int, default=64)
    ap.add_argument("--out", default=str(repo / "outputs" / "bench" / "export.json"))
    args = ap.parse_args(argv)
    try:
        run(args)
    except EmbedforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def throughput(fn, texts: list[str], batch: int = 32) -> float:
    fn(texts[:2])
    t0 = time.perf_counter()
    for s in range(0, len(texts), batch):
        fn(texts[s : s + batch])
    return round(len(texts) / (time.perf_counter() - t0), 2)


def run(args) -> None:
    import torch

    from embedforge.eval.retrieval import evaluate
    from embedforge.export.checks import onnx_size_mb, parity
    from embedforge.export.eval_set import beir_eval_set, subset
    from embedforge.export.onnx_encoder import OnnxEncoder
    from embedforge.export.onnx_export import export_onnx
    from embedforge.export.quantize import Int8Recipe, quantize_int8
    from embedforge.io import write_json
    from embedforge.models.encoder import Encoder

    rset = subset(beir_eval_set(args.beir, args.split), args.max_queries, args.max_docs)
    enc = Encoder.from_pretrained(args.model)
    docs = list(rset.corpus.values())
    queries = list(rset.queries.values())
    speed_texts = docs[: args.speed_texts]
    out: dict = {
        "model": args.model,
        "eval_set": rset.summary(),
        "threads": torch.get_num_threads(),
        "speed": f"texts/s, batch 32, {len(speed_texts)} corpus passages, max_seq_length 256",
    }
    t0 = time.perf_counter()
    ref_d, ref_q = enc.encode(docs, "doc"), enc.encode(queries, "query")
    ref = np.concatenate([ref_d, ref_q])
    torch_m = evaluate(enc, rset).metrics
    out["torch_fp32"] = {
        "metrics": torch_m,
        "encode_s": round(time.perf_counter() - t0, 1),
        "texts_per_s": throughput(lambda b: enc.encode(b, "doc", 32), speed_texts),
    }
    print("torch", out["torch_fp32"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = enc.save(Path(tmp) / "model")
        fp32 = export_onnx(model_dir, Path(tmp) / "fp32")
        variants = {"onnx_fp32": fp32}
        for name in args.recipes:
            variants[name] = quantize_int8(
                fp32, Path(tmp) / name, Int8Recipe(name=name, **RECIPES[name])
            )
        for name, vdir in variants.items():
            onnx = OnnxEncoder(vdir)
            t0 = time.perf_counter()
            emb = np.concatenate([onnx.encode(docs, "doc"), onnx.encode(queries, "query")])
            m = evaluate(onnx, rset).metrics
            row = {
                "recipe": RECIPES.get(name, "fp32"),
                "size_mb": onnx_size_mb(vdir),
                "parity": parity(ref, emb),
                "metrics": m,
                "drop_vs_torch": {k: round(torch_m[k] - m[k], 4) for k in ("ndcg@10", "recall@5")},
                "encode_s": round(time.perf_counter() - t0, 1),
                "texts_per_s": throughput(onnx.embed_raw, speed_texts),
            }
            row["speedup_vs_torch"] = round(
                row["texts_per_s"] / out["torch_fp32"]["texts_per_s"], 2
            )
            out[name] = row
            print(
                name,
                json.dumps(
                    {
                        k: row[k]
                        for k in (
                            "size_mb",
                            "parity",
                            "drop_vs_torch",
                            "texts_per_s",
                            "speedup_vs_torch",
                        )
                    }
                ),
                flush=True,
            )
    write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
