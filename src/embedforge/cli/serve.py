"""Serve a model: OpenAI-compatible ``POST /v1/embeddings`` with micro-batching.

    embedforge serve MODEL [--backend torch|onnx] [--host 127.0.0.1] [--port 8000]
        [--api-key KEY | env EMBEDFORGE_API_KEY] [--request-timeout 60] [--limit-concurrency N]
        [--header-timeout 10] [--max-connections 512] [--no-truncate]
        [--default-input-type document|query] [--token-ids model|cl100k_base] [--no-calibrate]
        [--log-format text|json] [--force]

MODEL: a SentenceTransformer dir or run dir (torch), an ONNX dir or export dir (onnx; int8/ used;
refused when its export report marks it failed, unless --force). Limits and batching default to
ServeConfig.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from embedforge.cli.common import parse, parser, require


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The command's arguments; limits and batching default to ``ServeConfig``'s."""
    from embedforge.serve.config import ServeConfig

    d = ServeConfig()
    ap = parser(prog, __doc__)
    ap.add_argument("model")
    ap.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=0, help="model threads (0 = library default)")
    ap.add_argument("--max-batch-size", type=int, default=d.max_batch_size, help="1 = no batching")
    ap.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms)
    ap.add_argument("--max-queue", type=int, default=d.max_queue, help="texts waiting before 503")
    ap.add_argument("--max-inputs", type=int, default=d.max_inputs)
    ap.add_argument("--max-chars", type=int, default=d.max_chars)
    ap.add_argument("--model-name", default=d.model_name)
    ap.add_argument(
        "--api-key",
        default=os.environ.get("EMBEDFORGE_API_KEY"),
        help="require Authorization: Bearer KEY on /v1/* and /metrics (default: EMBEDFORGE_API_KEY)",
    )
    ap.add_argument("--request-timeout", type=float, default=d.request_timeout_s, help="else 504")
    ap.add_argument("--body-timeout", type=float, default=d.body_timeout_s, help="else 408")
    ap.add_argument("--max-body-mb", type=float, default=0, help="0 = from max inputs x chars")
    ap.add_argument("--limit-concurrency", type=int, default=d.limit_concurrency, help="0 = off")
    ap.add_argument(
        "--header-timeout",
        type=float,
        default=d.header_timeout_s,
        help="seconds a connection may take to send a request's headers (then closed)",
    )
    ap.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help="open connections; a new one beyond gets 503 and is closed (0 = no cap)",
    )
    ap.add_argument(
        "--truncate",
        action=argparse.BooleanOptionalAction,
        default=d.truncate,
        help="default of a request's truncate: cut over-long inputs (else 413)",
    )
    ap.add_argument(
        "--default-input-type",
        choices=["query", "document"],
        default=d.default_input_type,
        help="prompt for requests without input_type (or a <name>-query/-document model name)",
    )
    ap.add_argument(
        "--token-ids",
        default=d.token_ids,
        help="token-id inputs: 'model' (the model's tokenizer) or a tiktoken encoding (cl100k_base)",
    )
    ap.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=d.calibrate,
        help="time one model call at start-up to set how finely batches are length-bucketed",
    )
    ap.add_argument("--force", action="store_true", help="serve an ONNX variant marked failed")
    ap.add_argument("--log-level", default="info")
    ap.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: one JSON object per log line (the per-request line: id, status, inputs, ...)",
    )
    return ap


def served_model_id(model: str | Path) -> str:
    """``embedforge-<task>`` for a model inside a run dir (its ``metrics.json``), else the model
    dir's name, skipping the generic ones an export writes (``onnx``, ``int8_fused``, ``model``)."""
    p = Path(model).expanduser().resolve()
    for d in (p, *p.parents[:3]):
        if (d / "metrics.json").is_file():
            import json

            return (
                f"embedforge-{json.loads((d / 'metrics.json').read_text()).get('task') or d.name}"
            )
    generic = {"model", "onnx", "fp32", "fp32_fused", "int8", "int8_fused"}
    return next((d.name for d in (p, *p.parents) if d.name not in generic), p.name)


def main(argv: list[str] | None = None, prog: str = "embedforge serve") -> int:
    """Parse ``argv``, load the model and serve until SIGINT/SIGTERM; returns the exit code."""
    from embedforge.serve.config import ServeConfig

    args = parse(build_parser(prog), argv)
    require("serve", ["fastapi", "uvicorn", "pydantic"])
    if args.token_ids != "model":
        require("serve --token-ids", ["tiktoken"])
    if args.backend == "onnx":
        require("serve --backend onnx", ["onnxruntime"])
    import uvicorn

    from embedforge.serve.app import create_app
    from embedforge.serve.backends import load_backend
    from embedforge.serve.logs import log_config
    from embedforge.serve.server import server_options

    backend = load_backend(args.model, args.backend, args.threads, force=args.force)
    cfg = ServeConfig(
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_inputs=args.max_inputs,
        max_chars=args.max_chars,
        model_name=args.model_name or served_model_id(args.model),
        truncate=args.truncate,
        api_key=args.api_key or None,
        request_timeout_s=args.request_timeout,
        body_timeout_s=args.body_timeout,
        max_body_bytes=int(args.max_body_mb * 2**20),
        limit_concurrency=args.limit_concurrency,
        default_input_type=args.default_input_type,
        token_ids=args.token_ids,
        calibrate=args.calibrate,
        header_timeout_s=args.header_timeout,
        max_connections=args.max_connections,
    )
    served = Path(getattr(backend.encoder, "model_dir", args.model)).resolve()  # onnx: the variant
    variant = served.name if args.backend == "onnx" else "torch"
    print(f"serving {cfg.model_name}: {variant}, dim {backend.dim}, from {served}", flush=True)
    app = create_app(backend, cfg)
    # uvicorn handles SIGINT/SIGTERM: stop accepting, finish in-flight requests, then the app's
    # lifespan drains the batcher.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=log_config(args.log_format, args.log_level),
        timeout_graceful_shutdown=30,
        **server_options(cfg),
    )
    return 0
