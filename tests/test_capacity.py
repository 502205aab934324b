"""Capacity measurement: the search on exact oracles, the random data, a tiny real run, the notebook."""

import json
import math

import pandas as pd
import papermill
import pytest
import torch

from rnlib.analysis.capacity import capacity_figure, capacity_table, capacity_verdict
from rnlib.core.models import build_model, count_params, param_count
from rnlib.paths import NOTEBOOKS_DIR
from rnlib.training.cache import ResultCache
from rnlib.training.capacity_search import (
    RECORD_COLUMNS,
    capacity_data,
    capacity_width,
    measure_capacity,
    next_guess,
    search_points,
)

MAX_POINTS = 65536


def threshold_oracle(thresholds: dict[int, int], calls: list[tuple[int, list[int]]]):
    """fit(N, seeds): seed s fits N points iff N ≤ thresholds[s]; every call is logged."""

    def fit(n: int, seeds: list[int]) -> dict[int, bool]:
        calls.append((n, list(seeds)))
        return {s: n <= thresholds[s] for s in seeds}

    return fit


@pytest.mark.parametrize("start", [1, 37, 1000, 5000, MAX_POINTS])
def test_search_finds_exact_largest_fitted_n(start):
    """With resolution 1 the search returns exactly the threshold of a monotone oracle, from any start."""
    thresholds = {0: 137, 1: 1000, 2: 1, 3: 0, 4: MAX_POINTS, 5: 4097}
    calls: list = []
    brackets = search_points(threshold_oracle(thresholds, calls), list(thresholds), start, MAX_POINTS, 1.0)
    for seed, t in thresholds.items():
        b = brackets[seed]
        assert b.lo == t, f"seed {seed}: found {b.lo}, want {t}"
        assert b.censored == (t == MAX_POINTS)
        if 0 < t < MAX_POINTS:
            assert b.hi == t + 1  # the answer is pinned: t fitted, t + 1 not
        assert len(b.probes) <= 4 * math.log2(MAX_POINTS) + 2  # logarithmic, not a scan
    for n, seeds in calls:
        assert len(set(seeds)) == len(seeds) and 1 <= n <= MAX_POINTS


def test_search_batches_seeds_that_agree_and_stops_at_resolution():
    """Seeds with the same threshold ask every N together; the bracket ends within the resolution."""
    resolution = 2**0.125
    thresholds = {0: 700, 1: 700, 2: 2100}
    calls: list = []
    brackets = search_points(threshold_oracle(thresholds, calls), [0, 1, 2], 500, MAX_POINTS, resolution)
    assert calls[0] == (500, [0, 1, 2])  # the first probe is shared by every seed
    for n, seeds in calls:
        assert (0 in seeds) == (1 in seeds), f"seeds 0 and 1 agree yet were split at N={n}"
    for seed, t in thresholds.items():
        b = brackets[seed]
        assert b.lo <= t < b.hi and b.hi / b.lo <= resolution
    assert len(calls) <= 12


def test_next_guess_follows_the_trend():
    """No history: the prior; one budget: its ratio; two: the log-log trend, clamped to [½, 2]×."""
    assert next_guess([], 500, 1.0) == 1.0
    assert next_guess([(500, 0.8)], 1000, 1.0) == 0.8
    assert next_guess([(500, 0.8), (1000, 0.4)], 2000, 1.0) == pytest.approx(0.2)
    assert next_guess([(500, 0.1), (1000, 0.8)], 2000, 1.0) == pytest.approx(1.6)


