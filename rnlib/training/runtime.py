"""Process settings the trainer's speed depends on: thread count and the C heap's handling of freed memory.

Every training whose result is cached runs on one intra-op thread (``ResultCache.fill`` sees to it). ATen
gives each thread a chunk of an elementwise op and finishes a chunk's last elements, those that do not fill a
vector, on a scalar path whose ``sigmoid`` (and so ``tanh``) can differ from the vectorised one in the last
bit; which elements that is depends on the thread count (measured: v10's weights on ``mixedfreq`` differ by
6e-8 after 200 steps at 1 and 2 threads). Full-batch training is chaotic and grows such bits into different
final metrics. With one thread per training, a result depends on the machine's instruction set, never on its
core count or ``RNLIB_THREADS``; the cores are used by training independent programs at once
(``map_programs`` here, the runner's parallel kernels above it).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

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


def program_workers(device: str = "cpu") -> int:
    """How many training programs to run at once: one per thread torch may use on the CPU, one on a GPU."""
    return max(1, torch.get_num_threads()) if device.split(":")[0] == "cpu" else 1


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the body with one intra-op thread in the calling thread, then restore its thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def map_programs(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]``, ``workers`` at a time, each call on one intra-op thread; results in order.

    Calls run in threads of this process (PyTorch releases the GIL inside its ops and the backward
    pass), so they share the result cache and its locks. If a call raises, the calls not yet started are
    cancelled, those running finish (what they train is cached), and the first error in item order is
    raised; an interrupt stops waiting at once.
    """
    items = list(items)
    with single_threaded():  # the caller's thread too; restores its count, which the workers' setting moves
        if workers <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        interrupted = False
        pool = ThreadPoolExecutor(
            min(workers, len(items)), "rnlib-train", initializer=torch.set_num_threads, initargs=(1,)
        )
        try:
            futures = [pool.submit(fn, x) for x in items]
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            pool.shutdown(wait=not interrupted, cancel_futures=True)
