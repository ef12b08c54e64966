"""Issue 12, rows 8-11: generation against a faulty local stand-in of the LLM APIs (real SDKs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedforge.errors import EmbedforgeError
from embedforge.generate.anthropic_backend import AnthropicGenerator
from embedforge.generate.openai_backend import OpenAIGenerator

ROOT = Path(__file__).resolve().parents[2]
PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 5.0}


def chunks(n: int) -> list[dict]:
    return [
        {
            "id": f"c{i}",
            "title": "",
            "text": f"Section {i}. The tenant must notify the landlord within thirty days of"
            f" the event described as item{i}",
        }
        for i in range(n)
    ]


@pytest.fixture()
def anthropic_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-fault-suite")
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


def claude(url: str, **kw) -> AnthropicGenerator:
    args = dict(base_url=url, progress=False, max_retries=1, backoff_base_s=0.01, price=PRICE)
    return AnthropicGenerator(**{**args, **kw})


def test_row08_torn_cache_line_is_repaired_not_paid_twice(fake_llm, anthropic_key, tmp_path):
    url, fake = fake_llm
    g = claude(url, cache_dir=str(tmp_path))
    assert len(g.generate(chunks(6))) == 18
    path = g.cache_path
    data = path.read_bytes()
    path.write_bytes(data[:-25])  # killed mid-write: the last record is torn
    fake.requests = 0
    g = claude(url, cache_dir=str(tmp_path))
    assert len(g.generate(chunks(8))) == 24  # the torn chunk and 2 new ones
    assert fake.requests == 3 and g.stats["cache_lines_skipped"] == {"torn": 1}
    fake.requests = 0
    g = claude(url, cache_dir=str(tmp_path))
    assert len(g.generate(chunks(8))) == 24 and fake.requests == 0  # nothing swallowed
    assert len(path.read_text().splitlines()) == 8


def test_row09_undecodable_cache_line_is_skipped_and_counted(fake_llm, anthropic_key, tmp_path):
    url, fake = fake_llm
    g = claude(url, cache_dir=str(tmp_path))
    g.generate(chunks(4))
    lines = g.cache_path.read_bytes().splitlines(keepends=True)
    g.cache_path.write_bytes(b"".join(lines[:2] + [b"\xff\xfe\x00 not utf-8 \x81\n"] + lines[2:]))
    fake.requests = 0
    g = claude(url, cache_dir=str(tmp_path))
    assert len(g.generate(chunks(4))) == 12 and fake.requests == 0
    assert g.stats["cache_lines_skipped"] == {"undecodable": 1}


@pytest.mark.parametrize("concurrency", [8, 50])
def test_row10_budget_never_passed_at_any_concurrency(fake_llm, anthropic_key, concurrency, capsys):
    url, fake = fake_llm
    fake.long_answers, fake.delay = True, 0.05  # every answer uses all max_output_tokens
    g = claude(url, max_usd=0.10, concurrency=concurrency)
    g.generate(chunks(80))
    assert g.stats["usd"] <= 0.10
    assert g.stats["usd"] > 0.06 and g.stats["failures"]["budget"] > 0  # it spent, then stopped
    assert fake.requests == 80 - g.stats["failures"]["budget"]


@pytest.mark.parametrize("status", [404, 400])
def test_row11_unknown_model_or_no_credit_stops_at_once(fake_llm, anthropic_key, status):
    url, fake = fake_llm
    fake.status = status
    with pytest.raises(
        EmbedforgeError, match=f"model 'claude-nope': HTTP {status}.*fake {status}"
    ) as e:
        claude(url, model="claude-nope", concurrency=4).generate(chunks(40))
    assert "\n" not in str(e.value) and fake.requests <= 4


def test_row11_openai_and_should_retry_false_stop_too(fake_llm, monkeypatch):
    url, fake = fake_llm
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fault-suite")
    fake.status, fake.headers = 500, {"x-should-retry": "false"}
    g = OpenAIGenerator(base_url=url + "/v1", progress=False, concurrency=2, price=PRICE)
    with pytest.raises(EmbedforgeError, match="http_500"):
        g.generate(chunks(20))
    assert fake.requests <= 2


def _script(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    data = Path(os.environ.get("EMBEDFORGE_DATA", ROOT.parent / "shared" / "data"))
    cmd = [
        sys.executable, str(ROOT / "scripts" / "generate.py"), "generator=anthropic",
        f"generator.base_url={url}", "generator.progress=false", "generator.max_retries=0",
        f"generator.cache_dir={out / 'cache'}", "data=beir",
        f"data.path={data / 'legal-summarization'}", "data.gen_max_docs=6",
        f"paths.output_dir={out}", f"hydra.run.dir={out}", *extra,
    ]  # fmt: skip
    env = {**os.environ, "ANTHROPIC_API_KEY": "sk-fault-suite"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_row11_generate_script_exits_nonzero_without_pairs(fake_llm, tmp_path):
    url, fake = fake_llm
    fake.status = 404
    r = _script(url, tmp_path / "a", "generator.model=claude-nope")
    assert r.returncode == 2 and "model 'claude-nope': HTTP 404" in r.stderr
    assert not (tmp_path / "a" / "pairs.jsonl").exists()
    fake.status, fake.junk = 200, True  # every answer unparseable: 0 pairs
    r = _script(url, tmp_path / "b")
    assert r.returncode == 2 and "0 pairs from 6 chunks" in r.stderr
    assert not (tmp_path / "b" / "pairs.jsonl").exists()
    assert json.loads((tmp_path / "b" / "generate_stats.json").read_text())["pairs"] == 0
