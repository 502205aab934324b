"""Tests for rnlib.runtime: the thread count from RNLIB_THREADS and glibc's heap retention."""

import platform
import subprocess
import sys

import pytest
import torch

from rnlib import runtime

PATTERN = """
import resource, sys, torch
from rnlib import runtime
from rnlib.trainer import TrainConfig, train
torch.set_num_threads(1)
if sys.argv[1] == "default":
    runtime.retain_freed_memory = lambda: False  # what the trainer would do without the setting
else:
    assert runtime.retain_freed_memory()
train("singlu", "mixedfreq", (0, 1, 2), config=TrainConfig(steps=5, record_every=0))  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
train("singlu", "mixedfreq", (0, 1, 2), config=TrainConfig(steps=200, record_every=0))
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_retained_heap_reuses_freed_activations_instead_of_faulting_them_in_again():
    """The same short training in two fresh processes: with the setting, a fraction of the page faults."""
    faults = {
        mode: int(subprocess.run([sys.executable, "-c", PATTERN, mode], check=True, capture_output=True,
                                 text=True).stdout)
        for mode in ("default", "retain")
    }  # fmt: skip
    assert faults["retain"] < 0.25 * faults["default"], faults


def test_configure_takes_threads_from_the_environment(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("RNLIB_THREADS", "1")
    try:
        runtime.configure()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
