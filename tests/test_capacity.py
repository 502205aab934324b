"""Capacity measurement: the search on exact oracles, the random data, a tiny real run, the notebook."""

import functools
import json
import math

import pandas as pd
import papermill
import pytest
import torch

from rnlib.analysis.capacity import capacity_figure, capacity_table, capacity_verdict, trend_line
from rnlib.core.models import build_model, count_params, param_count
from rnlib.paths import NOTEBOOKS_DIR
from rnlib.training import capacity_search
from rnlib.training.cache import ResultCache
from rnlib.training.capacity_search import (
    RECORD_COLUMNS,
    CapacitySettings,
    FitOrPlateau,
    capacity_data,
    capacity_width,
    longer_training,
    measure_capacity,
    neighbours,
    next_guess,
    search_points,
)
from rnlib.training.trainer import RunResult, TrainConfig, train_models

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


def planted(monkeypatch, capacity):
    """Replace training by a stand-in that fits N points exactly when N ≤ capacity(lr, ceiling, seed)."""

    def fake(neuron, task, seeds, *, width, config, stop, **_):
        n = len(task(seeds[0]).x_train)
        fitted = [n <= capacity(config.lr, config.steps, s) for s in seeds]
        return None, [
            RunResult(neuron, "capacity_binary", s, width, 0, "accuracy", 1.0 if f else 0.9,
                      1.0 if f else 0.9, None, config.steps, False, None, 0.0,
                      stopped="fitted" if f else "plateau")
            for s, f in zip(seeds, fitted, strict=True)
        ]  # fmt: skip

    monkeypatch.setattr(capacity_search, "train_models", fake)


