"""The benchmark scripts run end to end on a tiny workload and print their contract lines (not timed)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rnlib.analysis.tuning import CORE
from rnlib.training import fused

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str) -> list[str]:
    """The lines a benchmark script prints (it must exit 0)."""
    return subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=ROOT, check=True, capture_output=True, text=True, timeout=300,
    ).stdout.strip().splitlines()  # fmt: skip


@pytest.mark.slow
def test_train_throughput_prints_every_neuron_the_study_line_and_speedup_last():
    out = run_benchmark("train_throughput.py", "--steps", "5", "--repeats", "1", "--threads", "1")
    for neuron in ("vanilla", "singlu", "v10_free_phase"):
        assert any(line.startswith(neuron) for line in out), (neuron, out)
    assert re.fullmatch(r"whole workload as one Study\.run .*x the naive loop", out[-2]), out[-2]
    assert re.fullmatch(r"speedup: \d+\.\d\d", out[-1]), out[-1]


@pytest.mark.slow
@pytest.mark.skipif(fused.load()[0] is None, reason=f"fused passes unavailable: {fused.load()[1]}")
def test_fused_step_prints_each_neuron_with_weights_close_and_the_smaller_ratio_last():
    neurons = (fused.fused_neurons()[0], fused.fused_neurons()[-1])  # the first and last the library covers
    out = run_benchmark(
        "fused_step.py", "--neurons", *neurons, "--rounds", "1", "--steps", "2", "--threads", "1"
    )
    for neuron in neurons:
        line = next(line for line in out if line.startswith(f"{neuron} "))
        apart = float(line.split()[1])  # after 20 steps of each step kind from the same weights
        assert apart < 1e-4, line
    assert re.fullmatch(r"fused: \d+\.\d\d", out[-1]), out[-1]


@pytest.mark.slow
def test_tuned_cost_projects_the_profiles_replica_counts():
    out = run_benchmark("tuned_cost.py", "--steps", "3", "--tasks", "ood", "--workers", "1")
    profile = yaml.safe_load((ROOT / "parameters" / "default.run.yaml").read_text())
    seeds = len(profile["overrides"]["tuned"]["seeds"])  # the profile's, not the notebook's default
    neurons = [line.split()[0] for line in out if line.split()[0] in CORE]
    assert neurons == list(CORE), out
    counts = next(line for line in out if line.startswith("per (neuron, task):"))
    trials, tuned, untuned, total = map(int, re.findall(r"(\d+) (?:trials|tuned|untuned|replicas)", counts))
    assert (tuned, untuned, trials + tuned + untuned) == (seeds, seeds, total), counts
    sweep = float(re.search(r"sweep S = (\d+)", next(x for x in out if x.startswith("sweep"))).group(1))
    projected = float(re.fullmatch(r"projected: (\d+\.\d) min", out[-1]).group(1))
    assert projected == pytest.approx(total * sweep / 60, abs=0.1 + total / 60), (counts, out[-1])