def test_random_data_is_deterministic_nested_and_fair():
    """Same seed -> same bits; the first N points never depend on N; labels are fair coins; y ~ N(0, 1)."""
    x, y = capacity_data("binary", 5000, seed=3)
    x2, y2 = capacity_data("binary", 5000, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.dtype == torch.float32 and x.shape == (5000, 8) and y.dtype == torch.int64 and y.shape == (5000,)
    xs, ys = capacity_data("binary", 1500, seed=3)
    assert torch.equal(xs, x[:1500]) and torch.equal(ys, y[:1500])  # nested: bigger N adds points
    assert not torch.equal(capacity_data("binary", 5000, seed=4)[0], x)
    assert set(y.unique().tolist()) == {0, 1}
    assert abs(y.float().mean().item() - 0.5) < 4 * 0.5 / math.sqrt(len(y))  # within 4σ of fair
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02
    _, yr = capacity_data("real", 5000, seed=3)
    assert yr.shape == (5000, 1) and yr.dtype == torch.float32
    assert abs(yr.mean().item()) < 0.06 and abs(yr.std().item() - 1) < 0.04
    with pytest.raises(KeyError, match="binary, real"):
        capacity_data("ternary", 10, 0)


@pytest.mark.parametrize("neuron", ["vanilla", "v10_free_phase"])
@pytest.mark.parametrize("budget", [200, 500, 4000])
def test_capacity_width_is_the_nearest_count(neuron, budget):
    """The width is the one whose count is nearest to the budget, and the built model has that count."""
    width = capacity_width(neuron, "binary", budget)
    count = param_count(neuron, 8, 2, width)
    for w in (width - 1, width + 1):
        if w >= 1:
            assert abs(param_count(neuron, 8, 2, w) - budget) >= abs(count - budget)
    assert count_params(build_model(neuron, 8, 2, width=width)) == count


def test_tiny_end_to_end_run_is_sensible_and_cached(tmp_path):
    """One neuron at ~200 parameters: points ≥ 1, bits = points ÷ params, records CSV, a free rerun."""
    cache, path = ResultCache(tmp_path / "cache"), tmp_path / "capacity.records.csv"
    kwargs = dict(seeds=[0, 1], kinds=["binary", "real"], cache=cache, steps=60, max_points=512)
    run = measure_capacity(["vanilla"], [200], records=path, **kwargs)
    rec = run.records
    assert len(rec) == 4 and set(rec["task"]) == {"capacity_binary", "capacity_real"}
    assert (rec["value"] >= 1).all() and (rec["value"] < rec["upper"]).all()
    assert (rec["bits_per_param"] == rec["value"] / rec["params"]).all()
    assert (rec["params"].between(150, 250)).all() and (rec["metric"] == "points").all()
    binary = rec[rec["task"] == "capacity_binary"]
    assert (binary["train_value"] == 1.0).all()  # the reported N was fitted to 100%
    written = pd.read_csv(path)
    assert list(written.columns) == list(RECORD_COLUMNS) and len(written) == 4
    assert run.trained > 0
    again = measure_capacity(["vanilla"], [200], records=None, **kwargs)
    assert again.trained == 0 and again.records["value"].tolist() == rec["value"].tolist()
    assert "vanilla" in capacity_verdict(rec) and capacity_table(rec).shape == (1, 1)
    capacity_figure(rec)


@pytest.mark.slow
def test_notebook_executes_and_writes_records(tmp_path, monkeypatch):
    """The notebook runs under papermill with tiny parameters and writes its records CSV."""
    monkeypatch.setenv("RNLIB_CACHE", str(tmp_path / "cache"))
    source = NOTEBOOKS_DIR / "capacity.ipynb"
    cells = json.loads(source.read_text())["cells"]
    assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code")
    records = tmp_path / "capacity.records.csv"
    papermill.execute_notebook(
        str(source),
        str(tmp_path / "capacity.ipynb"),
        parameters=dict(
            neurons=["vanilla", "siren"],
            budgets=[200],
            seeds=[0, 1],
            steps=40,
            max_points=256,
            records=str(records),
        ),
        kernel_name="python3",
        progress_bar=False,
    )
    executed = json.loads((tmp_path / "capacity.ipynb").read_text())["cells"]
    assert any("image/png" in o.get("data", {}) for c in executed for o in c.get("outputs", []))  # the figure
    rec = pd.read_csv(records)
    assert len(rec) == 2 * 2 * 2 and set(rec["neuron"]) == {"vanilla", "siren"}
    assert (rec["version"] == "capacity").all() and (rec["kind"] == "capacity").all()
