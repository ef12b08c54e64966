"""Fixtures for the generator tests (helpers live in llm_fakes.py, importable by name)."""

from llm_fakes import api_key, recorder  # noqa: F401 - re-exported as fixtures