@pytest.mark.parametrize("k", [40, 333, 2500])
def test_a_planted_capacity_is_found_with_its_lr_and_passes_the_checks(monkeypatch, tmp_path, k):
    """A stand-in fitting N ≤ K at lr 0.01 (less at the other lrs) is measured within the resolution at that
    lr, chosen on the selection seed; more training or another lr fits no more, so nothing is flagged."""
    planted(monkeypatch, lambda lr, steps, seed: k + seed if lr == 0.01 else k // 2)
    run = measure_capacity(["vanilla"], [500], [0, 1, 2], kinds=["binary"], records=None,
                           cache=ResultCache(tmp_path), workers=1)  # fmt: skip
    rec, check = run.records, run.checks.iloc[0]
    selected = int(check["points_by_lr"].split()[1].removeprefix("0.01:"))  # select_seed 100: K + 100
    assert check["lr"] == 0.01 and selected <= k + 100 < selected * CapacitySettings().resolution + 1
    for r in rec.itertuples():
        want = k + r.seed
        assert r.value <= want < r.upper and r.upper / max(r.value, 1) <= CapacitySettings().resolution + 1e-9
        assert r.lr == 0.01 and not r.lower_bound and not r.censored
    assert not check["lower_bound"] and check["check_points"] >= 1.1 * rec["value"].iloc[0]


def test_an_undertrained_or_mistuned_capacity_is_reported_as_a_lower_bound(monkeypatch, tmp_path):
    """Twice the ceiling fits 30% more, or the lr beyond the grid's edge does: a lower bound."""
    planted(monkeypatch, lambda lr, steps, seed: 300 if steps == 3000 else 390)
    run = measure_capacity(["vanilla"], [500], [0], kinds=["binary"], lrs=(0.01,), records=None,
                           cache=ResultCache(tmp_path / "a"), workers=1)  # fmt: skip
    check = run.checks.iloc[0]
    assert check["fits_longer"] and not check["fits_lower_lr"] and check["lower_bound"]
    assert "2× ceiling fits" in check["why"] and run.records["lower_bound"].all()
    planted(monkeypatch, lambda lr, steps, seed: 500 if lr > 0.031 else 300)  # best lr beyond the grid
    run = measure_capacity(["vanilla"], [500], [0], kinds=["binary"], records=None,
                           cache=ResultCache(tmp_path / "b"), workers=1)  # fmt: skip
    check = run.checks.iloc[0]
    assert (
        check["lr"] == 0.003 and not check["lower_bound"]
    )  # ties: the smaller lr; its neighbours fit no more
    assert neighbours((0.003, 0.01, 0.03), 0.03) == (0.01, pytest.approx(0.09))
    assert neighbours((0.01,), 0.01) == (pytest.approx(0.01 / 10**0.5), pytest.approx(0.01 * 10**0.5))


def test_a_capacity_above_the_ceiling_is_censored(monkeypatch, tmp_path):
    """K above max_points: the search stops at the ceiling, reports it as censored and as a lower bound."""
    planted(monkeypatch, lambda lr, steps, seed: 10**6)
    run = measure_capacity(["vanilla"], [500], [0, 1], kinds=["binary"], max_points=2048, records=None,
                           cache=ResultCache(tmp_path), workers=1)  # fmt: skip
    assert (run.records["value"] == 2048).all() and run.records["censored"].all()
    assert "censored" in run.checks["why"].iloc[0]


def test_the_plateau_rule_stops_flat_curves_and_spares_improving_ones():
    """Synthetic loss curves: flat for the last `patience` steps -> plateau; 2% better -> go on; 100%
    accuracy -> fitted; a NaN -> diverged; too few steps -> never a plateau."""
    rule = FitOrPlateau("binary", 1.0, every=25, patience=400, min_gain=0.01)
    steps = torch.arange(1000, dtype=torch.float32)
    flat = torch.where(steps < 500, 1.0 - steps / 1000, torch.tensor(0.5))  # stops improving at step 500
    improving = 0.98 ** (steps / 400)  # 2% better every 400 steps, slowly but surely
    sudden = torch.where(steps < 990, torch.tensor(0.6), torch.tensor(0.3))  # a late drop counts
    nan = improving.clone()
    nan[-1] = float("nan")
    curves = torch.stack([flat, improving, sudden, nan, improving], dim=1)
    metric = torch.tensor([0.9, 0.9, 0.9, 0.9, 1.0])
    assert rule.reasons(1000, curves, metric) == ["plateau", "", "", "diverged", "fitted"]
    assert rule.reasons(700, curves[:700], metric)[:2] == ["", ""]  # < 2 × patience steps: too early to tell
    real = FitOrPlateau("real", 1e-3, every=25, patience=400, min_gain=0.01)
    assert real.reasons(1000, curves[:, :2], torch.tensor([1e-3, 2e-3])) == ["fitted", ""]


def test_a_stopped_replica_is_frozen_at_its_stop_whatever_it_trains_with():
    """Under a Stop, a replica's result is the one at its own stop step: the same alone as beside another
    seed that trains on; without a stop nothing changes."""

    class StopSeedZeroAt(FitOrPlateau):
        def reasons(self, step, losses, train_metric):
            return [
                "plateau" if (m == 0 and step >= 50) or step >= 100 else "" for m in range(len(train_metric))
            ]

    stop = StopSeedZeroAt("binary", 1.0, 25, 400, 0.0)
    task = functools.partial(capacity_search.capacity_task, "binary", 64, budget=200)
    config = TrainConfig(steps=300, lr=1e-2, record_every=0)
    _, alone = train_models("vanilla", task, [0], width=8, config=config, stop=stop)
    _, both = train_models("vanilla", task, [0, 1], width=8, config=config, stop=stop)
    assert alone[0].steps == both[0].steps == 50 and both[1].steps == 100
    assert alone[0].train_value == both[0].train_value and alone[0].stopped == "plateau"
    assert max(s for s, _ in both[0].curve) < 50
    _, plain = train_models("vanilla", task, [0], width=8, config=config)
    assert plain[0].steps == 300 and plain[0].stopped is None


def test_converged_probes_fit_far_more_than_the_old_200_step_probes(tmp_path):
    """At ~100 parameters the converged measurement of vanilla is ≥ 1.5× what 200 steps at lr 3e-2 gave:
    this fails if the probes go back to being under-trained."""
    cache = ResultCache(tmp_path)
    kwargs = dict(kinds=["binary"], cache=cache, records=None, checks=False, workers=1)
    converged = measure_capacity(["vanilla"], [100], [0, 1, 2], **kwargs).records["value"]
    old = measure_capacity(["vanilla"], [100], [0, 1, 2], steps=200, lrs=(0.03,), **kwargs).records["value"]
    assert converged.mean() >= 1.5 * old.mean(), (converged.tolist(), old.tolist())


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
    kwargs = dict(seeds=[0, 1], kinds=["binary", "real"], cache=cache, steps=60, patience=25, max_points=512)
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
    assert len(run.checks) == 2 and set(run.checks["lr"]) <= set(CapacitySettings().lrs)
    capacity_figure(rec)
    longer = longer_training(run, "binary", 200, (2,))
    assert sorted(longer["ceiling"].unique()) == [60, 120] and len(longer) == 4


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
            patience=25,
            max_points=256,
            longer_factors=[2],
            larger={"vanilla": [400]},
            records=str(records),
        ),
        kernel_name="python3",
        progress_bar=False,
    )
    executed = json.loads((tmp_path / "capacity.ipynb").read_text())["cells"]
    assert any("image/png" in o.get("data", {}) for c in executed for o in c.get("outputs", []))  # the figure
    rec = pd.read_csv(records)
    assert len(rec) == 2 * 2 + 2 and set(rec["neuron"]) == {"vanilla", "siren"}  # binary labels by default
    assert sorted(rec.loc[rec["neuron"] == "vanilla", "budget"].unique()) == [200, 400]
    assert (rec["version"] == "capacity").all() and (rec["kind"] == "capacity").all()


