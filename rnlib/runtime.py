"""Process settings the trainer's speed depends on: thread count and the C heap's handling of freed memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
HEAP_RETAIN_BYTES = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit; every study tensor is smaller


@functools.cache
def retain_freed_memory() -> bool:
    """Keep freed blocks up to 32 MB in the C heap instead of returning them to the OS; True if applied.

    Every training step allocates and frees dozens of activation tensors of 0.2–3 MB. glibc serves blocks
    above 128 KB with a fresh ``mmap`` and unmaps them on free, so each one page-faults in again, zeroed,
    on every step: ~10x the page faults and up to 1.4x the step time measured here. Raising the mmap and trim
    thresholds (what ``MALLOC_MMAP_THRESHOLD_`` would do from the environment) makes the heap reuse them.
    A no-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_RETAIN_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, 2 * HEAP_RETAIN_BYTES)
    )


def configure() -> None:
    """Apply ``RNLIB_THREADS`` (the runner sets it so parallel kernels share cores) and the heap setting."""
    threads = os.environ.get("RNLIB_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    retain_freed_memory()
