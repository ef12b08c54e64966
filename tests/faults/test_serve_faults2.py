"""Issue 25, serving rows 1-9: what one client can do to the others (the second hardening pass)."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from embedforge.serve.config import ServeConfig

LONG = "the tenant shall pay the rent on the first day of each month " * 10  # ~600 characters


@pytest.fixture(scope="module")
def onnx_backend(tiny_dir, tmp_path_factory):
    from embedforge.export.onnx_export import export_onnx
    from embedforge.serve.backends import OnnxBackend

    return OnnxBackend(export_onnx(tiny_dir, tmp_path_factory.mktemp("onnx") / "fp32"))


async def _post_all(url: str, bodies: list, headers: dict | None = None) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as c:
        return await asyncio.gather(*(c.post("/v1/embeddings", json=b) for b in bodies))


def test_row01_onnx_tokenizer_is_never_changed_while_serving(serve, onnx_backend):
    """Token-id requests (decoded) and long texts (counted, then embedded) at once on the ONNX
    backend: every valid request gets 200; only the faulty ones (``[-1, 5]``) fail. Counting no
    longer flips the shared tokenizer's truncation (which failed other threads' encodes with
    ``Already borrowed``)."""
    enc = onnx_backend.encoder
    before = enc.tokenizer.truncation
    enc.count_tokens([LONG])
    assert enc.tokenizer.truncation == before and before is not None
    cfg = ServeConfig(max_batch_size=8, max_wait_ms=2)
    bodies = []
    for i in range(25):  # long id lists ("a a a ..."): decoding them takes a while
        bodies += [{"input": [-1, 5]}, {"input": [1037] * 3000}, {"input": f"{i} {LONG}"}]
    with serve(onnx_backend, cfg) as (url, _):
        for _ in range(4):  # the old code failed ~15 of the 50 valid ones in rounds 2-4
            rs = asyncio.run(_post_all(url, bodies))
            codes = [r.status_code for r in rs]
            assert codes[0::3] == [422] * 25, {r.text for r in rs[0::3]}
            assert codes[1::3] == [200] * 25, {r.text for r in rs[1::3] if r.status_code != 200}
            assert codes[2::3] == [200] * 25, {r.text for r in rs[2::3] if r.status_code != 200}
