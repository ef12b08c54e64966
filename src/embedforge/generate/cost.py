"""Token estimates and spend accounting against ``generator.max_usd``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

CHARS_PER_TOKEN = 4.0  # English prose with Claude/GPT tokenizers: about 4 characters per token


def estimate_tokens(text: str) -> int:
    """A cheap, tokenizer-free estimate: characters / 4, rounded up."""
    return int(math.ceil(len(text) / CHARS_PER_TOKEN))


@dataclass
class Price:
    """USD per million tokens; ``discount`` multiplies both (0.5 for Anthropic's Batches API)."""

    input_per_mtok: float = 1.0
    output_per_mtok: float = 5.0
    discount: float = 1.0

    def usd(self, input_tokens: int, output_tokens: int) -> float:
        raw = input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok
        return raw * self.discount / 1e6


@dataclass
class CostTracker:
    """Actual usage from responses plus estimates of requests in flight, for the budget check."""

    price: Price
    max_usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    reserved_usd: float = 0.0
    by_request: list[float] = field(default_factory=list, repr=False)

    @property
    def usd(self) -> float:
        return self.price.usd(self.input_tokens, self.output_tokens)

    def can_spend(self, estimate_usd: float) -> bool:
        """Whether a new request of ``estimate_usd`` keeps actual + in-flight spend within budget."""
        return self.max_usd is None or self.usd + self.reserved_usd + estimate_usd <= self.max_usd

    def reserve(self, estimate_usd: float) -> None:
        self.reserved_usd += estimate_usd

    def release(self, estimate_usd: float) -> None:
        self.reserved_usd = max(0.0, self.reserved_usd - estimate_usd)

    def add(self, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens += int(input_tokens)
        self.output_tokens += int(output_tokens)
