import numpy as np

from embedforge.generate.filters import round_trip_filter


class TableEncoder:
    """Embeds texts from a fixed table (unit vectors), to build cases with known rankings."""

    def __init__(self, table):
        self.table = {k: np.asarray(v, np.float32) / np.linalg.norm(v) for k, v in table.items()}

    def encode(self, texts, kind, batch_size=64, show_progress=False):
        return np.stack([self.table[t] for t in texts])


def test_round_trip_drops_query_whose_chunk_is_not_top_k():
    enc = TableEncoder(
        {
            "A": [1, 0, 0],
            "B": [0, 1, 0],
            "C": [0, 0, 1],
            "qa": [0.9, 0.1, 0],
            "qb": [0, 1, 0.2],
            "q_bad": [0.1, 0.2, 1],  # q_bad's source is A, ranked last
        }
    )
    pairs = [
        {"query": "qa", "positive": "A"},
        {"query": "qb", "positive": "B"},
        {"query": "q_bad", "positive": "A"},
    ]
    kept, report = round_trip_filter(pairs, ["A", "B", "C"], enc, k=1)
    assert [p["query"] for p in kept] == ["qa", "qb"]
    assert report == {"k": 1, "checked": 3, "kept": 2, "dropped": 1}
    kept3, _ = round_trip_filter(pairs, ["A", "B", "C"], enc, k=3)
    assert len(kept3) == 3
