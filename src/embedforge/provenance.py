"""What a run was made with: git state, package versions, content hashes of the sets it used."""

from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
from pathlib import Path
from typing import Any

from embedforge.eval.retrieval import RetrievalSet
from embedforge.io import stable_hash

PACKAGES = (
    "embedforge",
    "torch",
    "transformers",
    "sentence-transformers",
    "pytorch-lightning",
    "hydra-core",
)


def git_info() -> dict[str, Any]:
    """``{"git_sha", "git_dirty"}`` of the checkout embedforge runs from (None outside git)."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain"))
        return {"git_sha": sha or None, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages that decide a run's numbers."""
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def set_hash(s: RetrievalSet) -> str:
    """Content hash of an eval/validation set as used (corpus, queries, judgements)."""
    return stable_hash(s.corpus, s.queries, s.qrels)
