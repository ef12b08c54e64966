"""FastAPI app: OpenAI-compatible ``POST /v1/embeddings`` over the micro-batcher, plus probes.

Limits, auth and error counting sit in :mod:`embedforge.serve.guard`; error bodies in
:mod:`embedforge.serve.errors`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from embedforge.errors import EmbedforgeError
from embedforge.serve.backends import Backend, calibrate
from embedforge.serve.batcher import MicroBatcher, QueueFull, ShuttingDown
from embedforge.serve.config import ServeConfig
from embedforge.serve.errors import error, install_error_handlers, invalid
from embedforge.serve.guard import REQUEST_INFO, Guard
from embedforge.serve.prom import Metrics

log = logging.getLogger("embedforge.serve")
TOKEN_MARGIN = 8  # a token covers >= 1 byte, so a text of fewer bytes than max_tokens - 8 fits


INPUT_SCHEMA = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}},
        {"type": "array", "items": {"type": "integer"}},
        {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
    ]
}


SHAPE = (
    "input must be a string, a list of strings, or token ids: a list of integers or of such lists"
)
EMPTY = "input must be a non-empty string or a non-empty list of strings"


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request plus ``input_type`` (which saved prompt to prepend; ``None``:
    the one the model name asks for, else the server's default) and, as in
    text-embeddings-inference, ``truncate`` (``None``: the server's default).

    ``input`` may be token ids (one list, or a list of lists), as LangChain's ``OpenAIEmbeddings``
    sends them: they are ids of the served model's tokenizer and are decoded to text.

    Types are strict, as OpenAI's are: ``true`` or ``1.0`` is no token id, ``"8"`` no
    ``dimensions``, ``"yes"`` no ``truncate`` (422).
    """

    model_config = ConfigDict(strict=True)
    input: Annotated[Any, WithJsonSchema(INPUT_SCHEMA)]  # read by Embedder.texts (see there)
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    input_type: Literal["query", "document"] | None = None
    truncate: bool | None = None
    user: str | None = None


