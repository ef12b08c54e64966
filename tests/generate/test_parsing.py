import random

import pytest

from embedforge.generate.parsing import longest_shared_span, parse_queries, validate_queries

QS = ["late rent penalty", "who fixes broken heating", "deposit refund deadline"]


@pytest.mark.parametrize(
    "text",
    [
        '["late rent penalty", "who fixes broken heating", "deposit refund deadline"]',
        '{"queries": ["late rent penalty", "who fixes broken heating", "deposit refund deadline"]}',
        'Sure! Here are the queries:\n```json\n["late rent penalty", "who fixes broken heating", "deposit refund deadline"]\n```\nHope that helps.',
        'Here they are: ["late rent penalty", "who fixes broken heating", "deposit refund deadline"] -- done',
        "1. late rent penalty\n2. who fixes broken heating\n3) deposit refund deadline",
        '- "late rent penalty"\n* who fixes broken heating\n\u2022 deposit refund deadline',
        '[{"query": "late rent penalty"}, {"query": "who fixes broken heating"}, {"text": "deposit refund deadline"}]',
        'Note [1] first.\n{"questions": ["late rent penalty", "who fixes broken heating", "deposit refund deadline"]}',
    ],
)
def test_parse_shapes(text):
    assert parse_queries(text) == QS


@pytest.mark.parametrize(
    "text", ["", "   ", "I'm sorry, I can't help with that.", "{broken json", '{"answer": 42}']
)
def test_parse_junk_is_none(text):
    assert parse_queries(text) is None


def test_validate_drops_and_counts():
    chunk = "The tenant shall pay a late fee of five percent of the monthly rent if payment is more than ten days late."
    queries = [
        "",
        "late rent penalty",
        "Late  Rent penalty",  # duplicate up to case/space
        "word " * 30,  # too long
        "tenant shall pay a late fee of five percent",  # near copy: whole query is one span of the chunk
        "late fee",  # short keyword query reusing the passage's words: kept
        "what happens if I pay rent two weeks late",
    ]
    kept, dropped = validate_queries(queries, chunk, max_words=24)
    assert kept == ["late rent penalty", "late fee", "what happens if I pay rent two weeks late"]
    assert dict(dropped) == {"empty": 1, "duplicate": 1, "too_long": 1, "near_copy": 1}


def test_long_exact_substring_is_near_copy():
    chunk = " ".join(f"w{i}" for i in range(100))
    q = "question about " + " ".join(f"w{i}" for i in range(10, 22)) + " and other things entirely"
    kept, dropped = validate_queries([q], chunk, max_words=40, max_copied_words=12)
    assert kept == [] and dropped["near_copy"] == 1


def test_longest_shared_span_matches_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        q = [rng.choice("abcd") for _ in range(rng.randint(0, 8))]
        c = [rng.choice("abcd") for _ in range(rng.randint(0, 20))]
        brute = max(
            [
                n
                for i in range(len(q))
                for n in range(1, len(q) - i + 1)
                if any(c[j : j + n] == q[i : i + n] for j in range(len(c) - n + 1))
            ]
            or [0]
        )
        assert longest_shared_span(q, c) == brute
