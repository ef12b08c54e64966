"""FastAPI app: OpenAI-compatible ``POST /v1/embeddings`` over the micro-batcher, plus probes.

Limits, auth and error counting sit in :mod:`embedforge.serve.guard`; error bodies in
:mod:`embedforge.serve.errors`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from embedforge.errors import EmbedforgeError
from embedforge.serve.backends import Backend, calibrate
from embedforge.serve.batcher import MicroBatcher, QueueFull, ShuttingDown
from embedforge.serve.config import ServeConfig
from embedforge.serve.errors import error, install_error_handlers
from embedforge.serve.guard import Guard
from embedforge.serve.prom import Metrics

log = logging.getLogger("embedforge.serve")
TOKEN_MARGIN = 8  # a token covers >= 1 byte, so a text of fewer bytes than max_tokens - 8 fits


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request plus ``input_type`` (which saved prompt to prepend; ``None``:
    the one the model name asks for, else the server's default) and, as in
    text-embeddings-inference, ``truncate`` (``None``: the server's default).

    ``input`` may be token ids (one list, or a list of lists), as LangChain's ``OpenAIEmbeddings``
    sends them: they are ids of the served model's tokenizer and are decoded to text.
    """

    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    input_type: Literal["query", "document"] | None = None
    truncate: bool | None = None
    user: str | None = None


INPUT_TYPES = ("query", "document")


def served_models(name: str) -> dict[str, str | None]:
    """The model names served: ``name`` (the default prompt) and ``name-query`` / ``name-document``."""
    return {name: None} | {f"{name}-{kind}": kind for kind in INPUT_TYPES}


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
        if cfg.calibrate:
            # on the model's own thread: torch keeps an OpenMP team per calling thread, and a
            # second team made a single-text call 1.6x slower
            cost = await batcher.in_worker(calibrate, backend)
            log.info("one model call costs as much as %d tokens: length buckets set by it", cost)
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.close()

    hidden = dict(docs_url=None, redoc_url=None, openapi_url=None) if cfg.api_key else {}
    app = FastAPI(title="embedforge", lifespan=lifespan, **hidden)
    app.state.batcher = batcher
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(Guard, cfg=cfg, metrics=metrics)
    embedder = Embedder(backend, cfg, batcher, metrics, token_decoder(backend, cfg.token_ids))
    app.post("/v1/embeddings")(embedder.handle)
    models = served_models(cfg.model_name)

    def card(model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "embedforge"}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [card(m) for m in models]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str):
        if model_id not in models:
            return error(404, f"model {model_id!r} is not served here", param="model")
        return card(model_id)

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


