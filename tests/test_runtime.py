"""Tests for rnlib.training.runtime: threads, glibc's heap retention, and cached training on one thread
per program."""

import platform
import subprocess
import sys

import pytest
import torch

from rnlib.training import fused, runtime
from rnlib.training.cache import ResultCache
from rnlib.training.study import Study
from rnlib.training.trainer import TrainConfig, train

PATTERN = """
import resource, sys, torch
from rnlib.training import runtime
from rnlib.training.trainer import TrainConfig, train
torch.set_num_threads(1)
if sys.argv[1] == "default":
    runtime.retain_freed_memory = lambda: False  # what the trainer would do without the setting
else:
    assert runtime.retain_freed_memory()
config = TrainConfig(steps=5, record_every=0, step="autograd")  # the fused step allocates once
train("singlu", "mixedfreq", (0, 1, 2), config=config)  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
train("singlu", "mixedfreq", (0, 1, 2), config=TrainConfig(steps=200, record_every=0, step="autograd"))
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_retained_heap_reuses_freed_activations_instead_of_faulting_them_in_again():
    """The same short training in two fresh processes: with the setting, a fraction of the page faults.

    On the autograd step, which allocates its activations anew every step (the fused step's buffers are
    allocated once per training run)."""
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


def test_map_programs_keeps_order_runs_single_threaded_and_restores_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = runtime.map_programs(lambda i: (i, torch.get_num_threads()), range(5), workers=2)
        assert seen == [(i, 1) for i in range(5)]  # item order, one intra-op thread in every call
        assert torch.get_num_threads() == 2
        assert runtime.map_programs(lambda i: torch.get_num_threads(), [0], workers=1) == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_map_programs_finishes_running_calls_and_raises_the_first_error_in_item_order():
    finished = []

    def call(i):
        if i in (1, 3):
            raise ValueError(f"program {i} failed")
        finished.append(i)
        return i

    with pytest.raises(ValueError, match="program 1 failed"):
        runtime.map_programs(call, range(4), workers=2)
    assert 0 in finished and 2 in finished  # what ran before and beside the failure completed


def test_cache_fill_trains_only_the_missing_seeds_on_one_thread_and_stores_them(tmp_path):
    """``ResultCache.fill``, the one way into the cache: one batch of the missing seeds, on one thread."""
    cache, config, calls = ResultCache(tmp_path / "c"), TrainConfig(steps=3, record_every=0), []

    def fake_train(seeds):
        calls.append((list(seeds), torch.get_num_threads()))
        return train("vanilla", "nested2d", seeds, config=config)

    keys = {seed: f"{seed:064x}" for seed in (0, 1, 2)}
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first, trained = cache.fill({0: keys[0]}, "batch", fake_train)
        found, trained = cache.fill(keys, "batch", fake_train)
        assert torch.get_num_threads() == 2  # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    assert calls == [([0], 1), ([1, 2], 1)] and trained == [1, 2]
    assert found[0] == first[0] and [found[s].seed for s in (0, 1, 2)] == [0, 1, 2]
    again, trained = cache.fill(keys, "batch", fake_train)
    assert trained == [] and len(calls) == 2 and again == found  # every replica now comes from disk


@pytest.mark.slow
def test_study_results_do_not_depend_on_threads_or_workers(tmp_path, monkeypatch):
    """Records are bit-identical whether a study trains on one thread or two programs at once on two.

    On the autograd step (``rnlib.training.fused`` patched off), which the study still takes for models
    the fused
    passes do not cover; the fused step's bits do not move with threads (tests/test_fused.py).
    Not vacuous: the same training run directly at 2 intra-op threads differs from 1 thread in the last bits
    on AVX2 machines (rnlib.training.runtime: ATen's scalar tail of each thread's chunk), and chaos grows
    them.
    """
    monkeypatch.delenv("RNLIB_THREADS")  # the threads set below, not conftest's
    monkeypatch.setattr(fused, "load", lambda: (None, "autograd for this test"))
    config = TrainConfig(steps=200, record_every=0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        direct2 = [r.train_value for r in train("v10_free_phase", "mixedfreq", (0, 1, 2), config=config)]
        runs = {}
        for workers in (2, 1):
            torch.set_num_threads(workers)
            study = Study(
                "vt", tasks=["mixedfreq", "nested2d"], steps=200, records=tmp_path / f"{workers}.csv",
                cache=ResultCache(tmp_path / f"cache{workers}"), workers=workers,
            )  # fmt: skip
            runs[workers] = study.run(["vanilla", "v10_free_phase"]).records
            assert torch.get_num_threads() == workers  # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    cols = ["model", "task", "seed", "value", "train_value", "width"]
    assert runs[2][cols].equals(runs[1][cols])
    study_v10 = runs[1].query("model == 'v10_free_phase' and task == 'mixedfreq'")["train_value"].tolist()
    assert direct2 != study_v10, "2 intra-op threads no longer change the bits here: the test lost its teeth"


def test_parallel_study_keeps_what_trained_when_another_program_fails(tmp_path):
    """An impossible budget fails its program with the usual one-line error; the one beside it is cached."""

    def study(**kw):
        return Study("vp", seeds=[0], steps=10, records=tmp_path / "r.csv", cache=ResultCache(tmp_path / "c"),
                     workers=2, **kw)  # fmt: skip

    with pytest.raises(ValueError, match="cannot meet budget 1 within 5%"):
        study(tasks=["nested2d", "spiral"], budget={"spiral": 1}).run(["vanilla"])
    again = study(tasks=["nested2d"])
    again.run(["vanilla"])
    assert (again.trained, again.reused) == (0, 1)
    nets = study(tasks=["nested2d"]).fit_models(["vanilla", "singlu"], "nested2d")
    assert list(nets) == ["vanilla", "singlu"] and nets["singlu"].neuron == "singlu"
    assert not nets["vanilla"].training
