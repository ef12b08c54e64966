"""Minimal Prometheus text exposition: counters, gauges and histograms, no dependency."""

from __future__ import annotations

import threading
from collections.abc import Sequence


class Metrics:
    """The server's metrics, rendered by ``render()`` in Prometheus text format 0.0.4."""

    LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}  # by status code
        self.texts = 0
        self.tokens = 0
        self.truncated = 0
        self.queue_depth = 0
        self.latency = _Histogram(self.LATENCY_BUCKETS)
        self.batch_size = _Histogram(self.BATCH_BUCKETS)
        self.batch_seconds = _Histogram(self.LATENCY_BUCKETS)

    def request(self, status: int) -> None:
        """Count one answer by HTTP status (API answers and every error answer)."""
        with self._lock:
            self.requests[str(status)] = self.requests.get(str(status), 0) + 1

    def embedded(self, seconds: float, texts: int, tokens: int, truncated: int = 0) -> None:
        """Record one answered embedding request."""
        with self._lock:
            self.texts += texts
            self.tokens += tokens
            self.truncated += truncated
            self.latency.observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batch_size.observe(size)
            self.batch_seconds.observe(seconds)

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP embedforge_requests_total API answers and every error answer, by status.",
                "# TYPE embedforge_requests_total counter",
                *(
                    f'embedforge_requests_total{{code="{c}"}} {n}'
                    for c, n in sorted(self.requests.items())
                ),
                "# HELP embedforge_texts_total Texts embedded.",
                "# TYPE embedforge_texts_total counter",
                f"embedforge_texts_total {self.texts}",
                "# HELP embedforge_tokens_total Tokens embedded.",
                "# TYPE embedforge_tokens_total counter",
                f"embedforge_tokens_total {self.tokens}",
                "# HELP embedforge_truncated_inputs_total Inputs cut to the model's max tokens.",
                "# TYPE embedforge_truncated_inputs_total counter",
                f"embedforge_truncated_inputs_total {self.truncated}",
                "# HELP embedforge_queue_depth Texts waiting for a batch.",
                "# TYPE embedforge_queue_depth gauge",
                f"embedforge_queue_depth {self.queue_depth}",
            ]
            lines += self.latency.lines("embedforge_request_latency_seconds", "Request latency.")
            lines += self.batch_size.lines("embedforge_batch_size", "Texts per model call.")
            lines += self.batch_seconds.lines("embedforge_batch_seconds", "Model call duration.")
        return "\n".join(lines) + "\n"


class _Histogram:
    def __init__(self, buckets: Sequence[float]):
        self.buckets = list(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1

    def lines(self, name: str, help_text: str) -> list[str]:
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        out += [f'{name}_bucket{{le="{b}"}} {c}' for b, c in zip(self.buckets, self.counts)]
        out += [
            f'{name}_bucket{{le="+Inf"}} {self.count}',
            f"{name}_sum {self.sum}",
            f"{name}_count {self.count}",
        ]
        return out
