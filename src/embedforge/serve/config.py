"""Server limits, batching knobs and the optional API key."""

from __future__ import annotations

from dataclasses import dataclass

from embedforge.errors import EmbedforgeError


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
    truncate: the default of a request's ``truncate``: cut over-long inputs to the model's max
        tokens (counted in ``usage.truncated_inputs``) instead of answering 413.
    api_key: when set, ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer <key>`` and the
        interactive docs are off. Never logged.
    request_timeout_s: most seconds from a request's arrival to its answer (504 beyond).
    body_timeout_s: most seconds a client may take to send its body (408 beyond).
    max_body_bytes: largest request body, enforced while reading (413 beyond); 0 = derived from
        ``max_inputs * max_chars`` (6 bytes per character: JSON ``\\uXXXX`` escapes).
    limit_concurrency: most API requests in progress at once (503 beyond); 0 = no limit.
    default_input_type: the prompt (``query`` or ``document``) for a request that names no
        ``input_type`` and no ``<name>-query`` / ``<name>-document`` model.
    token_ids: how token-id inputs are read: ``model`` (ids of the served model's tokenizer) or
        a tiktoken encoding name such as ``cl100k_base`` (the ids OpenAI clients, e.g.
        LangChain's ``OpenAIEmbeddings`` by default, send; needs ``tiktoken``).
    calibrate: time the model at start-up (under a second) to learn what one call costs, which
        sets how finely a batch is split into length buckets; off keeps the backend's default.
    header_timeout_s: most seconds a connection may take to send a request's headers, counted
        from connecting or from the previous answer (then closed; 408 if it had sent a part).
    max_connections: most open connections; a new one beyond gets 503 and is closed (0 = no cap).
    """

    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    max_inputs: int = 256
    max_chars: int = 8192
    model_name: str = ""
    retry_after_s: int = 1
    truncate: bool = True
    api_key: str | None = None
    request_timeout_s: float = 60.0
    body_timeout_s: float = 10.0
    max_body_bytes: int = 0
    limit_concurrency: int = 0
    default_input_type: str = "document"
    token_ids: str = "model"
    calibrate: bool = True
    header_timeout_s: float = 10.0
    max_connections: int = 512

    def __post_init__(self) -> None:
        if self.default_input_type not in ("query", "document"):
            raise EmbedforgeError(
                f"default input type must be query or document, got {self.default_input_type!r}"
            )

    @property
    def body_limit(self) -> int:
        """The effective body size limit in bytes."""
        return self.max_body_bytes or 6 * self.max_inputs * self.max_chars + 65536
