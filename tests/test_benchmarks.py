"""The benchmark scripts run end to end on a tiny workload and print their contract lines (not timed)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_throughput_prints_every_neuron_the_study_line_and_speedup_last():
    args = ["--steps", "5", "--repeats", "1", "--threads", "1"]
    out = subprocess.run(
        [sys.executable, "benchmarks/train_throughput.py", *args],
        cwd=ROOT, check=True, capture_output=True, text=True, timeout=300,
    ).stdout.strip().splitlines()  # fmt: skip
    for neuron in ("vanilla", "singlu", "v10_free_phase"):
        assert any(line.startswith(neuron) for line in out), (neuron, out)
    assert re.fullmatch(r"whole workload as one Study\.run .*x the naive loop", out[-2]), out[-2]
    assert re.fullmatch(r"speedup: \d+\.\d\d", out[-1]), out[-1]
