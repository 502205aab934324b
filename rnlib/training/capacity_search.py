"""Storage capacity measured directly: the most random points a model fits exactly, per parameter.

A ratio of two MSEs on one 200-point task is not a measure of information. Here each neuron, at each
parameter budget and seed, gets random inputs x ~ N(0, I8) with random targets: fair-coin labels
(``binary``: fitted = 100% train accuracy, each point is 1 bit) or y ~ N(0, 1) (``real``: fitted = train
MSE ≤ tolerance × Var(y)). A search over the number of points N finds the largest N that training fits;
points ÷ parameters is bits per parameter for binary labels (Cover 1965: 2 for one linear threshold unit).

The search runs per seed (each its own bracket) but in lockstep: every round, the seeds that want the same
N train together as replicas of one ``train_models`` call, so seeds that agree (the first probe always; most
later ones) cost one batched training. Every training is cached under everything that decides it.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from rnlib.core.catalog import CAPACITY_KINDS as KINDS
from rnlib.core.models import DEFAULT_DEPTH, param_count
from rnlib.core.tasks import Task, generator_seed
from rnlib.paths import EXECUTED_DIR
from rnlib.records import COLUMNS, write_records
from rnlib.training import runtime
from rnlib.training.cache import ResultCache, cache_key
from rnlib.training.trainer import RunResult, TrainConfig, train_models

IN_DIM = 8  # x ~ N(0, I8), as the `memorize` task of protocol §4
OUT_DIM = {"binary": 2, "real": 1}  # protocol §4: classification uses 2 logits and cross-entropy
BLOCK = 1024  # points are drawn in blocks of this size, so the first N points never depend on N
# first step from the guess (~19%); squared after each further step the same way (41%, 2×, 4×, ...)
START_FACTOR = 2**0.25
# why these first guesses (points per parameter): the middle, in log, of what the six default neurons fitted
# at 500 parameters in a pilot (binary 0.7-2.0, real 0.25-0.6); later budgets follow each neuron's own trend
PRIOR_RATIO = {"binary": 1.2, "real": 0.4}
TARGET_VARIANCE = 1.0  # real targets are y ~ N(0, 1)
RECORD_COLUMNS = (*COLUMNS, "bits_per_param")


@dataclass(frozen=True)
class CapacitySettings:
    """How one probe trains and how "fitted" is decided; the notebook reports the answer's sensitivity."""

    steps: int = 200  # full-batch Adam steps per probe: fitting random labels, not a converged optimum
    lr: float = 3e-2  # 30× protocol §5's: a pure fitting problem, nothing to generalise; cosine-decayed to 0
    tolerance: float = 1e-3  # real: fitted when train MSE ≤ tolerance·Var(y), Var(y) = 1; R² ≈ 0.999
    max_points: int = 65536  # search ceiling; a seed that fits this many is reported as censored
    resolution: float = 1.0905  # ≈ 2^(1/8): stop when (smallest N not fitted) ÷ (largest N fitted) ≤ this
    depth: int = DEFAULT_DEPTH
    omega: float = 1.0
    init: str = "default"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or not 0 < self.tolerance < 1 or self.max_points < 1:
            raise ValueError(f"invalid CapacitySettings: {self}")
        if self.resolution < 1:
            raise ValueError(f"resolution is a ratio ≥ 1 (1 = exact), got {self.resolution}")

    def train_config(self) -> TrainConfig:
        """The trainer's config for one probe (no diagnostics)."""
        return TrainConfig(steps=self.steps, lr=self.lr, record_every=0, device=self.device)


