"""The export's sentence-transformers layout, and an ONNX serving path without torch."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from embedforge.export.onnx_export import write_st_layout
from embedforge.export.quantize import quantize_int8


@pytest.fixture(scope="module")
def st_dir(tiny_dir, tmp_path_factory):
    """A copy of the tiny model dir (the session's ``tiny_dir`` stays without ``onnx/``)."""
    return Path(shutil.copytree(tiny_dir, tmp_path_factory.mktemp("st") / "model"))


@pytest.fixture(scope="module")
def st_files(st_dir, tiny_fp32, tmp_path_factory):
    int8 = quantize_int8(tiny_fp32, tmp_path_factory.mktemp("onnx") / "int8")
    return write_st_layout(st_dir, tiny_fp32, int8)


@pytest.mark.parametrize(("variant", "min_cos"), [("fp32", 0.9999), ("int8", 0.98)])
def test_sentence_transformers_loads_the_export(st_dir, st_files, real_texts, variant, min_cos):
    from sentence_transformers import SentenceTransformer

    assert st_files == {"fp32": "onnx/model.onnx", "int8": "onnx/model_qint8_avx512_vnni.onnx"}
    texts = real_texts[:8] + real_texts[-8:]
    ref = SentenceTransformer(str(st_dir), device="cpu").encode(texts, prompt_name="query")
    st = SentenceTransformer(
        str(st_dir), backend="onnx", model_kwargs={"file_name": st_files[variant]}, device="cpu"
    )
    got = st.encode(texts, prompt_name="query")
    assert got.shape == ref.shape
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= min_cos, cos


def test_onnx_serving_imports_neither_torch_nor_transformers_models(tiny_fp32, tmp_path):
    code = textwrap.dedent(
        f"""
        import json, sys
        from fastapi.testclient import TestClient
        from embedforge.serve.app import create_app
        from embedforge.serve.backends import load_backend

        backend = load_backend({str(tiny_fp32)!r}, "onnx")
        with TestClient(create_app(backend)) as client:
            r = client.post("/v1/embeddings", json={{"input": ["a lease", "a court"]}})
            ids = client.post("/v1/embeddings", json={{"input": [[101, 2023, 102], [7, 8]]}})
        loaded = [m for m in sys.modules if m == "torch" or m.startswith(("torch.", "transformers"))]
        print(json.dumps({{"status": [r.status_code, ids.status_code], "n": len(r.json()["data"]), "loaded": loaded}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["status"] == [200, 200] and got["n"] == 2
    assert got["loaded"] == []
