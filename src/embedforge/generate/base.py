"""The generator protocol: ``generate(chunks) -> pairs`` (records defined in :mod:`embedforge.types`)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from embedforge.types import Chunk, Pair

__all__ = ["Chunk", "Generator", "Pair"]


@runtime_checkable
class Generator(Protocol):
    def generate(self, chunks: list[Chunk]) -> list[Pair]: ...
