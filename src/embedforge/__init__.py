"""embedforge: turn your documents into a domain-specific text-embedding model."""

__version__ = "0.1.0"


def _register_resolvers() -> None:
    """``${ef.name:NAME,PATH}``: NAME, else the last component of PATH (stem of a file), else ``run``."""
    from pathlib import Path

    from omegaconf import OmegaConf

    def name(name=None, path=None) -> str:
        if name not in (None, "", "None"):
            return str(name)
        if path not in (None, "", "None", "???"):
            p = Path(str(path).rstrip("/"))
            return p.stem if p.suffix else p.name
        return "run"

    OmegaConf.register_new_resolver("ef.name", name, replace=True)


_register_resolvers()
