"""FastAPI app: OpenAI-compatible ``POST /v1/embeddings`` over the micro-batcher, plus probes."""

from __future__ import annotations

import base64
import time
from contextlib import asynccontextmanager
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from embedforge.serve.backends import Backend
from embedforge.serve.batcher import MicroBatcher, QueueFull, ShuttingDown
from embedforge.serve.config import ServeConfig
from embedforge.serve.prom import Metrics


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request plus ``input_type`` (which saved prompt to prepend)."""

    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "document"] = "document"
    user: str | None = None


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """An OpenAI-style error body: ``{"error": {"message", "type", "code"}}``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(backend: Backend, config: ServeConfig | None = None) -> FastAPI:
    """The server for ``backend``; the batcher starts with the app and drains on shutdown."""
    cfg = config or ServeConfig()
    metrics = Metrics()
    batcher = MicroBatcher(
        backend.embed, cfg.max_batch_size, cfg.max_wait_ms, cfg.max_queue, metrics
    )
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        await batcher.submit(["warm up"])  # first call allocates; keep it out of user latency
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.close()

    app = FastAPI(title="embedforge", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.metrics = metrics

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errs):
            metrics.request(400)
            return error(400, "malformed JSON body")
        parts = []
        for e in errs[:3]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {e.get('msg')}")
        metrics.request(422)
        return error(422, "invalid request: " + "; ".join(parts))

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingRequest):
        t0 = time.perf_counter()
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if not texts or any(not t.strip() for t in texts):
            metrics.request(422)
            return error(
                422, "input must be a non-empty string or a non-empty list of non-empty strings"
            )
        if len(texts) > cfg.max_inputs:
            metrics.request(413)
            return error(413, f"too many inputs: {len(texts)} > {cfg.max_inputs} per request")
        longest = max(len(t) for t in texts)
        if longest > cfg.max_chars:
            metrics.request(413)
            i = next(i for i, t in enumerate(texts) if len(t) == longest)
            return error(413, f"input[{i}] has {longest} characters > {cfg.max_chars} allowed")
        prefix = backend.prompts.get(req.input_type, "")
        try:
            emb, tok = await batcher.submit([prefix + t for t in texts])
        except QueueFull as e:
            metrics.request(503)
            return error(503, f"{e}; retry later", {"Retry-After": str(cfg.retry_after_s)})
        except ShuttingDown as e:
            metrics.request(503)
            return error(503, str(e), {"Retry-After": str(cfg.retry_after_s)})
        data = []
        for i, row in enumerate(emb):
            if req.encoding_format == "base64":
                value = base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode()
            else:
                value = row.tolist()
            data.append({"object": "embedding", "index": i, "embedding": value})
        n_tok = int(np.sum(tok))
        metrics.request(200, time.perf_counter() - t0, len(texts), n_tok)
        return {
            "object": "list",
            "data": data,
            "model": req.model or cfg.model_name,
            "usage": {"prompt_tokens": n_tok, "total_tokens": n_tok},
        }

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if state["ready"] and batcher.running:
            return {"status": "ready", "queue_depth": batcher.pending}
        return error(503, "not ready")

    @app.get("/metrics")
    async def prometheus():
        metrics.queue_depth = batcher.pending
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
