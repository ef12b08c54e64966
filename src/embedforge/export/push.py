"""Push a run's model to the Hugging Face Hub (``scripts/push.py``).

The token comes from the environment (``HF_TOKEN``, or what ``hf auth login`` stored) and is
never written anywhere; ``HF_ENDPOINT`` selects another Hub (a mirror, or a local stand-in in the
tests). A run that failed its ship gate is refused unless ``force``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from embedforge.errors import EmbedforgeError
from embedforge.export.onnx_export import ST_ONNX_DIR
from embedforge.runs import load_run, ship_gate

log = logging.getLogger(__name__)


def push_run(
    run_dir: str | Path,
    repo_id: str,
    private: bool = False,
    with_onnx: bool = False,
    force: bool = False,
) -> str:
    """Upload ``run_dir/model`` (its card included) to the Hub model repo ``repo_id``.

    Args:
        run_dir: a finished run directory (``model/``, ``metrics.json``, ``.hydra/``).
        repo_id: ``org/name``; created when missing.
        private: create the repo private.
        with_onnx: also upload ``model/onnx/`` (written by ``scripts/export.py``), which
            ``SentenceTransformer(repo_id, backend="onnx")`` loads.
        force: push even when the run failed its ship gate.

    Returns:
        The URL of the commit.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    run = Path(run_dir)
    cfg, metrics = load_run(run)
    model_dir = run / "model"
    if not (model_dir / "modules.json").is_file():
        raise EmbedforgeError(f"{run} has no model/ to push (not a finished run)")
    gate = ship_gate(cfg, metrics, 0.0, force, where=str(run), action="push")
    if with_onnx and not (model_dir / ST_ONNX_DIR).is_dir():
        raise EmbedforgeError(
            f"{model_dir / ST_ONNX_DIR} missing: run `python scripts/export.py {run}` first"
        )
    if repo_id.count("/") != 1:
        raise EmbedforgeError(f"--repo must be org/name, got {repo_id!r}")
    if not get_token():
        raise EmbedforgeError("no Hugging Face token: set HF_TOKEN (or run `hf auth login`)")
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(model_dir),
            commit_message=f"embedforge: {cfg.get('task', 'run')} ({run.name})",
            ignore_patterns=None if with_onnx else [f"{ST_ONNX_DIR}/*"],
        )
    except HfHubHTTPError as e:
        raise EmbedforgeError(f"push to {repo_id} failed: {str(e).splitlines()[0]}") from None
    if gate.get("forced"):
        log.warning("pushed a run that failed its ship gate (--force): %s", gate)
    return commit.commit_url
