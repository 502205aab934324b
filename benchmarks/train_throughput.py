"""Model-steps per second of the batched trainer against the naive loop, on the same workload, same run.

Workload (issue 7): 3 seeds, a 1000-point task (`mixedfreq`, 2 -> 1, default budget 5000 parameters), 1000
full-batch Adam steps, for `vanilla`, `singlu` and the 3-matrix `v10_free_phase`. The naive loop is
`rnlib.training.reference.naive_train`: the protocol's equations in stock PyTorch (`addmm`, `torch.sin`,
`torch.tanh`), one
`nn.Module`, `torch.optim.Adam` and `CosineAnnealingLR` per seed, one seed after another. A second baseline,
rnlib's own trainer run on one seed at a time (`M = 1`), isolates what batching the seeds adds. Each
measurement is repeated (the three alternate) and the median is reported, since these machines are noisy.
The last line is `speedup: X.XX`, the smallest per-neuron ratio of medians against the naive loop; the range
of the per-repeat ratios (each naive run against the batched run right after it) shows how noisy the run was.

Before it, one line times the whole workload (every neuron's 3 seeds) as a notebook trains it: one
``Study.run``, whose programs (one per neuron) run one per thread at once, each on one intra-op thread,
against the naive loop's total for the same replicas.

Also printed: the fraction of this machine's measured matmul throughput (a large square sgemm, same
run, same threads) that the trainer reaches, counting 6·params·points FLOPs per model-step (forward 2,
backward 4), which covers the matmuls and ignores the elementwise work.

    .venv/bin/python benchmarks/train_throughput.py [--steps 1000] [--repeats 3] [--threads 2] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rnlib.core.tasks import TASKS
from rnlib.training import runtime
from rnlib.training.cache import ResultCache
from rnlib.training.reference import naive_train
from rnlib.training.study import Study
from rnlib.training.trainer import TrainConfig, train

NEURONS = ("vanilla", "singlu", "v10_free_phase")
TASK = "mixedfreq"  # 1000 training points, default budget 5000 (~5K parameters)
SEEDS = 3  # issue 7's workload; --seeds shows how the ratio grows with the batch


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    """This machine's sgemm throughput in GFLOP/s (median over repeats)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def time_naive(neuron: str, steps: int, seeds: tuple[int, ...]) -> float:
    """Seconds for the naive loop to train every seed one after another."""
    t = time.perf_counter()
    for seed in seeds:
        naive_train(neuron, TASK, seed, steps=steps)
    return time.perf_counter() - t


def time_batched(neuron: str, steps: int, groups: list[tuple[int, ...]]) -> tuple[float, int]:
    """Seconds for the trainer to train each group of seeds as one batch, and the parameters per model."""
    t = time.perf_counter()
    for seeds in groups:
        results = train(neuron, TASK, seeds, config=TrainConfig(steps=steps, record_every=0))
    return time.perf_counter() - t, results[0].params


def time_study(steps: int, seeds: tuple[int, ...], workers: int) -> float:
    """Seconds for one ``Study.run`` of every neuron on the task, with an empty cache and no diagnostics."""
    with tempfile.TemporaryDirectory() as tmp:
        study = Study(
            "bench", seeds=seeds, tasks=[TASK], steps=steps, record_every=0, workers=workers,
            records=Path(tmp) / "records.csv", cache=ResultCache(Path(tmp) / "cache"),
        )  # fmt: skip
        t = time.perf_counter()
        study.run(list(NEURONS))
        return time.perf_counter() - t


def main() -> None:
    """Measure, print a table and the `speedup:` line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seeds", type=int, default=SEEDS, help="replicas per batch (issue 7: 3)")
    args = parser.parse_args()
    seeds = tuple(range(args.seeds))
    torch.set_num_threads(args.threads)
    retained = runtime.retain_freed_memory()  # before any timing: the naive loop gets the same heap setting
    n_points = TASKS[TASK].n_train
    model_steps = len(seeds) * args.steps
    peak = matmul_gflops()
    print(f"task {TASK} ({n_points} points), {len(seeds)} seeds, {args.steps} steps, {args.threads} threads")
    print(f"C heap keeps freed blocks (rnlib.training.runtime, both loops): {retained}")
    print(f"machine sgemm throughput: {peak:.1f} GFLOP/s (1024^3, median of 10)")
    print(
        f"{'neuron':16s} {'params':>6s} {'naive/s':>9s} {'M=1/s':>7s} {'batched/s':>9s} {'ratio':>6s} "
        f"{'vs M=1':>6s} {'of sgemm':>8s} {'paired ratios':>13s}"
    )
    ratios, naive_seconds = [], 0.0
    for neuron in NEURONS:
        naive, single, batched = [], [], []
        for _ in range(args.repeats):
            naive.append(time_naive(neuron, args.steps, seeds))
            single.append(time_batched(neuron, args.steps, [(s,) for s in seeds])[0])
            seconds, params = time_batched(neuron, args.steps, [seeds])
            batched.append(seconds)
        naive_seconds += statistics.median(naive)
        naive_rate, single_rate, batched_rate = (
            model_steps / statistics.median(t) for t in (naive, single, batched)
        )
        ratio = batched_rate / naive_rate
        ratios.append(ratio)
        fraction = batched_rate * 6 * params * n_points / 1e9 / peak
        paired = sorted(n / b for n, b in zip(naive, batched, strict=True))  # each repeat's back-to-back pair
        print(
            f"{neuron:16s} {params:6d} {naive_rate:9.0f} {single_rate:7.0f} {batched_rate:9.0f} {ratio:6.2f} "
            f"{batched_rate / single_rate:6.2f} {fraction:8.1%} {paired[0]:6.2f}–{paired[-1]:.2f}",
            flush=True,
        )
    study = statistics.median(time_study(args.steps, seeds, args.threads) for _ in range(args.repeats))
    print(
        f"whole workload as one Study.run ({len(NEURONS)} programs, {args.threads} at once, one thread "
        f"each): {len(NEURONS) * model_steps / study:.0f} model-steps/s, "
        f"{naive_seconds / study:.2f}x the naive loop"
    )
    print(f"speedup: {min(ratios):.2f}")


if __name__ == "__main__":
    main()
