"""Serve a model: OpenAI-compatible embeddings with micro-batching.

    python scripts/serve.py MODEL [--backend torch|onnx] [--host 127.0.0.1] [--port 8000]
        [--api-key KEY | env EMBEDFORGE_API_KEY] [--request-timeout 60] [--limit-concurrency N]
        [--no-truncate] [--default-input-type document|query]
        [--token-ids model|cl100k_base] [--force]

MODEL: a SentenceTransformer dir or run dir (torch), an ONNX dir or export dir (onnx; int8/ used;
refused when its export report marks it failed, unless --force).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from embedforge.errors import EmbedforgeError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=0, help="model threads (0 = library default)")
    ap.add_argument("--max-batch-size", type=int, default=32, help="1 turns batching off")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--max-queue", type=int, default=1024, help="texts waiting before 503")
    ap.add_argument("--max-inputs", type=int, default=256)
    ap.add_argument("--max-chars", type=int, default=8192)
    ap.add_argument("--model-name", default="")
    ap.add_argument(
        "--api-key",
        default=os.environ.get("EMBEDFORGE_API_KEY"),
        help="require Authorization: Bearer KEY on /v1/* and /metrics (default: EMBEDFORGE_API_KEY)",
    )
    ap.add_argument("--request-timeout", type=float, default=60.0, help="seconds, else 504")
    ap.add_argument("--body-timeout", type=float, default=10.0, help="slow-client limit, else 408")
    ap.add_argument("--max-body-mb", type=float, default=0, help="0 = from max inputs x chars")
    ap.add_argument("--limit-concurrency", type=int, default=0, help="API requests in progress")
    ap.add_argument(
        "--truncate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="default of a request's truncate: cut over-long inputs (else 413)",
    )
    ap.add_argument(
        "--default-input-type",
        choices=["query", "document"],
        default="document",
        help="prompt for requests without input_type (or a <name>-query/-document model name)",
    )
    ap.add_argument(
        "--token-ids",
        default="model",
        help="token-id inputs: 'model' (the model's tokenizer) or a tiktoken encoding (cl100k_base)",
    )
    ap.add_argument("--force", action="store_true", help="serve an ONNX variant marked failed")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    try:
        import uvicorn

        from embedforge.serve.app import create_app
        from embedforge.serve.backends import load_backend
        from embedforge.serve.config import ServeConfig

        backend = load_backend(args.model, args.backend, args.threads, force=args.force)
        cfg = ServeConfig(
            max_batch_size=args.max_batch_size,
            max_wait_ms=args.max_wait_ms,
            max_queue=args.max_queue,
            max_inputs=args.max_inputs,
            max_chars=args.max_chars,
            model_name=args.model_name or Path(args.model).resolve().name,
            truncate=args.truncate,
            api_key=args.api_key or None,
            request_timeout_s=args.request_timeout,
            body_timeout_s=args.body_timeout,
            max_body_bytes=int(args.max_body_mb * 2**20),
            limit_concurrency=args.limit_concurrency,
            default_input_type=args.default_input_type,
            token_ids=args.token_ids,
        )
        app = create_app(backend, cfg)
    except EmbedforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # uvicorn handles SIGINT/SIGTERM: stop accepting, finish in-flight requests, then the app's
    # lifespan drains the batcher.
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=30
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
