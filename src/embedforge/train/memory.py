"""Host memory of a training step: give freed activation blocks back to the operating system.

glibc's malloc serves blocks over its mmap threshold as their own mappings (unmapped when freed),
but after each such free it raises the threshold to that block's size (up to 32 MB), so a
training step's 2-32 MB activations soon come from heaps it rarely shrinks: the process keeps
~1-2 GB it no longer uses, and fragmentation raises the peak (``scripts/bench_train_memory.py``,
docs/scale.md). A fixed threshold stops that, at the cost of page faults on every large
allocation (~1.25x a MiniLM step on CPU), so it is used only where memory is the constraint.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameter (glibc malloc.h)
#: blocks over this are mapped on their own and returned to the kernel when freed
RETURN_ABOVE_BYTES = 4 * 2**20


def return_freed_blocks(threshold_bytes: int = RETURN_ABOVE_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes`` for the rest of the process; False where
    the C library is not glibc (nothing changes)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold_bytes)))
    except (OSError, AttributeError):
        return False
