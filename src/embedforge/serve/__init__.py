"""Serve embeddings: OpenAI-compatible HTTP API over a micro-batching queue."""
