"""Push a run's model to the Hugging Face Hub (token from HF_TOKEN; HF_ENDPOINT for another Hub).

    embedforge push RUN_DIR --repo org/name [--private] [--with-onnx] [--force]

A run whose fine-tuned NDCG@10 does not beat its baseline by ship.min_gain is refused (exit 2)
unless --force. --with-onnx also uploads model/onnx/ (run ``embedforge export`` first).
"""

from __future__ import annotations

from embedforge.cli.common import parse, parser


def main(argv: list[str] | None = None, prog: str = "embedforge push") -> int:
    """Parse ``argv``, upload the run's model; prints the repo URL and returns the exit code."""
    ap = parser(prog, __doc__)
    ap.add_argument("run_dir")
    ap.add_argument("--repo", required=True, help="Hub model repo, org/name (created if missing)")
    ap.add_argument("--private", action="store_true", help="create the repo private")
    ap.add_argument("--with-onnx", action="store_true", help="also upload model/onnx/")
    ap.add_argument("--force", action="store_true", help="push even if the ship gate fails")
    args = parse(ap, argv)
    from embedforge.export.push import push_run

    print(push_run(args.run_dir, args.repo, args.private, args.with_onnx, args.force))
    return 0
