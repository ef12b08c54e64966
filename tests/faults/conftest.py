"""The fault suite: real components only (uvicorn on 127.0.0.1, the real LLM SDKs against a local
faulty HTTP server, real files). One test per row of issue 12's table, named ``test_rowNN_...``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from embedforge.models.encoder import Encoder
from embedforge.serve.app import create_app
from embedforge.serve.backends import TorchBackend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    enc = Encoder.tiny(dropout=0.0)
    return enc.save(tmp_path_factory.mktemp("faults") / "model")


@pytest.fixture(scope="session")
def tiny_backend(tiny_dir) -> TorchBackend:
    return TorchBackend(tiny_dir)


@contextlib.contextmanager
def on_uvicorn(app, lifespan: str = "auto", **options):
    """``app`` on a real uvicorn at 127.0.0.1:<free port> (``options``: more ``uvicorn.Config``
    arguments); yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="critical", lifespan=lifespan, **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def running(backend, cfg):
    """``create_app(backend, cfg)`` on a live server; yields (url, app)."""
    app = create_app(backend, cfg)
    with on_uvicorn(app) as url:
        yield url, app


@pytest.fixture()
def serve():
    """``with serve(backend, cfg) as (url, app):`` a live server for one test."""
    return running


class FakeLLM:
    """A local stand-in for the Anthropic Messages and OpenAI chat APIs that can misbehave.

    Answers valid queries for the prompt's passage, reporting ``input_tokens`` = prompt chars / 4
    and ``output_tokens`` = the request's ``max_tokens`` when ``long_answers`` (else 20). With
    ``status`` != 200 it answers that status with the API's error body and ``headers``.
    """

    def __init__(self) -> None:
        self.status, self.headers, self.delay = 200, {}, 0.0
        self.long_answers, self.junk = False, False
        self.requests = 0

    def answer(self, req: dict) -> tuple[dict, int, int]:
        prompt = req["messages"][0]["content"]
        m = re.search(r"<passage>\n(.*)\n</passage>", prompt, re.S)
        tag = (m.group(1).split() or ["x"])[-1] if m else "x"
        text = (
            "no queries here"
            if self.junk
            else json.dumps(
                [f"what about {tag} rules", f"{tag} deadline question", f"who pays {tag} fees"]
            )
        )
        max_out = req.get("max_tokens") or req.get("max_completion_tokens") or 512
        return text, len(prompt) // 4, max_out if self.long_answers else 20

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests += 1
        await asyncio.sleep(self.delay)
        req = json.loads(body)
        if self.status != 200:
            kind = {400: "invalid_request_error", 404: "not_found_error"}.get(
                self.status, "api_error"
            )
            out = {
                "type": "error",
                "error": {"type": kind, "message": f"fake {self.status}: model {req.get('model')}"},
            }
            return await _send_json(send, self.status, out, self.headers)
        text, n_in, n_out = self.answer(req)
        if scope["path"].endswith("/chat/completions"):
            out = {
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": req["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": {
                    "prompt_tokens": n_in,
                    "completion_tokens": n_out,
                    "total_tokens": n_in + n_out,
                },
            }
        else:
            out = {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": req["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": n_in, "output_tokens": n_out},
            }
        await _send_json(send, 200, out, {})


async def _send_json(send, status: int, body: dict, headers: dict) -> None:
    raw = [(b"content-type", b"application/json")]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


@pytest.fixture()
def fake_llm():
    """A live :class:`FakeLLM`; yields (base URL, the fake) to steer its behaviour."""
    fake = FakeLLM()
    with on_uvicorn(fake, lifespan="off") as url:
        yield url, fake
