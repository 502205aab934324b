"""Test-session settings shared by every test file (pytest puts tests/ on sys.path: ``golden`` imports)."""

import os

import torch

from rnlib.training.pool import LocalPool

# One thread per process: the models here are tiny, and several test processes (papermill kernels, Dask
# workers) share the 2 cores of the CI machine; oversubscribed OpenMP threads spin and slow everything down.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RNLIB_THREADS", "1")
torch.set_num_threads(1)


LocalDask = LocalPool  # a real scheduler and single-threaded workers on 127.0.0.1, one process each
