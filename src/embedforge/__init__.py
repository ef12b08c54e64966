"""embedforge: turn your documents into a domain-specific text-embedding model."""

__version__ = "0.1.0"
