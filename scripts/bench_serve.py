"""Benchmark the server: N concurrent clients sending single-text requests over loopback.

    nice -n 10 python scripts/bench_serve.py [--model packaged:all-MiniLM-L6-v2] [--seconds 15]

Configurations: {torch, onnx int8} x {batching on (max batch 32), off (max batch 1)}. Each starts
scripts/serve.py as a subprocess, waits for /readyz, runs the clients for --seconds, and records
throughput and p50/p99 latency. JSON into outputs/bench/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from embedforge.errors import EmbedforgeError

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_models(model: str, work: Path) -> dict[str, Path]:
    """The model as a SentenceTransformer dir and as an int8 ONNX dir (built once, then reused)."""
    from embedforge.export.onnx_export import export_onnx
    from embedforge.export.quantize import quantize_int8
    from embedforge.models.encoder import Encoder

    st_dir, int8_dir = work / "model", work / "onnx" / "int8"
    if not (st_dir / "modules.json").is_file():
        Encoder.from_pretrained(model).save(st_dir)
    if not (int8_dir / "model.onnx").is_file():
        fp32_dir = work / "onnx" / "fp32"
        if not (fp32_dir / "model.onnx").is_file():
            export_onnx(st_dir, fp32_dir)
        quantize_int8(fp32_dir, int8_dir)
    return {"torch": st_dir, "onnx": int8_dir}


async def load(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    import httpx

    lat: list[float] = []
    errors: dict[str, int] = {}
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(i: int, c: httpx.AsyncClient) -> None:
        k = i
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/embeddings", json={"input": texts[k % len(texts)]})
                code = str(r.status_code)
            except httpx.HTTPError as e:
                code = type(e).__name__
            if code == "200":
                lat.append(time.perf_counter() - t0)
            else:
                errors[code] = errors.get(code, 0) + 1
            k += clients

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        await asyncio.gather(*(client(i, c) for i in range(clients)))
    wall = time.perf_counter() - t0
    a = np.array(lat) * 1000
    return {
        "requests_ok": len(lat),
        "errors": errors,
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(lat) / wall, 2),
        "latency_ms_p50": round(float(np.percentile(a, 50)), 1) if len(a) else None,
        "latency_ms_p99": round(float(np.percentile(a, 99)), 1) if len(a) else None,
    }


def run_config(model_dir: Path, backend: str, batch: int, args, texts: list[str]) -> dict:
    import httpx

    port = free_port()
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "serve.py"),
        str(model_dir),
        "--backend",
        backend,
        "--port",
        str(port),
        "--max-batch-size",
        str(batch),
        "--max-wait-ms",
        str(args.max_wait_ms),
        "--threads",
        str(args.threads),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if proc.poll() is not None:
                raise EmbedforgeError(f"server exited: {proc.stderr.read()[-500:]}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        res = asyncio.run(load(url, texts, args.clients, args.seconds))
        metrics = httpx.get(url + "/metrics").text
        for line in metrics.splitlines():
            if line.startswith(("embedforge_batch_size_sum", "embedforge_batch_size_count")):
                res[line.split()[0]] = float(line.split()[1])
        if res.get("embedforge_batch_size_count"):
            res["mean_batch_size"] = round(
                res["embedforge_batch_size_sum"] / res["embedforge_batch_size_count"], 2
            )
        return res
    finally:
        proc.send_signal(signal.SIGTERM)  # graceful: drains the queue
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="packaged:all-MiniLM-L6-v2")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument(
        "--texts",
        default=str(ROOT / ".." / "shared" / "data" / "legal-summarization" / "queries.jsonl"),
    )
    ap.add_argument("--work", default=str(ROOT / "outputs" / "bench" / "serve_models"))
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "serve.json"))
    ap.add_argument(
        "--configs",
        nargs="*",
        default=["torch:32", "torch:1", "onnx:32", "onnx:1"],
        help="backend:max_batch_size",
    )
    args = ap.parse_args(argv)
    try:
        from embedforge.io import read_jsonl, write_json

        texts = [r["text"] for r in read_jsonl(args.texts) if r.get("text", "").strip()]
        models = prepare_models(args.model, Path(args.work))
        out = {
            "model": args.model,
            "clients": args.clients,
            "seconds": args.seconds,
            "threads": args.threads,
            "max_wait_ms": args.max_wait_ms,
            "texts": args.texts,
            "cpu_count": os.cpu_count(),
            "int8_recipe": json.loads((models["onnx"] / "int8_recipe.json").read_text())
            if (models["onnx"] / "int8_recipe.json").is_file()
            else None,
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "results": {},
        }
        for spec in args.configs:
            backend, batch = spec.split(":")
            res = run_config(models[backend], backend, int(batch), args, texts)
            res["loadavg"] = [round(x, 2) for x in os.getloadavg()]
            out["results"][spec] = res
            print(spec, json.dumps(res), flush=True)
        for b in ("torch", "onnx"):
            on, off = out["results"].get(f"{b}:32"), out["results"].get(f"{b}:1")
            if on and off and off["throughput_rps"]:
                out[f"{b}_batching_speedup"] = round(
                    on["throughput_rps"] / off["throughput_rps"], 2
                )
        out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        write_json(args.out, out)
        print(f"wrote {args.out}")
    except EmbedforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