def test_a_replica_that_diverges_after_its_stop_keeps_its_stopped_result():
    """A replica frozen at its stop is not marked diverged by what its batch did to it afterwards: here every
    weight turns NaN at step 50, after seed 0 stopped (step 25) and before seed 1 did (step 100)."""

    class StopSeedZeroFirst(FitOrPlateau):
        def reasons(self, step, losses, train_metric):
            return ["plateau" if m == 0 or step >= 100 else "" for m in range(len(train_metric))]

    def poison(state):
        if state.step == 50:
            for p in state.model.parameters():
                p.data.fill_(float("nan"))

    stop = StopSeedZeroFirst("binary", 1.0, 25, 400, 0.0)
    task = functools.partial(capacity_search.capacity_task, "binary", 64, budget=200)
    config = TrainConfig(steps=300, lr=1e-2, record_every=50)
    _, (first, second) = train_models("vanilla", task, [0, 1], width=8, config=config, stop=stop,
                                      callbacks=[poison])  # fmt: skip
    _, (alone,) = train_models("vanilla", task, [0], width=8, config=config, stop=stop)
    assert second.diverged and second.diverged_step is not None and second.diverged_step >= 50
    assert first.steps == alone.steps == 25 and not first.diverged and first.diverged_step is None
    assert first.train_value == alone.train_value and first.value == alone.value


def test_larger_budgets_for_some_neurons_only(monkeypatch, tmp_path):
    """``larger`` adds budgets to the neurons it names (a neuron not measured adds nothing; a typo fails)."""
    planted(monkeypatch, lambda lr, steps, seed: 300)
    larger = {"vanilla": [400], "singlu": [800]}
    run = measure_capacity(["vanilla", "siren"], [200], [0], kinds=["binary"], records=None, workers=1,
                           cache=ResultCache(tmp_path), larger=larger)  # fmt: skip
    measured = sorted(zip(run.records["neuron"], run.records["budget"], strict=True))
    assert measured == [("siren", 200), ("vanilla", 200), ("vanilla", 400)]
    with pytest.raises(KeyError, match="unknown neuron 'vanila'"):
        measure_capacity(["vanilla"], [200], [0], records=None, larger={"vanila": [400]})


def test_the_trend_line_names_each_neurons_own_range_and_why_a_curve_falls():
    """Constructed records: vanilla measured 500-4K, falling, a lower bound at 4K; siren 500-2K and flat."""
    rows = []
    for neuron, curve in {
        "vanilla": {500: 2.0, 1000: 1.5, 4000: 1.0},
        "siren": {500: 3.0, 2000: 3.1},
    }.items():
        for budget, bits in curve.items():
            for seed in range(3):
                rows.append({"task": "capacity_binary", "neuron": neuron, "budget": budget, "params": budget,
                             "seed": seed, "bits_per_param": bits * (1 + 0.01 * seed),
                             "lower_bound": neuron == "vanilla" and budget == 4000})  # fmt: skip
    line = trend_line(pd.DataFrame(rows))
    change = "bits per parameter change by"
    assert line.startswith(f"From 500 to 4,000 parameters, {change} vanilla ×0.50; "
                           f"from 500 to 2,000 parameters, {change} siren ×1.03.")  # fmt: skip
    assert "vanilla falls (a lower bound at 4,000: more training fits more there)." in line
    flat = trend_line(pd.DataFrame(rows).query("neuron == 'siren'"))
    assert flat.endswith(
        "No curve falls below ×0.8: roughly flat, as a well-trained network's should be (protocol §8)."
    )


def test_on_a_pool_the_chain_with_the_most_work_left_goes_first(monkeypatch, tmp_path):
    """Probes reach the pool with their chain's priority: the work its budgets still need, so the longest
    chain (SinGLU's, with a larger budget) is not the one left running alone at the end."""
    assert capacity_search.chain_priority([500, 1000, 2000], 500) == capacity_search.CHAIN + 21
    assert capacity_search.chain_priority([2000], 500) == capacity_search.CHAIN + 16
    planted(monkeypatch, lambda lr, steps, seed: 300)
    sent = []

    def remote(address, neuron, task, seeds, priority=0, **options):
        sent.append((neuron, options["width"], priority))
        return capacity_search.train_models(neuron, task, seeds, **options)[1], "tcp://w"

    monkeypatch.setattr(capacity_search.pool, "train_remote", remote)
    measure_capacity(["vanilla", "singlu"], [200], [0], kinds=["binary"], records=None, checks=False,
                     cache=ResultCache(tmp_path), scheduler="tcp://s", larger={"singlu": [400]})  # fmt: skip
    first = {n: max(p for m, _, p in sent if m == n) for n in ("vanilla", "singlu")}
    assert first == {"vanilla": capacity_search.CHAIN + 1, "singlu": capacity_search.CHAIN + 5}
    assert min(p for n, _, p in sent if n == "singlu") == capacity_search.CHAIN + 4  # its 400 alone left
