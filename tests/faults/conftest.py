"""The fault suite: real components only (uvicorn on 127.0.0.1, the real LLM SDKs against a local
faulty HTTP server, real files). One test per row of issue 12's table, named ``test_rowNN_...``."""

from __future__ import annotations

import contextlib
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
def running(backend, cfg):
    """``create_app(backend, cfg)`` on a real uvicorn at 127.0.0.1:<free port>; yields (url, app)."""
    port = free_port()
    app = create_app(backend, cfg)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture()
def serve():
    """``with serve(backend, cfg) as (url, app):`` a live server for one test."""
    return running
