"""Benchmark eval-style encoding against this machine's measured fp32 matmul peak.

    nice -n 10 python scripts/bench_encode.py [--model packaged:all-MiniLM-L6-v2]
        [--data ../shared/data/cuad-clause-retrieval] [--n 500] [--max-length 256]
        [--batch-size 64] [--threads 1 2] [--paths chars tokens onnx] [--out outputs/bench/encode.json]
        [--force]

First the peak: the best of several large fp32 matmuls (a square one and one shaped like the
model's FFN GEMM over ``batch_size * max_length`` tokens) with the same thread count, measured
before and after the encoding rows (the larger is the bar; a shared machine's peak moves). Then the same
``--n`` corpus passages (title + text, as evaluation encodes them) through each path:

- ``chars``: the old ``Encoder.encode`` (sorted by characters, ``batch_size`` texts a batch,
  tokenized per batch and padded to the batch's longest);
- ``tokens``: ``Encoder.encode`` now (tokenized once, token-length buckets under a
  ``batch_size * max_length`` token budget);
- ``onnx``: the fp32 ONNX export (``eval.backend=onnx``), same buckets, onnxruntime with the same
  thread count; its cosine parity against ``tokens`` is recorded.

Each row: passages/s, real and padded tokens/s, and GFLOP/s from the model config's FLOPs per token
(per layer ``8 H^2 + 4 H I`` for the projections and FFN plus ``4 L H`` for Q.K^T and A.V at sequence
length L; multiply-add = 2 FLOPs): ``useful`` counts real tokens at their own length, ``computed``
counts padded batches. The target row is useful GFLOP/s >= 60% of the measured peak. The JSON
(rewritten after every row) records the CPU, thread counts and the load average (scripts/benchenv.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import add_load_arguments, loadavg, machine, target  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EMBEDFORGE_DATA", ROOT / ".." / "shared" / "data"))
PATHS = ("chars", "tokens", "onnx")
#: share of the measured matmul peak evaluation encoding should reach
GOAL = 0.6


def model_shape(encoder) -> dict[str, int]:
    """Layers, hidden, intermediate size and heads of the encoder's transformer (its HF config)."""
    cfg = encoder.model[0].auto_model.config
    return {
        "layers": int(cfg.num_hidden_layers),
        "hidden": int(cfg.hidden_size),
        "intermediate": int(cfg.intermediate_size),
        "heads": int(cfg.num_attention_heads),
    }


def flops_per_token(shape: dict[str, int], seq_len) -> np.ndarray:
    """Forward FLOPs of one token in a sequence of ``seq_len`` tokens (embeddings, layer norms,
    softmax and pooling are left out: they are O(H) per token, under 1% here)."""
    h, i = shape["hidden"], shape["intermediate"]
    per_layer = 8 * h * h + 4 * h * i + 4 * np.asarray(seq_len, dtype=np.float64) * h
    return shape["layers"] * per_layer


def batch_flops(shape, lengths: np.ndarray, batches: list[np.ndarray]) -> dict[str, float]:
    """Real and padded tokens of ``batches`` and their useful / computed FLOPs."""
    real = padded = useful = computed = 0.0
    for b in batches:
        n = lengths[b].astype(np.float64)
        w = float(n.max())
        real += n.sum()
        padded += len(b) * w
        useful += float((n * flops_per_token(shape, n)).sum())
        computed += len(b) * w * float(flops_per_token(shape, w))
    return {"real_tokens": real, "padded_tokens": padded, "useful": useful, "computed": computed}


def matmul_peak(threads: int, shape: dict[str, int], tokens: int, seconds: float = 3.0) -> dict:
    """Best fp32 GFLOP/s of a square matmul and the FFN-shaped one, with ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    cases = {
        "square_2048": (2048, 2048, 2048),
        "ffn_gemm": (tokens, shape["hidden"], shape["intermediate"]),
    }
    out = {}
    for name, (m, k, n) in cases.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b  # warm-up
        best, end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * m * k * n / (time.perf_counter() - t0) / 1e9)
        out[name] = round(best, 2)
    out["peak_gflops"] = max(out.values())
    return out


def char_batches(texts: list[str], batch_size: int) -> list[np.ndarray]:
    """The old plan: longest by characters first, ``batch_size`` texts a batch."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return [order[s : s + batch_size] for s in range(0, len(texts), batch_size)]


def encode_chars(encoder, texts: list[str], batch_size: int) -> np.ndarray:
    """The old ``Encoder.encode``: char-sorted batches, tokenized per batch."""
    import torch

    encoder.eval()
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    with torch.no_grad():
        for idx in char_batches(texts, batch_size):
            out[idx] = encoder(encoder.tokenize([texts[i] for i in idx])).numpy()
    return out


