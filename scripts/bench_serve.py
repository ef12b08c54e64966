"""Benchmark the server: N concurrent clients sending single-text requests over loopback.

    nice -n 10 python scripts/bench_serve.py [--model packaged:all-MiniLM-L6-v2] [--seconds 30]
    nice -n 10 python scripts/bench_serve.py --overload [--clients 64] [--max-queue 256]

Configurations: {torch, onnx int8} x {batching on (max batch 32), off (max batch 1)}. Each starts
scripts/serve.py as a subprocess, waits for /readyz, runs the clients for --seconds, and records
throughput and p50/p99 latency. Then each model alone, in-process: texts/s one at a time vs in
batches of 32, whose ratio is the most batching can give the server on this machine. JSON into outputs/bench/serve.json. Targets (PASS/FAIL rows via
scripts/benchenv.py, which also refuses above load 1.5 unless --force): batching on vs off >= 5x
for torch and >= 2x for ONNX int8. The ONNX model is the export's shipped int8 (fused graph).

``--overload``: the torch server with a small queue, many clients sending 1-16 texts of mixed
lengths, and a few poison requests (a lone surrogate, an over-long input with truncate off).
Counts requests sent / answered 200 / refused 503 / poison refused 4xx / failed, and checks every
200 answer against a precomputed embedding of the texts it sent (lost or mixed-up answers).
JSON into outputs/bench/serve_overload.json.
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
from urllib.parse import urlparse

import numpy as np
from benchenv import add_load_arguments, machine, target

from embedforge.errors import EmbedforgeError

ROOT = Path(__file__).resolve().parents[1]


#: req/s with batching (max batch 32) over without (max batch 1), per backend (issue 16)
BATCHING_TARGETS = {"torch": 5.0, "onnx": 2.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_models(model: str, work: Path) -> dict[str, Path]:
    """The model as a SentenceTransformer dir and as the fused int8 ONNX dir the export ships
    (built once, then reused)."""
    from embedforge.export.fuse import fuse_graph
    from embedforge.export.onnx_export import export_onnx
    from embedforge.export.quantize import quantize_int8
    from embedforge.models.encoder import Encoder

    st_dir, int8_dir = work / "model", work / "onnx" / "int8_fused"
    if not (st_dir / "modules.json").is_file():
        Encoder.from_pretrained(model).save(st_dir)
    if not (int8_dir / "model.onnx").is_file():
        fp32_dir = work / "onnx" / "fp32"
        if not (fp32_dir / "model.onnx").is_file():
            export_onnx(st_dir, fp32_dir)
        quantize_int8(fuse_graph(fp32_dir, work / "onnx" / "fp32_fused"), int8_dir)
    return {"torch": st_dir, "onnx": int8_dir}


async def _post(reader, writer, request: bytes) -> int:
    """Send one pre-built HTTP/1.1 request on a kept-alive connection; the answer's status."""
    writer.write(request)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def load(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    """``clients`` connections, each sending one single-text request after another.

    The clients speak raw HTTP/1.1 over asyncio streams (requests built in advance, answers read
    by Content-Length) because they share the cores with the server: an httpx client spent
    ~9.5 ms of CPU per request here, as much as the server's model, and capped every
    configuration near 90 req/s whatever the server did.
    """
    u = urlparse(url)
    lat: list[float] = []
    errors: dict[str, int] = {}
    stop = time.perf_counter() + seconds
    requests = []
    for t in texts:
        body = json.dumps({"input": t}).encode()
        requests.append(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (u.netloc.encode(), len(body), body)
        )

    async def client(i: int) -> None:
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        k = i
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    code = str(await _post(reader, writer, requests[k % len(requests)]))
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    return
                if code == "200":
                    lat.append(time.perf_counter() - t0)
                else:
                    errors[code] = errors.get(code, 0) + 1
                k += clients
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
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


POISON = [  # raw JSON bodies: a lone surrogate (422), an over-long input with truncate off (413)
    '{"input": ["fine", "\\ud800"]}',
    json.dumps({"input": "clause " * 1000, "truncate": False}),
]


async def overload(url: str, texts: list[str], refs: np.ndarray, clients: int, seconds: float):
    """Clients send 1-16 texts per request (every 50th request is poison) and check each answer."""
    import httpx

    counts = {"sent": 0, "ok": 0, "refused_503": 0, "poison_4xx": 0, "failed": 0, "mixed_up": 0}
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(i: int, c: httpx.AsyncClient) -> None:
        rng = np.random.default_rng(i)
        while time.perf_counter() < stop:
            counts["sent"] += 1
            poison = counts["sent"] % 50 == 0
            idx = rng.choice(len(texts), size=int(rng.integers(1, 17)), replace=False)
            body = (
                POISON[counts["sent"] // 50 % 2]
                if poison
                else json.dumps({"input": [texts[k] for k in idx]})
            )
            try:
                r = await c.post(
                    "/v1/embeddings", content=body, headers={"content-type": "application/json"}
                )
            except httpx.HTTPError:
                counts["failed"] += 1
                continue
            if r.status_code == 200 and not poison:
                got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
                same = got.shape == refs[idx].shape and np.allclose(got, refs[idx], atol=1e-3)
                counts["ok" if same else "mixed_up"] += 1
            elif r.status_code == 503:
                counts["refused_503"] += 1
            elif poison and r.status_code in (413, 422):
                counts["poison_4xx"] += 1
            else:
                counts["failed"] += 1

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        await asyncio.gather(*(client(i, c) for i in range(clients)))
    answered = sum(v for k, v in counts.items() if k != "sent")
    return {
        **counts,
        "lost": counts["sent"] - answered,
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def start_server(model_dir: Path, backend: str, batch: int, args, *extra: str):
    """scripts/serve.py as a subprocess, ready (``/readyz`` 200); returns (process, url)."""
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
        "error",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise EmbedforgeError(f"server exited: {proc.stderr.read()[-500:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise EmbedforgeError("server not ready within 300 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # graceful: drains the queue
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def model_ceiling(model_dir: Path, backend: str, args, texts: list[str]) -> dict:
    """The model alone, in this process: texts/s one at a time vs in batches of 32 (bucketed by
    the measured call cost, as the server does). Their ratio bounds what batching can give the
    server, whatever the HTTP layer does."""
    from embedforge.serve.backends import calibrate, load_backend

    model = load_backend(model_dir, backend, args.threads)
    call_cost = calibrate(model)
    sample = texts[:256]

    def rate(batch: int) -> float:
        n = len(sample) if batch > 1 else 64
        model.embed(sample[:batch])
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            model.embed(sample[i : i + batch])
        return n / (time.perf_counter() - t0)

    one, batched = rate(1), rate(32)
    return {
        "call_cost_tokens": call_cost,
        "texts_per_s_batch_1": round(one, 1),
        "texts_per_s_batch_32": round(batched, 1),
        "ceiling": round(batched / one, 2),
    }


def run_config(model_dir: Path, backend: str, batch: int, args, texts: list[str]) -> dict:
    import httpx

    proc, url = start_server(model_dir, backend, batch, args)
    try:
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
        stop_server(proc)


def run_overload(model: str, args, texts: list[str]) -> dict:
    """The overload run (see the module docstring) against the torch server."""
    import httpx
    from sentence_transformers import SentenceTransformer

    from embedforge.models.encoder import Encoder

    st_dir = Path(args.work) / "model"
    if not (st_dir / "modules.json").is_file():
        Encoder.from_pretrained(model).save(st_dir)
    rng = np.random.default_rng(0)
    pool = [t[: int(rng.integers(20, 1200))] for t in texts[: args.pool]]  # mixed lengths
    refs = SentenceTransformer(str(st_dir), device="cpu").encode(pool, batch_size=32)
    extra = ["--max-queue", str(args.max_queue), "--no-truncate"]
    proc, url = start_server(st_dir, "torch", 32, args, *extra)
    try:
        res = asyncio.run(overload(url, pool, np.asarray(refs), args.clients, args.seconds))
        codes = [x for x in httpx.get(url + "/metrics").text.splitlines() if "requests_total{" in x]
        res["server_counts"] = {x.split('"')[1]: int(x.split()[-1]) for x in codes}
    finally:
        stop_server(proc)
    return {"clients": args.clients, "max_queue": args.max_queue, "pool": len(pool), **res}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="packaged:all-MiniLM-L6-v2")
    ap.add_argument("--seconds", type=float, default=30.0, help="per configuration")
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
    ap.add_argument("--overload", action="store_true", help="the overload run instead")
    ap.add_argument("--max-queue", type=int, default=256, help="overload run: texts waiting")
    ap.add_argument("--pool", type=int, default=300, help="overload run: distinct texts")
    add_load_arguments(ap)
    args = ap.parse_args(argv)
    env = machine(args.max_load, args.force)
    try:
        from embedforge.io import read_jsonl, write_json

        if args.overload:
            args.texts = args.texts.replace("queries.jsonl", "corpus.jsonl")  # longer texts
        texts = [r["text"] for r in read_jsonl(args.texts) if r.get("text", "").strip()]
        if args.overload:
            res = run_overload(args.model, args, texts)
            res["machine"] = env
            res["loadavg"] = [round(x, 2) for x in os.getloadavg()]
            out = str(Path(args.out).with_name("serve_overload.json"))
            write_json(out, res)
            print(json.dumps(res), f"\nwrote {out}")
            return 0
        models = prepare_models(args.model, Path(args.work))
        out = {
            "model": args.model,
            "machine": env,
            "onnx_model": str(models["onnx"]),
            "clients": args.clients,
            "seconds": args.seconds,
            "threads": args.threads,
            "max_wait_ms": args.max_wait_ms,
            "texts": args.texts,
            "int8_recipe": json.loads((models["onnx"] / "int8_recipe.json").read_text())
            if (models["onnx"] / "int8_recipe.json").is_file()
            else None,
            "results": {},
        }
        for spec in args.configs:
            backend, batch = spec.split(":")
            res = run_config(models[backend], backend, int(batch), args, texts)
            res["loadavg"] = [round(x, 2) for x in os.getloadavg()]
            out["results"][spec] = res
            print(spec, json.dumps(res), flush=True)
        out["model_alone"] = {}
        for b in sorted({spec.split(":")[0] for spec in args.configs}):
            out["model_alone"][b] = model_ceiling(models[b], b, args, texts)
            print(b, "model alone", json.dumps(out["model_alone"][b]), flush=True)
        out["targets"] = []
        for b, goal in BATCHING_TARGETS.items():
            on, off = out["results"].get(f"{b}:32"), out["results"].get(f"{b}:1")
            if on is None and off is None:
                continue
            speedup = None
            if on and off and off["throughput_rps"]:
                speedup = round(on["throughput_rps"] / off["throughput_rps"], 2)
            out[f"{b}_batching_speedup"] = speedup
            name = f"{b} batching on vs off ({args.clients} clients, req/s)"
            out["targets"].append(target(name, speedup, goal))
        out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        write_json(args.out, out)
        print(f"wrote {args.out} (load average {out['loadavg_end']})")
    except EmbedforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
