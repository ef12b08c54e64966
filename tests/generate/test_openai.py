import json

import httpx2
import pytest
from llm_fakes import Recorder, client_for, make_chunks, passage_of, queries_for

from embedforge.errors import EmbedforgeError
from embedforge.generate.openai_backend import OpenAIGenerator


def completion(text: str, usage: bool = True) -> dict:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "local-model",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        ],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}
    return body


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def test_openai_compatible_local_server_with_retry():
    rec = Recorder()
    calls = {"n": 0}

    def handler(request):
        rec.requests.append(request)
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx2.Response(
                429, headers={"retry-after": "0.02"}, json={"error": {"message": "busy"}}
            )
        answer = (
            "Here you go:\n```json\n"
            + json.dumps({"queries": queries_for(passage_of(request))})
            + "\n```"
        )
        return httpx2.Response(200, json=completion(answer))

    g = OpenAIGenerator(
        model="local-model",
        base_url="http://vllm.test/v1",
        http_client=client_for(handler),
        sleep=rec.sleep,
        progress=False,
        concurrency=1,
        price={"input_per_mtok": 0.0, "output_per_mtok": 0.0},
    )
    pairs = g.generate(make_chunks(2))
    assert rec.requests[0].url.path == "/v1/chat/completions"
    assert json.loads(rec.requests[0].content)["max_tokens"] == 512
    assert rec.sleeps == [0.02] and g.stats["retries"] == 1 and g.stats["requests"] == 3
    assert len(pairs) == 6 and pairs[0]["generator"] == "openai:local-model"
    assert (g.stats["input_tokens"], g.stats["output_tokens"]) == (100, 20)


def test_openai_usage_missing_is_estimated():
    def handler(request):
        return httpx2.Response(
            200, json=completion(json.dumps(queries_for(passage_of(request))), usage=False)
        )

    g = OpenAIGenerator(
        base_url="http://ollama.test/v1", http_client=client_for(handler), progress=False
    )
    assert len(g.generate(make_chunks(1))) == 3
    assert g.stats["usage_estimated"] == 1 and g.stats["input_tokens"] > 0


def test_openai_needs_key_for_the_public_api():
    g = OpenAIGenerator(progress=False)
    with pytest.raises(EmbedforgeError, match="OPENAI_API_KEY is not set"):
        g.generate(make_chunks(1))
