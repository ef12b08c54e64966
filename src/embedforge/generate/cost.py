"""Token estimates and spend accounting against ``generator.max_usd``.

The budget holds: before each call the worst case of that call is reserved (input bounded by the
prompt's UTF-8 bytes, output by ``max_output_tokens``); a call is sent only when actual spend plus
every reservation stays within ``max_usd``, so no concurrency can push spend past it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from embedforge.errors import EmbedforgeError

CHARS_PER_TOKEN = 4.0  # English prose with Claude/GPT tokenizers: about 4 characters per token


def estimate_tokens(text: str) -> int:
    """A cheap, tokenizer-free estimate: characters / 4, rounded up."""
    return int(math.ceil(len(text) / CHARS_PER_TOKEN))


def max_input_tokens(text: str) -> int:
    """An upper bound on a prompt's tokens: its UTF-8 bytes (a token covers at least one byte)
    plus room for the message framing."""
    return len(text.encode("utf-8")) + 32


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
    """Actual usage from responses plus worst-case reservations of requests in flight."""

    price: Price
    max_usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    reserved_usd: float = 0.0
    by_request: list[float] = field(default_factory=list, repr=False)

    @property
    def usd(self) -> float:
        return self.price.usd(self.input_tokens, self.output_tokens)

    def try_reserve(self, worst_usd: float) -> bool:
        """Reserve ``worst_usd`` for a call if actual + reserved spend stays within budget."""
        if self.max_usd is not None and self.usd + self.reserved_usd + worst_usd > self.max_usd:
            return False
        self.reserved_usd += worst_usd
        return True

    def release(self, estimate_usd: float) -> None:
        self.reserved_usd = max(0.0, self.reserved_usd - estimate_usd)

    def add(self, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens += int(input_tokens)
        self.output_tokens += int(output_tokens)


def plan_estimate(jobs: Sequence[Any], price: Price, max_usd: float | None) -> dict[str, float]:
    """Typical cost of ``jobs`` (each with ``est_input``/``est_output``) for the log and stats.

    Raises:
        EmbedforgeError: the estimate alone exceeds ``max_usd`` (nothing has been sent).
    """
    usd = sum(price.usd(j.est_input, j.est_output) for j in jobs)
    if max_usd is not None and usd > max_usd:
        raise EmbedforgeError(
            f"estimated cost ${usd:.2f} for {len(jobs)} requests exceeds generator.max_usd="
            f"{max_usd:.2f}: raise it or send fewer chunks"
        )
    return {
        "estimated_usd": usd,
        "estimated_input_tokens": sum(j.est_input for j in jobs),
        "estimated_output_tokens": sum(j.est_output for j in jobs),
    }
