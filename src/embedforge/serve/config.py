"""Server limits and batching knobs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    """Args:
    max_batch_size: most texts run in one model call (1 = batching off).
    max_wait_ms: how long the first waiting request may wait for others to fill a batch.
    max_queue: most texts waiting; beyond it requests get 503 + Retry-After.
    max_inputs: most inputs in one request (413 beyond).
    max_chars: most characters in one input (413 beyond).
    model_name: the name reported in responses (default: the model dir's name).
    retry_after_s: the Retry-After value on 503.
    """

    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    max_inputs: int = 256
    max_chars: int = 8192
    model_name: str = ""
    retry_after_s: int = 1
