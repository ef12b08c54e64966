"""Push a run's model to the Hugging Face Hub (token from HF_TOKEN; HF_ENDPOINT for another Hub).

    python scripts/push.py RUN_DIR --repo org/name [--private] [--with-onnx] [--force]

A run whose fine-tuned NDCG@10 does not beat its baseline by ship.min_gain is refused (exit 2)
unless --force. --with-onnx also uploads model/onnx/ (run scripts/export.py first).
"""

from __future__ import annotations

import argparse
import sys

from embedforge.errors import EmbedforgeError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--repo", required=True, help="Hub model repo, org/name (created if missing)")
    ap.add_argument("--private", action="store_true", help="create the repo private")
    ap.add_argument("--with-onnx", action="store_true", help="also upload model/onnx/")
    ap.add_argument("--force", action="store_true", help="push even if the ship gate fails")
    args = ap.parse_args(argv)
    try:
        from embedforge.export.push import push_run

        url = push_run(args.run_dir, args.repo, args.private, args.with_onnx, args.force)
    except EmbedforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
