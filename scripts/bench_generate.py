"""Benchmark LLM generation against a local fake Anthropic-compatible server (127.0.0.1 only).

The server (started here, in a child process) answers ``POST /v1/messages`` after a fixed latency, with
three queries per passage and a ``usage`` counted with the all-MiniLM-L6-v2 WordPiece tokenizer (a
different tokenizer from our characters/4 estimate, so the estimate-vs-usage comparison means
something). Measures wall time at concurrency 1 (on a subset, extrapolated linearly: it is
sequential) and 16, and writes JSON to outputs/bench/generate.json.

    nice -n 10 python scripts/bench_generate.py [--chunks 1000] [--subset 100] [--latency 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "cuad-clause-retrieval"


def make_app(latency: float, tokenizer):
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        await asyncio.sleep(latency)
        prompt = json.loads(body)["messages"][0]["content"]
        words = prompt.rsplit("<passage>", 1)[-1].split()
        queries = [" ".join(words[i : i + 4]).lower() + " meaning" for i in (3, 20, 40)]
        text = json.dumps(queries)
        n_in = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        n_out = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        out = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": "fake",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": n_in, "output_tokens": n_out},
        }
        data = json.dumps(out).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    return app


def serve(latency: float) -> None:
    """Run the fake server in this process; print its port on stdout."""
    server, thread, port = start_server(latency)
    print(port, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    server.should_exit = True
    thread.join(timeout=10)


def spawn_server(latency: float):
    """The fake server in its own process, so its CPU work does not share the client's GIL."""
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--latency", str(latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, int(proc.stdout.readline())


def start_server(latency: float):
    import uvicorn
    from transformers import AutoTokenizer

    from embedforge.models.encoder import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("packaged:all-MiniLM-L6-v2"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(make_app(latency, tok), log_level="warning", lifespan="on", backlog=256)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, sock.getsockname()[1]


def load_chunks(n: int) -> list[dict]:
    chunks = []
    with (DATA / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            chunks.append({"id": row["_id"], "title": row.get("title", ""), "text": row["text"]})
            if len(chunks) == n:
                break
    return chunks


def run(chunks, port: int, concurrency: int) -> dict:
    import anthropic  # noqa: F401 - imported before timing (the generator imports it lazily)

    from embedforge.generate.anthropic_backend import AnthropicGenerator

    g = AnthropicGenerator(
        base_url=f"http://127.0.0.1:{port}",
        concurrency=concurrency,
        max_retries=2,
        progress=False,
        cache_dir=None,
        max_usd=None,
        price={"input_per_mtok": 1.0, "output_per_mtok": 5.0},
    )
    t0 = time.perf_counter()
    pairs = g.generate(chunks)
    wall = time.perf_counter() - t0
    s = g.stats
    return {
        "concurrency": concurrency,
        "chunks": len(chunks),
        "wall_s": round(wall, 2),
        "chunks_per_s": round(len(chunks) / wall, 2),
        "pairs": len(pairs),
        "requests": s["requests"],
        "failures": s["failures"],
        "dropped": s["dropped"],
        "estimated": {
            "input_tokens": s["estimated_input_tokens"],
            "output_tokens": s["estimated_output_tokens"],
            "usd": round(s["estimated_usd"], 6),
        },
        "actual": {
            "input_tokens": s["input_tokens"],
            "output_tokens": s["output_tokens"],
            "usd": s["usd"],
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description="LLM generation throughput against a local fake server"
    )
    ap.add_argument("--chunks", type=int, default=1000)
    ap.add_argument("--subset", type=int, default=100, help="chunks timed at concurrency 1")
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "generate.json"))
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.latency)
        return 0
    os.environ["ANTHROPIC_API_KEY"] = "fake-key-for-local-server"  # the fake server ignores it
    os.environ["NO_PROXY"] = "127.0.0.1"
    from embedforge.io import write_json

    proc, port = spawn_server(args.latency)
    try:
        chunks = load_chunks(args.chunks)
        seq = run(chunks[: args.subset], port, 1)
        par = run(chunks, port, args.concurrency)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    seq_full = seq["wall_s"] * len(chunks) / seq["chunks"]
    result = {
        "server": {
            "latency_s": args.latency,
            "host": "127.0.0.1",
            "usage_tokenizer": "all-MiniLM-L6-v2 WordPiece",
        },
        "data": f"cuad-clause-retrieval corpus, first {len(chunks)} passages",
        "concurrency_1": {
            **seq,
            "extrapolated_wall_s_for_all": round(seq_full, 1),
            "note": f"timed on {seq['chunks']} chunks, scaled linearly to {len(chunks)}",
        },
        f"concurrency_{args.concurrency}": par,
        "speedup": round(seq_full / par["wall_s"], 2),
        "ideal_speedup": args.concurrency,
        "estimate_vs_actual": {
            "input_tokens_ratio": round(
                par["estimated"]["input_tokens"] / max(1, par["actual"]["input_tokens"]), 3
            ),
            "output_tokens_ratio": round(
                par["estimated"]["output_tokens"] / max(1, par["actual"]["output_tokens"]), 3
            ),
            "usd_ratio": round(par["estimated"]["usd"] / max(1e-12, par["actual"]["usd"]), 3),
        },
        "cpu_count": os.cpu_count(),
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
