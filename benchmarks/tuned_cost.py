"""What the tuned notebook costs on this machine: one replica of every (neuron, task) it tunes, timed, and the
notebook's cold wall time projected from it.

The tuned notebook (docs/protocol.md §9) trains, per (neuron, task): its trials (starting grid + ``extend``,
on each tuning seed), then the chosen setting and the untuned protocol on every final seed. Every one of them
is one replica of the same size and step count, and batching replicas buys nothing on one thread at these
sizes (docs/performance.md), so the notebook's training costs ``replicas per pair × S`` thread-seconds, where
``S`` is one sweep: a replica of each pair, trained here as the runner's pool trains it (``--workers``
processes at once, one intra-op thread each, the notebook's diagnostics on). Counts come from the notebook's
parameters cell with the profile's overrides (``parameters/default.run.yaml``), so they follow the notebook.

It prints each task's and each neuron's seconds per replica (a neuron's ratio to vanilla beside it), the
share of the machine's sgemm rate (6 × parameters × training points flops per step), then ``S`` and the
projection, and last ``projected: M.M min`` (training only, all cores busy; a notebook adds kernel start,
analysis and the tail of its last round). Machines differ from one session to the next: compare ``S`` with
the sweep a measured run implies, not minutes with minutes.

    .venv/bin/python benchmarks/tuned_cost.py [--workers 2] [--profile parameters/default.run.yaml]
"""

from __future__ import annotations

import argparse
import ast
import multiprocessing
import os
import statistics
import time
from collections.abc import Sequence

import torch
from train_throughput import matmul_gflops  # benchmarks/, the script's own folder

from rnlib.analysis import tuning
from rnlib.batch.profiles import declared_parameters, expand_jobs, load_profile
from rnlib.core.tasks import TASKS
from rnlib.paths import REPO_ROOT
from rnlib.training import runtime
from rnlib.training.diagnostics import DEFAULT_RECORDERS
from rnlib.training.trainer import TrainConfig, train
from rnlib.training.tuning_jobs import tunable_tasks

NOTEBOOK = "tuned"
TARGET_MIN = 45.0  # the target for the notebook on the 2-core machine


def tuned_parameters(profile: str) -> dict:
    """The tuned notebook's parameters as the profile runs it: its declared defaults, then the profile's."""
    job = next(j for j in expand_jobs(load_profile(REPO_ROOT / profile)) if j.stem == NOTEBOOK)
    declared = {k: ast.literal_eval(v["default"]) for k, v in declared_parameters(job.notebook).items()}
    return {**declared, **job.parameters}


def replicas_per_pair(p: dict) -> tuple[int, int, int]:
    """Per (neuron, task): trial replicas, tuned replicas, untuned replicas."""
    grids = tuning.plan(p["neurons"], p["lrs"], p["omegas"], p["plain_lrs"])  # the notebook's: equal lengths
    grid = len(next(iter(grids.values())))
    return len(p["tuning_seeds"]) * (grid + p["extend"]), len(p["seeds"]), len(p["seeds"])


def one_replica(job: tuple[str, str, int, float, int]) -> tuple[str, str, float, int]:
    """Train one replica of ``neuron`` on ``task`` on one thread; its wall seconds and parameter count."""
    neuron, task, seed, lr, steps = job
    start = time.perf_counter()
    with runtime.single_threaded():  # as the pool's workers train (train_models sets the heap itself)
        result = train(
            neuron, task, [seed], config=TrainConfig(steps=steps, lr=lr), callbacks=DEFAULT_RECORDERS
        )
    return neuron, task, time.perf_counter() - start, result[0].params


def main(argv: Sequence[str] | None = None) -> None:
    """Time one sweep, print the tables and the projection."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    fewer = "fewer is for tests: the projection then scales each replica's start-up too"
    parser.add_argument(
        "--steps", type=int, default=0, help=f"steps per replica (default: the notebook's; {fewer})"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes at once")
    parser.add_argument("--profile", default="parameters/default.run.yaml")
    parser.add_argument("--tasks", nargs="*", default=[], help="a subset of the tunable tasks (default: all)")
    args = parser.parse_args(argv)
    p = tuned_parameters(args.profile)
    steps = args.steps or p["steps"]
    tasks, neurons = tunable_tasks(args.tasks or p["tasks"]), list(p["neurons"])
    torch.set_num_threads(1)
    peak = matmul_gflops()  # one thread, as each training
    jobs = [(n, t, p["tuning_seeds"][0], p["lr"], steps) for t in tasks for n in neurons]
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        done = pool.map(one_replica, jobs, chunksize=1)
    wall = time.perf_counter() - start
    scale = p["steps"] / steps  # seconds of a full-length replica
    seconds = {(n, t): s * scale for n, t, s, _ in done}
    share = {(n, t): 6 * k * TASKS[t].n_train * steps / s / 1e9 / peak for n, t, s, k in done}
    print(f"{len(jobs)} replicas ({len(neurons)} neurons × {len(tasks)} tasks), {steps} steps each, "
          f"{args.workers} processes of one thread; sgemm {peak:.1f} GFLOP/s on one thread")  # fmt: skip
    print(f"{'task':14s} {'s/replica':>9s}")
    for t in tasks:
        print(f"{t:14s} {statistics.median(seconds[(n, t)] for n in neurons):9.2f}")
    base = statistics.median(seconds[("vanilla", t)] for t in tasks) if "vanilla" in neurons else None
    print(f"{'neuron':16s} {'s/replica':>9s} {'÷ vanilla':>9s} {'of sgemm':>8s}  (medians over tasks)")
    for n in neurons:
        mine = statistics.median(seconds[(n, t)] for t in tasks)
        ratio = f"{mine / base:9.2f}" if base else f"{'-':>9s}"
        print(f"{n:16s} {mine:9.2f} {ratio} {statistics.median(share[(n, t)] for t in tasks):8.1%}")
    sweep = sum(seconds.values())
    trials, tuned, untuned = replicas_per_pair(p)
    per_pair = trials + tuned + untuned
    projected = per_pair * sweep / args.workers / 60
    print(f"sweep S = {sweep:.0f} thread-s at {p['steps']} steps ({wall:.0f} s wall at {steps} steps on "
          f"{args.workers} processes)")  # fmt: skip
    print(f"per (neuron, task): {trials} trials + {tuned} tuned + {untuned} untuned = {per_pair} replicas; "
          f"{per_pair} × S ÷ {args.workers} workers = {projected:.1f} min, {projected / TARGET_MIN:.2f}× the "
          f"{TARGET_MIN:.0f}-minute target (cold: no untuned seed from other notebooks)")  # fmt: skip
    print(f"projected: {projected:.1f} min")


if __name__ == "__main__":
    main()
