"""Issue 12, rows 1-7: what a client or a fault can do to the server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from embedforge.errors import EmbedforgeError
from embedforge.serve.config import ServeConfig

POISON = "the poison text"


class Faulty:
    """The real backend, except that a batch holding ``POISON`` fails (as a model bug would) and,
    when ``count_fails``, counting tokens raises (an error no handler expects)."""

    def __init__(self, inner, count_fails: bool = False):
        self.inner, self.prompts, self.dim = inner, inner.prompts, inner.dim
        self.max_tokens, self.count_fails = inner.max_tokens, count_fails
        self.call_cost = inner.call_cost
        self.failed_batches: list[int] = []

    def embed(self, texts):
        if POISON in texts:
            self.failed_batches.append(len(texts))
            raise RuntimeError("model failed on this batch")
        return self.inner.embed(texts)

    def count_tokens(self, texts):
        if self.count_fails:
            raise RuntimeError("tokenizer crashed")
        return self.inner.count_tokens(texts)


def metric(url: str, code: int, headers: dict | None = None) -> int:
    text = httpx.get(url + "/metrics", headers=headers).text
    line = f'embedforge_requests_total{{code="{code}"}} '
    return next((int(x.split()[-1]) for x in text.splitlines() if x.startswith(line)), 0)


async def _post_all(url: str, bodies: list) -> list[httpx.Response]:
    """Concurrent posts; bodies are ASCII JSON (``\\ud800`` escapes, as a hostile client sends)."""
    head = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        return await asyncio.gather(
            *(c.post("/v1/embeddings", content=json.dumps(b), headers=head) for b in bodies)
        )


def test_row01_untokenizable_input_fails_alone(serve, tiny_backend):
    """A lone surrogate with 30 good requests: it gets 422 naming the input, the 30 get 200.
    A batch the model fails on is re-run request by request: only the faulty one fails."""
    cfg = ServeConfig(max_batch_size=64, max_wait_ms=100)
    good = [{"input": [f"good text number {i}"]} for i in range(30)]
    faulty = Faulty(tiny_backend)
    with serve(faulty, cfg) as (url, _):
        rs = asyncio.run(_post_all(url, [*good[:15], {"input": ["ok", "\ud800"]}, *good[15:]]))
        codes = [r.status_code for r in rs]
        assert codes.count(200) == 30 and codes[15] == 422
        assert "input[1]" in rs[15].json()["error"]["message"]
        rs = asyncio.run(_post_all(url, [*good[:15], {"input": [POISON]}, *good[15:]]))
    codes = [r.status_code for r in rs]
    assert codes.count(200) == 30 and codes[15] == 500
    assert max(faulty.failed_batches) > 1 and faulty.failed_batches[-1] == 1  # shared, then alone
    for body, r in zip(good, [*rs[:15], *rs[16:]]):
        want = tiny_backend.embed(body["input"])[0]
        np.testing.assert_allclose(r.json()["data"][0]["embedding"], want[0], atol=1e-5)


def test_row02_unexpected_error_is_json_500_and_counted(serve, tiny_backend):
    with serve(Faulty(tiny_backend, count_fails=True), ServeConfig()) as (url, _):
        r = httpx.post(url + "/v1/embeddings", json={"input": "word " * 400})
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "server_error"
        r404 = httpx.get(url + "/nope")
        assert r404.status_code == 404 and r404.json()["error"]["code"] == "not_found"
        assert metric(url, 500) == 1 and metric(url, 404) == 1


def _raw(url: str, head: bytes, body_parts=(), pause: float = 0.0) -> tuple[bytes, int]:
    """Send ``head`` and ``body_parts`` over a socket while reading the answer; (the answer, body
    bytes sent). A server that refuses a body closes with it unread, and TCP then resets the
    connection: the answer is read while the body is still being sent, and the reset ends it."""
    u = urlparse(url)
    sent = 0
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(head)

        def send_body() -> None:
            nonlocal sent
            try:
                for part in body_parts:
                    s.sendall(part)
                    sent += len(part)
            except OSError:  # the server stopped reading and closed
                pass

        sender = threading.Thread(target=send_body)
        sender.start()
        time.sleep(pause)
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        sender.join()
    return answer, sent


def test_row03_huge_body_refused_before_reading(serve, tiny_backend):
    """300 MB declared: 413 without reading it; a chunked body is cut off at the limit."""
    cfg = ServeConfig(max_body_bytes=1_000_000)
    with serve(tiny_backend, cfg) as (url, _):
        head = (
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 300000000\r\n\r\n"
        )
        answer, _ = _raw(url, head)  # nothing of the body is sent: none is read
        assert answer.startswith(b"HTTP/1.1 413") and b"300000000 bytes exceeds" in answer
        head = (
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        answer, sent = _raw(url, head, [piece] * 300)  # ~20 MB offered
        assert answer.startswith(b"HTTP/1.1 413") and b"exceeds 1000000 bytes" in answer
        assert metric(url, 413) == 2


def test_row04_stalled_client_gets_408(serve, tiny_backend):
    cfg = ServeConfig(body_timeout_s=0.5)
    with serve(tiny_backend, cfg) as (url, _):
        head = (
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n"
        )
        # only the body deadline answers 408 (without it the server waits for the rest of the body)
        answer, _ = _raw(url, head, [b'{"input": "half a bo'])
        assert answer.startswith(b"HTTP/1.1 408")
        assert b'"code": "request_timeout"' in answer
        assert httpx.get(url + "/readyz").status_code == 200


def test_row05_api_key_required_and_docs_off(serve, tiny_backend):
    cfg = ServeConfig(api_key="s3cret-key")
    with serve(tiny_backend, cfg) as (url, _):
        body = {"input": "hello"}
        assert httpx.post(url + "/v1/embeddings", json=body).status_code == 401
        bad = {"Authorization": "Bearer wrong"}
        r = httpx.post(url + "/v1/embeddings", json=body, headers=bad)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        ok = {"Authorization": "Bearer s3cret-key"}
        assert httpx.post(url + "/v1/embeddings", json=body, headers=ok).status_code == 200
        assert httpx.get(url + "/metrics").status_code == 401
        assert metric(url, 401, ok) == 3
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert httpx.get(url + path).status_code == 404
        assert httpx.get(url + "/healthz").status_code == 200
        assert httpx.get(url + "/readyz").status_code == 200


def test_row06_long_input_truncation_is_reported_or_refused(serve, tiny_backend):
    long = "contract clause " * 512  # 8,192 characters
    with serve(tiny_backend, ServeConfig()) as (url, _):
        r = httpx.post(url + "/v1/embeddings", json={"input": ["short", long]})
        assert r.status_code == 200 and r.json()["usage"]["truncated_inputs"] == 1
        r = httpx.post(url + "/v1/embeddings", json={"input": ["short", long], "truncate": False})
        assert r.status_code == 413
        msg = r.json()["error"]["message"]
        assert "input[1] has 1026 tokens >" in msg
    with serve(tiny_backend, ServeConfig(truncate=False)) as (url, _):
        assert httpx.post(url + "/v1/embeddings", json={"input": long}).status_code == 413
        r = httpx.post(url + "/v1/embeddings", json={"input": long, "truncate": True})
        assert r.status_code == 200


def test_row07_onnx_variant_marked_failed_is_refused(tmp_path, tiny_dir, capsys):
    from embedforge.export.onnx_export import export_onnx
    from embedforge.serve.backends import load_backend

    export_onnx(tiny_dir, tmp_path / "int8")
    report = {"variants": {"int8": {"good": False, "failed": ["ndcg@10 dropped 0.05 > 0.01"]}}}
    (tmp_path / "export_report.json").write_text(json.dumps(report))
    with pytest.raises(EmbedforgeError, match="int8 variant failed its quality bounds"):
        load_backend(tmp_path, "onnx")
    assert load_backend(tmp_path, "onnx", force=True).dim == 32
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("serve_script", root / "scripts" / "serve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tmp_path), "--backend", "onnx"]) == 2
    assert "--force" in capsys.readouterr().err