def timed(fn, texts: list[str], warm: list[str]) -> tuple[np.ndarray, float]:
    """``fn(texts)`` and its wall time, after a warm-up call on ``warm``."""
    fn(warm)
    t0 = time.perf_counter()
    emb = fn(texts)
    return emb, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="packaged:all-MiniLM-L6-v2")
    ap.add_argument("--data", default=str(DATA / "cuad-clause-retrieval"))
    ap.add_argument("--n", type=int, default=500, help="corpus passages, spread over the corpus")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=None, help="default: torch's")
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    ap.add_argument("--peak-seconds", type=float, default=3.0)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "encode.json"))
    add_load_arguments(ap)
    args = ap.parse_args(argv)

    env = machine(args.max_load, args.force)
    import torch

    from embedforge.buckets import token_batches
    from embedforge.export.checks import parity
    from embedforge.export.eval_set import beir_eval_set
    from embedforge.models.encoder import Encoder

    if not Path(args.data).is_dir():
        print(f"error: data not found at {args.data} (set EMBEDFORGE_DATA)", file=sys.stderr)
        return 2
    corpus = list(beir_eval_set(args.data, "test").corpus.values())
    pick = np.linspace(0, len(corpus) - 1, min(args.n, len(corpus))).astype(int)
    texts = [corpus[i] for i in pick]
    encoder = Encoder.from_pretrained(args.model, max_seq_length=args.max_length)
    texts = encoder.prefixed(texts, "doc")  # the paths below encode these as given (no prefix)
    encoder.doc_prefix = ""
    shape = model_shape(encoder)
    lengths = encoder.tokenize(texts)["attention_mask"].sum(1).numpy()
    plans = {
        "chars": char_batches(texts, args.batch_size),
        "tokens": token_batches(lengths, args.batch_size, encoder.max_seq_length),
    }
    plans["onnx"] = plans["tokens"]
    threads = args.threads or [torch.get_num_threads()]
    record = {
        "machine": env,
        "settings": {**vars(args), "threads": threads},
        "interop_threads": torch.get_num_interop_threads(),
        "model": {
            **shape,
            "max_seq_length": encoder.max_seq_length,
            "mflop_per_token_at_max_length": round(
                float(flops_per_token(shape, encoder.max_seq_length)) / 1e6, 2
            ),
            "mean_tokens": round(float(lengths.mean()), 1),
        },
        "peak": {},
        "rows": [],
        "targets": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        record["loadavg_end"] = loadavg()
        out.write_text(json.dumps(record, indent=1))

    onnx_dir = None
    tmp = tempfile.TemporaryDirectory(prefix="bench-encode-")
    if "onnx" in args.paths:
        from embedforge.export.onnx_export import export_onnx

        onnx_dir = export_onnx(encoder.save(Path(tmp.name) / "model"), Path(tmp.name) / "onnx")
    for t in threads:
        torch.set_num_threads(t)
        peak = matmul_peak(t, shape, args.batch_size * args.max_length, args.peak_seconds)
        record["peak"][str(t)] = peak
        print(f"threads {t}: fp32 matmul peak {peak}", flush=True)
        warm, embs = texts[:8], {}
        for path in args.paths:
            if path == "chars":
                fn = lambda xs: encode_chars(encoder, xs, args.batch_size)  # noqa: E731
            elif path == "tokens":
                fn = lambda xs: encoder.encode(xs, "doc", args.batch_size, False)  # noqa: E731
            else:
                from embedforge.export.onnx_encoder import OnnxEncoder

                onnx_enc = OnnxEncoder(onnx_dir, threads=t)
                onnx_enc.doc_prefix = ""
                fn = lambda xs, e=onnx_enc: e.encode(xs, "doc", args.batch_size, False)  # noqa: E731
            emb, sec = timed(fn, texts, warm)
            f = batch_flops(shape, lengths, plans[path])
            useful = f["useful"] / sec / 1e9
            row = {
                "path": path,
                "threads": t,
                "seconds": round(sec, 3),
                "passages_per_s": round(len(texts) / sec, 2),
                "real_tokens_per_s": round(f["real_tokens"] / sec, 1),
                "padded_tokens_per_s": round(f["padded_tokens"] / sec, 1),
                "padding_overhead": round(f["padded_tokens"] / f["real_tokens"] - 1, 4),
                "batches": len(plans[path]),
                "useful_gflops": round(useful, 2),
                "computed_gflops": round(f["computed"] / sec / 1e9, 2),
                "share_of_peak": round(useful / peak["peak_gflops"], 3),  # final: below
                "loadavg": loadavg(),
            }
            embs[path] = emb
            record["rows"].append(row)
            print(json.dumps(row), flush=True)
            save()
        # the peak again after the rows: on a shared machine it moves; the larger one is the bar
        after = matmul_peak(t, shape, args.batch_size * args.max_length, args.peak_seconds)
        peak = {
            **peak,
            "after": after,
            "peak_gflops": max(peak["peak_gflops"], after["peak_gflops"]),
        }
        record["peak"][str(t)] = peak
        rows = record["rows"][-len(args.paths) :]
        for row in rows:  # each path's embeddings against the token-bucketed torch ones
            row["share_of_peak"] = round(row["useful_gflops"] / peak["peak_gflops"], 3)
            if "tokens" in embs and row["path"] != "tokens":
                row["parity_vs_tokens"] = parity(embs["tokens"], embs[row["path"]])
        print(f"threads {t}: fp32 matmul peak after the rows {after}", flush=True)
        save()
    tmp.cleanup()
    for path in ("tokens", "onnx"):
        rows = [r for r in record["rows"] if r["path"] == path]
        if rows:
            best = max(rows, key=lambda r: r["share_of_peak"])
            name = f"{path} eval encoding, useful GFLOP/s share of matmul peak ({best['threads']} threads)"
            record["targets"].append(target(name, best["share_of_peak"], GOAL))
    save()
    print(f"wrote {out} (load average {record['loadavg_end']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
