"""Fakes for the LLM backends: real SDK clients over an ``httpx2.MockTransport`` (no network).

The ``anthropic`` and ``openai`` SDKs pinned here are built on ``httpx2``, so the mock transport
and client come from ``httpx2`` (``httpx.AsyncClient`` is rejected by the SDKs).
"""

from __future__ import annotations

import json
import re

import httpx2
import pytest

KEY = "sk-test-secret-key-123"


def message_body(text: str, input_tokens: int = 100, output_tokens: int = 20) -> dict:
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def passage_of(request: httpx2.Request) -> str:
    """The passage a generation prompt carries (lets a fake answer per chunk)."""
    body = json.loads(request.content)
    prompt = body["messages"][0]["content"]
    m = re.search(r"<passage>\n(.*)\n</passage>", prompt, re.S)
    return m.group(1) if m else ""


def queries_for(passage: str) -> list[str]:
    """Deterministic, valid queries for a passage (distinct per passage)."""
    tag = passage.split()[-1] if passage.split() else "x"
    return [f"what about {tag} rules", f"{tag} deadline question", f"who pays {tag} fees"]


class Recorder:
    """Collects request paths, and the sleeps the generator asks for."""

    def __init__(self):
        self.requests: list[httpx2.Request] = []
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def api_key(monkeypatch) -> str:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    return KEY


def make_chunks(n: int) -> list[dict]:
    return [
        {
            "id": f"c{i}",
            "title": "",
            "text": f"Section {i}. The tenant must notify the landlord within thirty days of item{i}",
        }
        for i in range(n)
    ]


def client_for(handler) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
