import asyncio
import json

import httpx2
import pytest
from llm_fakes import KEY, client_for, make_chunks, message_body, passage_of, queries_for

from embedforge.errors import EmbedforgeError
from embedforge.generate.anthropic_backend import AnthropicGenerator


def gen(handler, recorder, tmp_path=None, **kw):
    args = dict(
        base_url="http://fake.test",
        http_client=client_for(handler),
        sleep=recorder.sleep,
        progress=False,
        concurrency=4,
        max_retries=3,
        backoff_base_s=0.5,
        price={"input_per_mtok": 1.0, "output_per_mtok": 5.0},
        cache_dir=str(tmp_path) if tmp_path else None,
    )
    args.update(kw)
    return AnthropicGenerator(**args)


def ok_handler(recorder, usage=(100, 20)):
    def handler(request):
        recorder.requests.append(request)
        body = message_body(json.dumps(queries_for(passage_of(request))), *usage)
        return httpx2.Response(200, json=body)

    return handler


def test_success_pairs_usage_and_cost(recorder, api_key, capsys):
    chunks = make_chunks(5)
    g = gen(ok_handler(recorder), recorder)
    pairs = g.generate(chunks)
    assert len(recorder.requests) == 5
    h = recorder.requests[0].headers
    assert KEY in (h.get("x-api-key"), h.get("authorization", "").removeprefix("Bearer "))
    body = json.loads(recorder.requests[0].content)
    assert body["model"] == "claude-haiku-4-5" and body["messages"][0]["role"] == "user"
    assert len(pairs) == 15
    assert [p["doc_id"] for p in pairs] == [
        c["id"] for c in chunks for _ in range(3)
    ]  # chunk order
    assert pairs[0]["positive"] == chunks[0]["text"] and pairs[0]["source"] == "synthetic"
    assert pairs[0]["query"] == queries_for(chunks[0]["text"])[0]
    s = g.stats
    assert (s["requests"], s["retries"], s["failures"]) == (5, 0, {})
    assert (s["input_tokens"], s["output_tokens"]) == (500, 100)
    assert s["usd"] == pytest.approx((500 * 1.0 + 100 * 5.0) / 1e6)
    err = capsys.readouterr().err
    assert "estimated cost" in err and KEY not in err


def test_429_honours_retry_after(recorder, api_key):
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx2.Response(
                429,
                headers={"retry-after": "0.013"},
                json={
                    "type": "error",
                    "error": {"type": "rate_limit_error", "message": "slow down"},
                },
            )
        return ok_handler(recorder)(request)

    g = gen(handler, recorder)
    pairs = g.generate(make_chunks(1))
    assert recorder.sleeps == [0.013]
    assert g.stats["retries"] == 1 and g.stats["requests"] == 2
    assert g.stats["retries_by_kind"] == {"rate_limit": 1}
    assert len(pairs) == 3


def test_529_then_success_backoff_bounds(recorder, api_key):
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        if calls["n"] <= 2:
            return httpx2.Response(
                529,
                json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
            )
        return ok_handler(recorder)(request)

    g = gen(handler, recorder, backoff_base_s=0.5)
    assert len(g.generate(make_chunks(1))) == 3
    assert len(recorder.sleeps) == 2
    assert 0.25 <= recorder.sleeps[0] <= 0.5  # attempt 0: U[d/2, d], d = 0.5
    assert 0.5 <= recorder.sleeps[1] <= 1.0  # attempt 1: d = 1.0
    assert g.stats["retries_by_kind"] == {"overloaded": 2}


def test_500_exhausts_retries_and_counts_failure(recorder, api_key):
    def handler(request):
        recorder.requests.append(request)
        return httpx2.Response(
            500, json={"type": "error", "error": {"type": "api_error", "message": "boom"}}
        )

    g = gen(handler, recorder, max_retries=3, backoff_base_s=1.0, backoff_max_s=3.0)
    assert g.generate(make_chunks(1)) == []
    assert len(recorder.requests) == 4  # 1 + max_retries
    assert g.stats["failures"] == {"server": 1}
    caps = [1.0, 2.0, 3.0]  # capped at backoff_max_s
    assert all(c / 2 <= s <= c for s, c in zip(recorder.sleeps, caps, strict=True))


def test_timeout_is_retried(recorder, api_key):
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx2.ReadTimeout("slow", request=request)
        return ok_handler(recorder)(request)

    g = gen(handler, recorder)
    assert len(g.generate(make_chunks(1))) == 3
    assert g.stats["retries_by_kind"] == {"timeout": 1}


