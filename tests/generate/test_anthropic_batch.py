import json

import httpx2
import pytest
from llm_fakes import client_for, make_chunks, message_body, queries_for

from embedforge.generate.anthropic_backend import AnthropicGenerator


class FakeBatchServer:
    """Message Batches API: create, retrieve (in progress until ``ready``), results JSONL."""

    def __init__(self):
        self.created: list[list[dict]] = []
        self.ready = False
        self.retrieves = 0

    def batch(self, bid: str, ended: bool) -> dict:
        n = len(self.created[int(bid.split("_")[1])])
        return {
            "id": bid,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else n,
                "succeeded": n if ended else 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-02T00:00:00Z",
            "ended_at": "2026-01-01T01:00:00Z" if ended else None,
            "results_url": f"http://fake.test/v1/messages/batches/{bid}/results" if ended else None,
        }

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v1/messages/batches":
            self.created.append(json.loads(request.content)["requests"])
            return httpx2.Response(200, json=self.batch(f"batch_{len(self.created) - 1}", False))
        if path.endswith("/results"):
            bid = path.split("/")[-2]
            lines = []
            for r in self.created[int(bid.split("_")[1])]:
                prompt = r["params"]["messages"][0]["content"]
                passage = prompt.split("<passage>\n", 1)[1].rsplit("\n</passage>", 1)[0]
                msg = message_body(json.dumps(queries_for(passage)), 100, 20)
                lines.append(
                    json.dumps(
                        {
                            "custom_id": r["custom_id"],
                            "result": {"type": "succeeded", "message": msg},
                        }
                    )
                )
            return httpx2.Response(
                200,
                content="\n".join(lines).encode(),
                headers={"content-type": "application/binary"},
            )
        if request.method == "GET" and path.startswith("/v1/messages/batches/"):
            self.retrieves += 1
            return httpx2.Response(200, json=self.batch(path.split("/")[-1], self.ready))
        return httpx2.Response(
            404, json={"type": "error", "error": {"type": "not_found_error", "message": path}}
        )


class Killed(Exception):
    pass


def test_batch_mode_submits_once_and_resumes_by_id(api_key, tmp_path):
    server = FakeBatchServer()
    chunks = make_chunks(4)

    async def crash_on_poll(seconds):
        raise Killed  # the process dies while waiting for the batch

    kw = dict(
        base_url="http://fake.test",
        batch=True,
        cache_dir=str(tmp_path),
        progress=False,
        poll_interval_s=5.0,
        price={"input_per_mtok": 1.0, "output_per_mtok": 5.0},
    )
    g1 = AnthropicGenerator(http_client=client_for(server), sleep=crash_on_poll, **kw)
    with pytest.raises(Killed):
        g1.generate(chunks)
    assert len(server.created) == 1 and len(server.created[0]) == 4
    state = json.loads(g1.batch_state_path.read_text())
    assert list(state) == ["batch_0"]

    polls = []

    async def finish_on_poll(seconds):
        polls.append(seconds)
        server.ready = True

    g2 = AnthropicGenerator(http_client=client_for(server), sleep=finish_on_poll, **kw)
    pairs = g2.generate(chunks)
    assert len(server.created) == 1  # resumed the saved id, nothing resubmitted
    assert g2.stats["batches_resumed"] == 1 and g2.stats["batches_submitted"] == 0
    assert polls == [5.0]
    assert len(pairs) == 12 and [p["doc_id"] for p in pairs[::3]] == ["c0", "c1", "c2", "c3"]
    assert g2.stats["usd"] == pytest.approx(0.5 * (400 * 1.0 + 80 * 5.0) / 1e6)  # batch discount
    assert json.loads(g2.batch_state_path.read_text()) == {}
    # a third run has everything cached: no request at all
    before = server.retrieves
    g3 = AnthropicGenerator(http_client=client_for(server), sleep=finish_on_poll, **kw)
    assert g3.generate(chunks) == pairs and server.retrieves == before and len(server.created) == 1