INPUT_TYPES = ("query", "document")
REQUEST_SCHEMA = EmbeddingRequest.model_json_schema(ref_template="#/components/schemas/{model}")


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
    embedder = Embedder(backend, cfg, batcher, metrics, TokenIds(backend, cfg.token_ids))
    body_schema = {"content": {"application/json": {"schema": REQUEST_SCHEMA}}, "required": True}
    app.post("/v1/embeddings", openapi_extra={"requestBody": body_schema})(embedder.handle)
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

    for probe in (healthz, readyz):  # HEAD too, as load balancers' checks send it
        app.head(f"/{probe.__name__}", include_in_schema=False)(probe)

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
    ids: TokenIds

    async def handle(self, request: Request) -> Any:
        """Parse and check off the event loop (a large body must not stall the probes), then
        queue for the model; ``request_timeout_s`` bounds it all."""
        info = request.scope.setdefault(REQUEST_INFO, {})
        body = await request.body()
        try:
            return await asyncio.wait_for(self.answer(body, info), self.cfg.request_timeout_s)
        except TimeoutError:
            return error(504, f"request not answered within {self.cfg.request_timeout_s:g} s")

    async def answer(self, body: bytes, info: dict) -> Any:
        t0 = time.perf_counter()
        ready = await asyncio.to_thread(self.prepare, body)
        if isinstance(ready, JSONResponse):
            return ready
        req, texts, truncated = ready
        info["inputs"] = len(texts)
        try:
            emb, tok = await self.batcher.submit(texts)
        except (QueueFull, ShuttingDown) as e:
            return error(503, f"{e}; retry later", {"Retry-After": str(self.cfg.retry_after_s)})
        except Exception as e:  # noqa: BLE001 - the batcher isolated it to this request
            return error(500, f"embedding failed for this request ({type(e).__name__})")
        if req.dimensions is not None:
            emb = shorten(emb, req.dimensions)
        n_tok = int(np.sum(tok))
        info["tokens"] = n_tok
        self.metrics.embedded(time.perf_counter() - t0, len(texts), n_tok, truncated)
        usage = {"prompt_tokens": n_tok, "total_tokens": n_tok, "truncated_inputs": truncated}
        return {
            "object": "list",
            "data": [_item(i, row, req.encoding_format) for i, row in enumerate(emb)],
            "model": req.model or self.cfg.model_name,
            "usage": usage,
        }

    def prepare(self, body: bytes) -> JSONResponse | tuple[EmbeddingRequest, list[str], int]:
        """(request, texts with their prompt, how many will be truncated), or the refusal.

        Runs in a worker thread: the tokenizers it uses are safe to share (never reconfigured).
        """
        most = self.cfg.max_inputs * self.cfg.max_chars
        try:
            req = EmbeddingRequest.model_validate(read_json(body, most))
        except ValidationError as e:
            return invalid(e.errors(include_url=False))
        except TooManyNumbers:
            return error(413, f"more than {most} numbers in the body (max inputs x max chars)")
        except ValueError:  # not JSON (or not UTF-8, or a number too long to read)
            return error(400, "malformed JSON body")
        if req.dimensions is not None and req.dimensions > self.backend.dim:
            msg = f"dimensions={req.dimensions} > the model's {self.backend.dim}"
            return error(422, msg, param="dimensions")
        texts = self.texts(req.input)
        if isinstance(texts, JSONResponse):
            return texts
        refusal = self.check(texts)
        if refusal is not None:
            return refusal
        prefix = self.backend.prompts.get(self.input_type(req), "")
        texts = [prefix + t for t in texts]
        over = self.over_long(texts)
        truncate = self.cfg.truncate if req.truncate is None else req.truncate
        if over and not truncate:
            i, n = over[0]
            limit = self.backend.max_tokens
            return error(413, f"input[{i}] has {n} tokens > {limit} allowed (truncate is false)")
        return req, texts, len(over)

    def texts(self, given: Any) -> list[str] | JSONResponse:
        """The request's ``input`` as texts: a string, a list of strings, or token ids (a list of
        integers, or a list of such lists), decoded.

        Read here rather than by pydantic, which validates a union of large lists slowly and
        holding the GIL (probes stalled), and reports every bad element (a 750 MB message for 2M
        ids). Counts come first; every check stops at the first fault.
        """
        if isinstance(given, str):
            return [given]
        if not isinstance(given, list) or not given:
            return error(422, EMPTY if given == [] else SHAPE, param="input")
        if type(given[0]) is int:
            return self.decode_ids([given], ["input"])
        if len(given) > self.cfg.max_inputs:
            return error(413, f"too many inputs: {len(given)} > {self.cfg.max_inputs} per request")
        if type(given[0]) is not str:
            return self.decode_ids(given, [f"input[{i}]" for i in range(len(given))])
        bad = next((i for i, t in enumerate(given) if type(t) is not str), None)
        if bad is not None:
            return error(422, f"input[{bad}] is not a string ({SHAPE})", param="input")
        return given

    def decode_ids(self, lists: list, names: list[str]) -> list[str] | JSONResponse:
        """Token-id inputs (``names``: how the answer calls each) as texts, once all are checked:
        each a list of at most ``max_chars`` ids (413), each id an integer (strictly: ``true``
        and ``1.0`` are not) in the vocabulary (422 naming it)."""
        for name, ids in zip(names, lists):
            if type(ids) is not list:
                return error(422, f"{name} is not a list of token ids ({SHAPE})", param="input")
            if len(ids) > self.cfg.max_chars:
                msg = f"{name} has {len(ids)} token ids > {self.cfg.max_chars} allowed"
                return error(413, msg, param="input")
        vocab = self.ids.vocab_size
        for name, ids in zip(names, lists):
            j = next((j for j, x in enumerate(ids) if type(x) is not int or not 0 <= x < vocab), -1)
            if j < 0:
                continue
            if type(ids[j]) is not int:
                return error(422, f"{name}[{j}] is not a token id (an integer)", param="input")
            value = f" = {ids[j]}" if abs(ids[j]) < 10**30 else ""
            msg = f"{name}[{j}]{value} is out of the vocabulary: ids run from 0 to {vocab - 1}"
            return error(422, msg, param="input")
        texts = []
        for name, ids in zip(names, lists):
            try:
                texts.append(self.ids.decode(ids))
            except (KeyError, ValueError, OverflowError, TypeError) as e:
                msg = f"{name} holds token ids the tokenizer cannot decode ({type(e).__name__})"
                return error(422, msg, param="input")
        return texts

    def input_type(self, req: EmbeddingRequest) -> str:
        """The request's ``input_type``, else the one its model name asks for, else the default."""
        if req.input_type is not None:
            return req.input_type
        by_name = served_models(self.cfg.model_name).get(req.model or "")
        return by_name or self.cfg.default_input_type

    def check(self, texts: list[str]) -> JSONResponse | None:
        """422/413 for no inputs, too many, too long, unencodable or empty ones (naming the input).

        One rule for empty: an input is empty when it has no tokens but the model's special ones,
        whether it is ``""``, spaces, or only characters the tokenizer drops (zero-width, control,
        combining marks).
        """
        if not texts:
            return error(422, EMPTY)
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
        i = self.first_empty(texts)
        if i is not None:
            msg = f"input[{i}] must be non-empty text: it has no tokens once tokenized"
            return error(422, msg, param="input")
        return None

    def first_empty(self, texts: list[str]) -> int | None:
        """The index of the first input with no tokens of its own. A letter or digit always makes
        a token (``[UNK]`` at worst), so only inputs without one are counted."""
        maybe = [i for i, t in enumerate(texts) if not any(c.isalnum() for c in t)]
        if not maybe:
            return None
        bare, *counts = self.backend.count_tokens([""] + [texts[i] for i in maybe])
        return next((i for i, n in zip(maybe, counts) if n <= bare), None)

    def over_long(self, texts: list[str]) -> list[tuple[int, int]]:
        """(index, token count) of the inputs over the model's max tokens (only inputs of more
        bytes than that can be, are counted)."""
        limit = self.backend.max_tokens
        maybe = [i for i, t in enumerate(texts) if len(t.encode()) > limit - TOKEN_MARGIN]
        if not maybe:
            return []
        counts = self.backend.count_tokens([texts[i] for i in maybe])
        return [(i, int(n)) for i, n in zip(maybe, counts) if n > limit]