def test_malformed_body_and_junk_text_are_failures_not_crashes(recorder, api_key, tmp_path):
    chunks = make_chunks(3)

    def handler(request):
        recorder.requests.append(request)
        passage = passage_of(request)
        if passage == chunks[0]["text"]:
            return httpx2.Response(
                200, content=b"{not json", headers={"content-type": "application/json"}
            )
        if passage == chunks[1]["text"]:
            return httpx2.Response(200, json=message_body("Sorry, I cannot help with that."))
        return httpx2.Response(200, json=message_body(json.dumps(queries_for(passage))))

    g = gen(handler, recorder, tmp_path, concurrency=1)
    pairs = g.generate(chunks)
    assert [p["doc_id"] for p in pairs] == ["c2"] * 3
    assert g.stats["failures"] == {"bad_response": 1, "unparseable": 1}
    # rerun: the junk answer is cached (sent once), the malformed one is retried
    recorder.requests.clear()
    g2 = gen(handler, recorder, tmp_path)
    g2.generate(chunks)
    assert [passage_of(r) for r in recorder.requests] == [chunks[0]["text"]]


def test_budget_refusal_before_any_request(recorder, api_key):
    g = gen(ok_handler(recorder), recorder, max_usd=1e-6)
    with pytest.raises(EmbedforgeError, match="exceeds generator.max_usd"):
        g.generate(make_chunks(3))
    assert recorder.requests == []


def test_actual_spend_stops_new_requests(recorder, api_key):
    # each response reports 400k input tokens = $0.40; the estimate is far below
    g = gen(ok_handler(recorder, usage=(400_000, 0)), recorder, max_usd=1.0, concurrency=1)
    pairs = g.generate(make_chunks(5))
    assert len(recorder.requests) == 3  # 0.8 + estimate <= 1.0 still goes; 1.2 stops the rest
    assert g.stats["failures"] == {"budget": 2}
    assert g.stats["usd"] == pytest.approx(1.2)
    assert len(pairs) == 9


def test_missing_key_is_one_line_error_before_work(recorder, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    g = gen(ok_handler(recorder), recorder)
    with pytest.raises(EmbedforgeError, match="ANTHROPIC_API_KEY is not set"):
        g.generate(make_chunks(2))
    assert recorder.requests == []


def test_auth_error_stops_the_run(recorder, api_key):
    def handler(request):
        recorder.requests.append(request)
        return httpx2.Response(
            401,
            json={"type": "error", "error": {"type": "authentication_error", "message": "bad key"}},
        )

    with pytest.raises(EmbedforgeError, match="check the API key"):
        gen(handler, recorder, concurrency=1).generate(make_chunks(4))
    assert len(recorder.requests) == 1


def test_base_url_from_environment(recorder, api_key, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://from-env.test")
    g = gen(ok_handler(recorder), recorder, base_url=None)
    g.generate(make_chunks(1))
    assert recorder.requests[0].url.host == "from-env.test"


def test_kill_mid_run_then_resume_no_duplicates(recorder, api_key, tmp_path):
    chunks = make_chunks(12)
    served: list[str] = []

    async def slow(request):
        await asyncio.sleep(0.01)
        served.append(passage_of(request))
        return httpx2.Response(200, json=message_body(json.dumps(queries_for(passage_of(request)))))

    cache_file = None

    async def run_and_kill():
        nonlocal cache_file
        g = gen(slow, recorder, tmp_path, concurrency=2)
        task = asyncio.ensure_future(g.agenerate(chunks))
        cache_file = g.cache_path
        while not (cache_file.exists() and len(cache_file.read_text().splitlines()) >= 5):
            await asyncio.sleep(0.002)
        task.cancel()  # what Ctrl-C does to asyncio.run's main task
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_and_kill())
    done_first = len(cache_file.read_text().splitlines())
    assert 5 <= done_first < 12
    first_served = list(served)
    served.clear()
    g = gen(slow, recorder, tmp_path, concurrency=2)
    pairs = g.generate(chunks)
    cached = {json.loads(line)["key"] for line in cache_file.read_text().splitlines()}
    assert len(cached) == 12 == len(cache_file.read_text().splitlines())  # nothing recorded twice
    assert len(served) == 12 - done_first  # the rerun sent only the unfinished chunks
    first_keys = {
        json.loads(line)["key"] for line in cache_file.read_text().splitlines()[:done_first]
    }
    by_text = {c["text"]: c for c in chunks}
    resent = {g._key(by_text[t], g.prompts.build(by_text[t])) for t in served}
    assert not resent & first_keys
    assert len(first_served) <= done_first + 2  # at most the in-flight requests were lost
    assert g.stats["cached"] == done_first
    # no lost or duplicated pairs: identical to an uninterrupted run
    reference = gen(slow, recorder, None).generate(chunks)
    assert pairs == reference and len(pairs) == 36
