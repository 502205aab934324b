"""What the fused step buys per neuron: rnlib's trainer with ``step="autograd"`` against ``step="fused"``.

Workload: the throughput benchmark's (3 seeds on `mixedfreq`, 1000 points, default budget 5000, full-batch
Adam), for every neuron the built fused passes cover (`rnlib.training.fused.fused_neurons()`), or those named.
Both steps run the same trainer (same models, data, fused Adam, schedule); only the step's forward and
backward differ: autograd over the batched layers, or the C passes with PyTorch's matmuls. First both train
``--check`` steps from the same initial weights and the script prints how far apart the weights end up
(float32 rounding: the passes sum in another order and take `sin`/`cos` from libmvec, not ATen). Then rounds
of the two alternate; per neuron it prints the median ms per step of each, their ratio and the range of the
per-round ratios, and last `fused: X.XX`, the smallest of the neurons' ratios.

    .venv/bin/python benchmarks/fused_step.py [--neurons vanilla singlu] [--rounds 3] [--steps 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from rnlib.training import fused, runtime
from rnlib.training.trainer import TrainConfig, train_models

TASK, SEEDS = "mixedfreq", (0, 1, 2)


def seconds_per_step(neuron: str, step: str, steps: int) -> float:
    """Wall seconds per step of one ``train_models`` call (model building and evaluation included)."""
    start = time.perf_counter()
    train_models(neuron, TASK, SEEDS, config=TrainConfig(steps=steps, record_every=0, step=step))
    return (time.perf_counter() - start) / steps


def weights_apart(neuron: str, steps: int) -> float:
    """The largest weight difference after ``steps`` steps of each step, relative to its tensor's max."""
    models = [
        train_models(neuron, TASK, SEEDS, config=TrainConfig(steps=steps, record_every=0, step=s))[0]
        for s in ("autograd", "fused")
    ]
    return max(
        ((a - b).abs().max() / a.abs().max()).item()
        for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True)
    )


def main() -> None:
    """Measure every neuron asked for; print `fused:` last, the smallest ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", nargs="+", help="default: every neuron the built library covers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="training steps per round and step kind")
    parser.add_argument("--check", type=int, default=20, help="steps both take before their weights compare")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runtime.retain_freed_memory()
    lib, why = fused.load()
    if lib is None:
        sys.exit(f"fused_step: the fused passes are unavailable here: {why}")
    covered = fused.fused_neurons()
    neurons = args.neurons or list(covered)
    if missing := [n for n in neurons if n not in covered]:
        sys.exit(f"fused_step: no fused form of {', '.join(missing)} (fused: {', '.join(covered)})")
    print(f"{TASK}, {len(SEEDS)} seeds, {args.steps} steps a round, {args.threads} threads")
    print(
        f"{'neuron':18s} {'apart':>7s} {'autograd ms':>11s} {'fused ms':>8s} {'ratio':>6s} {'per round':>9s}"
    )
    ratios = []
    for neuron in neurons:
        apart = weights_apart(neuron, args.check)
        times: dict[str, list[float]] = {"autograd": [], "fused": []}
        for _ in range(args.rounds):
            for step in times:
                times[step].append(seconds_per_step(neuron, step, args.steps) * 1e3)
        a_ms, f_ms = (statistics.median(times[s]) for s in ("autograd", "fused"))
        paired = sorted(a / f for a, f in zip(times["autograd"], times["fused"], strict=True))
        ratios.append(a_ms / f_ms)
        print(
            f"{neuron:18s} {apart:7.1e} {a_ms:11.3f} {f_ms:8.3f} {a_ms / f_ms:6.2f} "
            f"{paired[0]:.2f}–{paired[-1]:.2f}",
            flush=True,
        )
    print(f"fused: {min(ratios):.2f}")


if __name__ == "__main__":
    main()
