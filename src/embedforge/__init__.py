"""embedforge: turn your documents into a domain-specific text-embedding model."""

__version__ = "0.1.0"


def _register_resolvers() -> None:
    """``${ef.name:NAME,PATH}``: NAME, else the last component of PATH (stem of a file), else ``run``.

    ``${ef.wandb_offline:MODE}``: MODE ``auto`` is offline unless a W&B key is configured
    (``WANDB_API_KEY`` or ``wandb login``'s netrc entry); true/false pass through.
    """
    import os
    from pathlib import Path

    from omegaconf import OmegaConf

    def name(name=None, path=None) -> str:
        if name not in (None, "", "None"):
            return str(name)
        if path not in (None, "", "None", "???"):
            p = Path(str(path).rstrip("/"))
            return p.stem if p.suffix else p.name
        return "run"

    def wandb_offline(mode: str | bool = "auto") -> bool:
        if str(mode).lower() != "auto":
            return str(mode).lower() in ("true", "1", "yes")
        if os.environ.get("WANDB_API_KEY"):
            return False
        netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
        return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))

    OmegaConf.register_new_resolver("ef.name", name, replace=True)
    OmegaConf.register_new_resolver("ef.wandb_offline", wandb_offline, replace=True)


_register_resolvers()
