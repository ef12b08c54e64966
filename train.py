"""Fine-tune an embedding model: ``python train.py [group=option ...] [key=value ...] [-m]``.

The same as ``embedforge train`` (``src/embedforge/cli/train.py``), for a checkout.
"""

from embedforge.cli.train import main

if __name__ == "__main__":
    main()
