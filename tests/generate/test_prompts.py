from pathlib import Path

import pytest

from embedforge.errors import EmbedforgeError
from embedforge.generate.prompts import PromptBuilder, load_few_shot

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CHUNK = {"id": "d1", "title": "Lease", "text": "The tenant shall pay rent monthly."}


def test_styles_differ_and_carry_the_passage():
    search = PromptBuilder(style="search").build(CHUNK)
    lay = PromptBuilder(style="non_expert", queries_per_chunk=5).build(CHUNK)
    assert "keyword" in search and "layperson" in lay and search != lay
    assert "write 5 distinct" in lay
    assert search.endswith(
        "<passage>\nTitle: Lease\nThe tenant shall pay rent monthly.\n</passage>"
    )


def test_few_shot_from_real_queries_and_domain():
    queries = load_few_shot(DATA / "legal-summarization" / "queries.jsonl")
    assert len(queries) == 290
    b = PromptBuilder(few_shot=queries, few_shot_k=3, domain="terms of service", seed=1)
    p = b.build(CHUNK)
    assert len(b.examples) == 3 and all(f"- {q}" in p for q in b.examples)
    assert "terms of service" in p
    assert PromptBuilder(few_shot=queries, few_shot_k=3, seed=1).examples == b.examples  # seeded


def test_plain_text_few_shot(tmp_path):
    f = tmp_path / "q.txt"
    f.write_text("how to cancel\n\n  refund   policy \n")
    assert load_few_shot(f) == ["how to cancel", "refund policy"]


def test_bad_style_is_one_line_error():
    with pytest.raises(EmbedforgeError, match="generator.style"):
        PromptBuilder(style="poetic")