@dataclass
class Embedder:
    """The ``/v1/embeddings`` handler: checks, truncation policy, deadline, response."""

    backend: Backend
    cfg: ServeConfig
    batcher: MicroBatcher
    metrics: Metrics
    decode: Callable[[list[int]], str]

    async def handle(self, req: EmbeddingRequest) -> Any:
        t0 = time.perf_counter()
        if req.dimensions is not None and req.dimensions > self.backend.dim:
            msg = f"dimensions={req.dimensions} > the model's {self.backend.dim}"
            return error(422, msg, param="dimensions")
        texts = self.texts(req.input)
        refusal = self.check(texts)
        if refusal is not None:
            return refusal
        prefix = self.backend.prompts.get(self.input_type(req), "")
        truncate = self.cfg.truncate if req.truncate is None else req.truncate
        work = self.embed([prefix + t for t in texts], truncate)
        retry = {"Retry-After": str(self.cfg.retry_after_s)}
        try:
            result = await asyncio.wait_for(work, self.cfg.request_timeout_s)
        except (QueueFull, ShuttingDown) as e:
            return error(503, f"{e}; retry later", retry)
        except TimeoutError:
            return error(504, f"request not answered within {self.cfg.request_timeout_s:g} s")
        if isinstance(result, JSONResponse):
            return result
        emb, tok, truncated = result
        if req.dimensions is not None:
            emb = shorten(emb, req.dimensions)
        n_tok = int(np.sum(tok))
        self.metrics.embedded(time.perf_counter() - t0, len(texts), n_tok, truncated)
        usage = {"prompt_tokens": n_tok, "total_tokens": n_tok, "truncated_inputs": truncated}
        return {
            "object": "list",
            "data": [_item(i, row, req.encoding_format) for i, row in enumerate(emb)],
            "model": req.model or self.cfg.model_name,
            "usage": usage,
        }

    def texts(self, given: str | list) -> list[str]:
        """The request's inputs as texts (token-id inputs decoded with the model's tokenizer)."""
        if isinstance(given, str):
            return [given]
        if given and isinstance(given[0], int):
            return [self.decode(given)]
        return [t if isinstance(t, str) else self.decode(t) for t in given]

    def input_type(self, req: EmbeddingRequest) -> str:
        """The request's ``input_type``, else the one its model name asks for, else the default."""
        if req.input_type is not None:
            return req.input_type
        by_name = served_models(self.cfg.model_name).get(req.model or "")
        return by_name or self.cfg.default_input_type

    def check(self, texts: list[str]) -> JSONResponse | None:
        """422/413 for empty, too many, too long or unencodable inputs (naming the input)."""
        if not texts or any(not t.strip() for t in texts):
            msg = "input must be a non-empty string or a non-empty list of non-empty strings"
            return error(422, msg)
        if len(texts) > self.cfg.max_inputs:
            return error(413, f"too many inputs: {len(texts)} > {self.cfg.max_inputs} per request")
        longest = max(len(t) for t in texts)
        if longest > self.cfg.max_chars:
            i = next(i for i, t in enumerate(texts) if len(t) == longest)
            return error(413, f"input[{i}] has {longest} characters > {self.cfg.max_chars} allowed")
        for i, t in enumerate(texts):
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as e:  # e.g. a lone surrogate: no tokenizer accepts it
                return error(
                    422, f"input[{i}] is not valid text ({e.reason} at character {e.start})"
                )
        return None

    async def embed(self, texts: list[str], truncate: bool) -> tuple | JSONResponse:
        """(embeddings, token counts, inputs truncated), or a 413 when an input is over-long and
        ``truncate`` is off. Model errors of this request alone become a 500."""
        limit = self.backend.max_tokens
        maybe_long = [i for i, t in enumerate(texts) if len(t.encode()) > limit - TOKEN_MARGIN]
        over: list[tuple[int, int]] = []
        if maybe_long:
            counts = await self.batcher.in_worker(
                self.backend.count_tokens, [texts[i] for i in maybe_long]
            )
            over = [(i, int(n)) for i, n in zip(maybe_long, counts) if n > limit]
        if over and not truncate:
            i, n = over[0]
            return error(413, f"input[{i}] has {n} tokens > {limit} allowed (truncate is false)")
        try:
            emb, tok = await self.batcher.submit(texts)
        except (QueueFull, ShuttingDown):
            raise
        except Exception as e:  # noqa: BLE001 - the batcher isolated it to this request
            return error(500, f"embedding failed for this request ({type(e).__name__})")
        return emb, tok, len(over)


def token_decoder(backend: Backend, token_ids: str) -> Callable[[list[int]], str]:
    """Token ids -> text: the served model's tokenizer (``model``) or a tiktoken encoding."""
    if token_ids == "model":
        return lambda ids: backend.decode(ids)
    try:
        import tiktoken

        encoding = tiktoken.get_encoding(token_ids)
    except ImportError:
        raise EmbedforgeError(f"token ids {token_ids!r} need `pip install tiktoken`") from None
    except ValueError as e:
        raise EmbedforgeError(f"unknown tiktoken encoding {token_ids!r}: {e}") from None
    return lambda ids: encoding.decode(list(ids), errors="replace")


def shorten(emb: np.ndarray, dimensions: int) -> np.ndarray:
    """The first ``dimensions`` components of each row, renormalized to unit length (OpenAI's
    ``dimensions``; meaningful for Matryoshka-trained models, always unit-norm)."""
    cut = emb[:, :dimensions]
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)


def _item(index: int, row: np.ndarray, encoding_format: str) -> dict:
    if encoding_format == "base64":
        value: Any = base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode()
    else:
        value = row.tolist()
    return {"object": "embedding", "index": index, "embedding": value}