# ---------------------------------------------------------------- data
def capacity_data(kind: str, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` random points of ``seed``: x float32 (n, 8); y int64 (n,) coins or float32 (n, 1)."""
    if kind not in KINDS:
        raise KeyError(f"unknown capacity kind {kind!r}; valid: {', '.join(KINDS)}")
    xs, ys = [], []
    for block in range(math.ceil(n / BLOCK)):  # why blocks: N and N' > N share their first N points
        gen = torch.Generator().manual_seed(generator_seed(f"capacity_{kind}/{block}", seed))
        # float64 draws give the same bits on every CPU (see rnlib.core.tasks)
        xs.append(torch.randn(BLOCK, IN_DIM, generator=gen, dtype=torch.float64))
        if kind == "binary":
            ys.append(torch.randint(0, 2, (BLOCK,), generator=gen))
        else:
            ys.append(torch.randn(BLOCK, 1, generator=gen, dtype=torch.float64).float())
    return torch.cat(xs)[:n].float(), torch.cat(ys)[:n]


def capacity_task(kind: str, n: int, seed: int, budget: int = 0) -> Task:
    """``capacity_data`` as a ``Task`` whose test set is its training set (capacity is about fitting)."""
    x, y = capacity_data(kind, n, seed)
    task_kind, metric = ("classification", "accuracy") if kind == "binary" else ("regression", "mse")
    return Task(f"capacity_{kind}", task_kind, metric, IN_DIM, OUT_DIM[kind], budget, n, x, y, x, y)


DATA_VERSION = hashlib.sha256(inspect.getsource(capacity_data).encode()).hexdigest()[:16]  # in cache keys


def capacity_width(neuron: str, kind: str, budget: int, depth: int = DEFAULT_DEPTH) -> int:
    """The width whose parameter count is nearest to ``budget`` (ties to the smaller width).

    Unlike ``width_for_budget`` there is no 5% limit: bits per parameter divides by the actual count, and at
    500 parameters some neurons' width steps exceed 10% of the budget.
    """
    width = 1
    while abs(param_count(neuron, IN_DIM, OUT_DIM[kind], width + 1, depth) - budget) < abs(
        param_count(neuron, IN_DIM, OUT_DIM[kind], width, depth) - budget
    ):
        width += 1
    return width


# ---------------------------------------------------------------- search over N
@dataclass
class Bracket:
    """One seed's search for the largest fitted N: gallop from a guess, then bisect geometrically."""

    start: int
    max_points: int
    resolution: float
    lo: int = 0  # largest N seen fitted (0: none yet)
    hi: int | None = None  # smallest N seen not fitted (None: none yet)
    factor: float = START_FACTOR
    probes: list[tuple[int, bool]] = field(default_factory=list)

    def next_probe(self) -> int | None:
        """The next N to try, or None when the answer is known to the resolution."""
        if not self.probes:
            return min(max(self.start, 1), self.max_points)
        if self.hi is None:  # only fits so far: step up, faster each time
            if self.lo >= self.max_points:
                return None
            return min(self.max_points, math.ceil(self.lo * self.factor))
        if self.lo == 0:  # only failures so far: step down, faster each time
            return None if self.hi <= 1 else max(1, min(self.hi - 1, math.floor(self.hi / self.factor)))
        if self.hi - self.lo <= 1 or self.hi / self.lo <= self.resolution:
            return None
        return min(self.hi - 1, max(self.lo + 1, round(math.sqrt(self.lo * self.hi))))

    def update(self, n: int, fitted: bool) -> None:
        """Record that ``n`` points were (not) fitted."""
        if self.probes and (self.hi is None or self.lo == 0):
            self.factor **= 2  # a second step the same way: the next one is twice as long in log N
        self.probes.append((n, fitted))
        if fitted:
            self.lo = max(self.lo, n)
        else:
            self.hi = n if self.hi is None else min(self.hi, n)

    @property
    def censored(self) -> bool:
        """Whether the ceiling itself was fitted, so the capacity is at least ``max_points``."""
        return self.lo >= self.max_points


Fit = Callable[[int, list[int]], dict[int, bool]]  # (N, seeds wanting N) -> fitted per seed


def search_points(
    fit: Fit, seeds: Sequence[int], start: int, max_points: int, resolution: float
) -> dict[int, Bracket]:
    """Per seed, the largest N that ``fit`` fits; seeds that want the same N are asked in one call."""
    brackets = {s: Bracket(start, max_points, resolution) for s in seeds}
    while True:
        wanted = {s: n for s, b in brackets.items() if (n := b.next_probe()) is not None}
        if not wanted:
            return brackets
        for n in sorted(set(wanted.values())):
            group = [s for s, m in wanted.items() if m == n]
            for s, fitted in fit(n, group).items():
                brackets[s].update(n, fitted)


# ---------------------------------------------------------------- measurement
class CapacityRun:
    """One measurement: its settings, cache, every probe trained and the records (one per seed)."""

    def __init__(self, settings: CapacitySettings, cache: ResultCache | None = None) -> None:
        self.settings, self.cache = settings, cache or ResultCache()
        self.probes: list[dict] = []  # every training the searches asked for
        self.rows: list[dict] = []
        self.trained = self.reused = self.calls = 0
        self.seconds = 0.0

    def key(self, neuron: str, kind: str, budget: int, width: int, seed: int, n: int) -> str:
        """Cache key: neuron, width, seed, N, kind, the data generator, the training settings, code."""
        s = self.settings
        sizing = {"width": width, "depth": s.depth, "budget": budget}
        options = {"omega": s.omega, "init": s.init, "data": DATA_VERSION}
        return cache_key(neuron, f"capacity_{kind}/n={n}", seed, sizing, options, s.train_config())

    def train_group(self, neuron: str, kind: str, budget: int, width: int, n: int, seeds: list[int]) -> dict:
        """Each seed's probe at N from the cache, training the missing ones together."""
        s = self.settings
        keys = {seed: self.key(neuron, kind, budget, width, seed, n) for seed in seeds}

        def train(missing: list[int]) -> list[RunResult]:
            self.calls += 1
            return train_models(
                neuron, lambda seed: capacity_task(kind, n, seed, budget), missing, width=width,
                depth=s.depth, omega=s.omega, init=s.init, config=s.train_config(),
            )[1]  # fmt: skip

        found, missing = self.cache.fill(keys, f"capacity|{neuron}|{kind}|{width}|{n}|{s}", train)
        self.trained += len(missing)
        self.reused += len(seeds) - len(missing)
        return {seed: (r, seed in missing) for seed, r in found.items()}

    def is_fitted(self, kind: str, r: RunResult) -> tuple[bool, float]:
        """Whether a probe fitted its points, and the number the rule compares (accuracy, or MSE ÷ Var y)."""
        if r.diverged or not math.isfinite(r.train_value):
            return False, math.nan
        if kind == "binary":
            return r.train_value == 1.0, r.train_value
        # why the distribution's variance, not the sample's: that is 0 for N = 1 and noisy for small N
        relative = r.train_value / TARGET_VARIANCE
        return relative <= self.settings.tolerance, relative

    def measure(self, neuron: str, kind: str, budget: int, seeds: Sequence[int], ratio: float) -> float:
        """Search every seed's capacity at one budget; returns the median points per parameter found."""
        width = capacity_width(neuron, kind, budget, self.settings.depth)
        params = param_count(neuron, IN_DIM, OUT_DIM[kind], width, self.settings.depth)
        at: dict[tuple[int, int], RunResult] = {}  # (seed, N) -> its probe
        spent = dict.fromkeys(seeds, 0.0)  # training seconds per seed

        def fit(n: int, group: list[int]) -> dict[int, bool]:
            out = {}
            for seed, (r, trained) in self.train_group(neuron, kind, budget, width, n, group).items():
                fitted, score = self.is_fitted(kind, r)
                at[(seed, n)], out[seed] = r, fitted
                spent[seed] += r.seconds
                self.probes.append(
                    {"neuron": neuron, "kind": kind, "budget": budget, "params": params, "seed": seed,
                     "points": n, "fitted": fitted, "score": score, "trained": trained, "seconds": r.seconds}
                )  # fmt: skip
            return out

        start = max(1, round(ratio * params))
        brackets = search_points(fit, seeds, start, self.settings.max_points, self.settings.resolution)
        for seed, b in brackets.items():
            r = at.get((seed, b.lo))
            self.rows.append(self.record(neuron, kind, budget, width, params, seed, b, r, spent[seed]))
        found = sorted(b.lo / params for b in brackets.values() if b.lo > 0)
        return found[len(found) // 2] if found else ratio

    def record(
        self, neuron: str, kind: str, budget: int, width: int, params: int, seed: int, b: Bracket,
        r: RunResult | None, seconds: float,
    ) -> dict:  # fmt: skip
        """One protocol §7 record: value = points fitted (the search's lower end), plus bits per parameter.

        ``train_value`` is the training accuracy (binary) or MSE (real) at that N; ``seconds`` the seed's
        training time over all its probes; ``diverged`` stays False, a diverged probe counts as not fitted.
        """
        s = self.settings
        return {
            "version": "capacity", "neuron": neuron, "task": f"capacity_{kind}", "seed": seed,
            "budget": budget, "params": params, "width": width, "metric": "points", "value": b.lo,
            "train_value": r.train_value if r else math.nan, "steps": s.steps, "diverged": False,
            "seconds": seconds, "id_value": None, "trivial_value": None, "model": neuron, "kind": "capacity",
            "omega": s.omega, "init": s.init, "depth": s.depth, "lr": s.lr, "total_steps": s.steps,
            "diverged_step": None,
            "bits_per_param": b.lo / params, "upper": b.hi, "probes": len(b.probes), "censored": b.censored,
        }  # fmt: skip

    @property
    def records(self) -> pd.DataFrame:
        """One row per (neuron, kind, budget, seed): RECORD_COLUMNS, the search's upper end and probes."""
        return pd.DataFrame(self.rows, columns=[*RECORD_COLUMNS, "upper", "probes", "censored"])

    def summary_line(self) -> str:
        """How much was trained, reused from the cache, and the wall time."""
        return (
            f"capacity: {len(self.rows)} records from {len(self.probes)} probes; {self.trained} replicas "
            f"trained in {self.calls} batches, {self.reused} from the cache; {self.seconds:.0f} s wall, "
            "one thread per training"
        )


def next_guess(history: Sequence[tuple[int, float]], budget: int, prior: float) -> float:
    """First guess of points per parameter at ``budget``: the trend through the last two budgets (log-log).

    A good guess is the search's main saving: right to within a step, a seed needs about three probes.
    """
    if not history:
        return prior
    (b1, r1), (b2, r2) = history[-2] if len(history) > 1 else history[-1], history[-1]
    if b1 == b2 or min(r1, r2) <= 0:
        return r2
    slope = math.log(r2 / r1) / math.log(b2 / b1)
    return r2 * min(2.0, max(0.5, (budget / b2) ** slope))  # why clamped: a noisy trend must not run away


def write_capacity_records(records: pd.DataFrame, path: str | Path) -> Path:
    """Write RECORD_COLUMNS (protocol §7 plus ``bits_per_param``) as CSV atomically."""
    return write_records(records, path, extra=RECORD_COLUMNS[len(COLUMNS) :])


def measure_capacity(
    neurons: Sequence[str],
    budgets: Sequence[int],
    seeds: Sequence[int] = (0, 1, 2),
    *,
    kinds: Sequence[str] = KINDS,
    settings: CapacitySettings | None = None,
    records: str | Path | None = "",
    cache: ResultCache | None = None,
    **overrides: object,
) -> CapacityRun:
    """Capacity of every neuron × kind × budget × seed, searched and cached; writes the records CSV.

    ``overrides`` replace fields of ``settings`` (e.g. ``steps=400``); ``records`` is the CSV path ("" =
    executed/interactive/capacity.records.csv, None = write nothing).
    """
    start = time.perf_counter()
    settings = replace(settings or CapacitySettings(), **overrides)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise KeyError(f"unknown capacity kind(s) {', '.join(unknown)}; valid: {', '.join(KINDS)}")
    runtime.configure()
    run = CapacityRun(settings, cache)
    for neuron in neurons:
        for kind in kinds:
            history: list[tuple[int, float]] = []
            for budget in sorted(budgets):  # why ascending: each budget's first guess extrapolates the last
                guess = next_guess(history, budget, PRIOR_RATIO[kind])
                found = run.measure(neuron, kind, int(budget), [int(s) for s in seeds], guess)
                history.append((budget, found))
    run.seconds = time.perf_counter() - start
    if records is not None:
        write_capacity_records(run.records, records or EXECUTED_DIR / "interactive" / "capacity.records.csv")
    return run


# ---------------------------------------------------------------- reading the records