class TooManyNumbers(Exception):
    """A body holds more numbers than any valid request can."""


def read_json(body: bytes, most_numbers: int) -> Any:
    """``body`` parsed, stopping at the ``most_numbers + 1``-th integer.

    The stdlib parser (pydantic's refuses a lone surrogate escape outright, a 422 case), with a
    hook per integer: it keeps the parse of millions of token ids interruptible, so the event
    loop gets the GIL within milliseconds (plain ``json.loads`` of 12 MB of ids held it ~0.7 s
    under load), and stops a body of too many ids early.

    Raises:
        TooManyNumbers: more than ``most_numbers`` integers.
        ValueError: not JSON.
    """
    left = most_numbers

    def number(text: str) -> int:
        nonlocal left
        left -= 1
        if left < 0:
            raise TooManyNumbers
        return int(text)

    return json.loads(body, parse_int=number)


class TokenIds:
    """How token-id inputs become text: ``model`` (ids of the served model's tokenizer) or a
    tiktoken encoding name (``cl100k_base``: the ids OpenAI clients send)."""

    def __init__(self, backend: Backend, name: str):
        if name == "model":
            self.decode: Callable[[list[int]], str] = lambda ids: backend.decode(ids)
            self._vocab: Callable[[], int] = lambda: backend.vocab_size
            return
        try:
            import tiktoken

            encoding = tiktoken.get_encoding(name)
        except ImportError:
            raise EmbedforgeError(f"token ids {name!r} need `pip install tiktoken`") from None
        except ValueError as e:
            raise EmbedforgeError(f"unknown tiktoken encoding {name!r}: {e}") from None
        self.decode = lambda ids: encoding.decode(list(ids), errors="replace")
        self._vocab = lambda: encoding.n_vocab

    @property
    def vocab_size(self) -> int:
        """Valid ids run from 0 to ``vocab_size - 1``."""
        return self._vocab()


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
