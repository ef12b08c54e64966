"""Property test of ``POST /v1/embeddings`` (issue 25): arbitrary JSON in every field never gets a
500 or a traceback in the log, and every 200 row equals an in-process encode of its own text."""

from __future__ import annotations

import base64
import json
import logging

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from embedforge.serve.app import served_models, shorten
from embedforge.serve.config import ServeConfig
from tests.faults.conftest import running

NAME = "tiny"
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
IDS = st.lists(st.integers(-3, 30600) | st.integers(), max_size=8)
FIELDS = {
    "input": JSON
    | st.text(max_size=300)
    | st.lists(st.text(max_size=60), max_size=4)
    | IDS
    | st.lists(IDS, max_size=3),
    "model": JSON | st.sampled_from([NAME, f"{NAME}-query", f"{NAME}-document", "other"]),
    "encoding_format": JSON | st.sampled_from(["float", "base64"]),
    "dimensions": JSON | st.integers(-1, 40),
    "input_type": JSON | st.sampled_from(["query", "document"]),
    "truncate": JSON | st.booleans(),
    "user": JSON,
}
OTHERS = {k: v for k, v in FIELDS.items() if k != "input"}
GOOD_IDS = st.lists(st.integers(999, 30521), min_size=1, max_size=8)
TEXT = st.text(min_size=1, max_size=200)
VALID = st.fixed_dictionaries(
    {
        "input": TEXT
        | st.lists(TEXT, min_size=1, max_size=4)
        | GOOD_IDS
        | st.lists(GOOD_IDS, min_size=1, max_size=3)
    },
    optional={
        "model": st.sampled_from([NAME, f"{NAME}-query", "other"]),
        "encoding_format": st.sampled_from(["float", "base64"]),
        "dimensions": st.integers(1, 32),
        "input_type": st.sampled_from(["query", "document"]),
        "truncate": st.booleans(),
        "user": st.text(max_size=10),
    },
)
BODIES = (
    VALID
    | st.fixed_dictionaries({"input": FIELDS["input"]}, optional=OTHERS)
    | st.fixed_dictionaries({}, optional=FIELDS)
    | JSON
)


@pytest.fixture(scope="module")
def live(tiny_backend):
    with running(tiny_backend, ServeConfig(model_name=NAME, max_wait_ms=1)) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


def expected_rows(backend, body: dict) -> np.ndarray:
    """What the served model gives each input of a valid ``body``, encoded alone, in-process."""
    given = body["input"]
    if isinstance(given, str):
        texts = [given]
    elif given and isinstance(given[0], int):
        texts = [backend.decode(given)]
    else:
        texts = [t if isinstance(t, str) else backend.decode(t) for t in given]
    kind = body.get("input_type") or served_models(NAME).get(body.get("model") or "")
    prefix = backend.prompts.get(kind or "document", "")
    rows = np.stack([backend.embed([prefix + t])[0][0] for t in texts])
    return shorten(rows, body["dimensions"]) if body.get("dimensions") else rows


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=BODIES)
def test_any_json_body_is_answered_without_500_and_rows_match(live, tiny_backend, caplog, body):
    caplog.clear()
    caplog.set_level(logging.INFO, logger="embedforge")
    r = live.post(
        "/v1/embeddings", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    event(f"status {r.status_code}")
    assert r.status_code in (200, 400, 413, 422), (body, r.status_code, r.text)
    assert "error" in r.json() or r.status_code == 200
    traced = [
        rec.getMessage() for rec in caplog.records if rec.exc_info or rec.levelno >= logging.ERROR
    ]
    assert not traced, (body, traced)
    if r.status_code != 200:
        return
    got = [d["embedding"] for d in r.json()["data"]]
    if body.get("encoding_format") == "base64":
        got = [np.frombuffer(base64.b64decode(g), dtype="<f4") for g in got]
    np.testing.assert_allclose(
        np.array(got, dtype=np.float32), expected_rows(tiny_backend, body), atol=1e-4
    )
