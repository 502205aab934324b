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

import functools
import hashlib
import inspect
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from rnlib.core.catalog import CAPACITY_KINDS as KINDS
from rnlib.core.models import DEFAULT_DEPTH, param_count
from rnlib.core.neurons import neuron_class
from rnlib.core.tasks import Task, generator_seed
from rnlib.paths import EXECUTED_DIR
from rnlib.records import COLUMNS, write_records
from rnlib.training import pool, runtime
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
CHAIN = 1  # pool priority of a probe: each waits on the one before, so it goes ahead of independent programs;
# a chain with more work left goes ahead of the others (``chain_priority``), so the longest is not left last
RECORD_COLUMNS = (*COLUMNS, "bits_per_param", "upper", "probes", "censored", "lower_bound")


@dataclass(frozen=True)
class CapacitySettings:
    """How one probe trains, how its learning rate is chosen and how "fitted" is decided (protocol §8)."""

    steps: int = 3000  # step ceiling per probe: full-batch Adam, cosine-decayed over the ceiling
    lrs: tuple[float, ...] = (3e-3, 1e-2, 3e-2)  # the grid each neuron's learning rate is chosen from
    select_seed: int = 100  # the seed the learning rate is chosen on, kept apart from the measured seeds
    check_every: int = 25  # the stop rule looks every this many steps (a forward pass over the points)
    patience: int = 400  # plateau: the best loss of the last `patience` steps is not `min_gain` below ...
    min_gain: float = 0.01  # ... the best before them (relative), i.e. < 1% better in 400 steps
    tolerance: float = 1e-3  # real: fitted when train MSE ≤ tolerance·Var(y), Var(y) = 1; R² ≈ 0.999
    max_points: int = 65536  # search ceiling; a seed that fits this many is reported as censored
    resolution: float = 1.0905  # ≈ 2^(1/8): stop when (smallest N not fitted) ÷ (largest N fitted) ≤ this
    margin: float = 1.1  # convergence: a check fitting ⌈margin·N⌉ points would move N by ≥ 10%
    depth: int = DEFAULT_DEPTH
    omega: float = 1.0
    init: str = "default"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps < 1 or not 0 < self.tolerance < 1 or self.max_points < 1 or not self.lrs:
            raise ValueError(f"invalid CapacitySettings: {self}")
        if any(lr <= 0 for lr in self.lrs) or list(self.lrs) != sorted(set(self.lrs)):
            raise ValueError(f"lrs must be positive and increasing, got {self.lrs}")
        if self.resolution < 1 or self.margin <= 1:
            raise ValueError(
                f"resolution is a ratio ≥ 1 and margin > 1, got {self.resolution}, {self.margin}"
            )
        if self.check_every < 1 or self.patience < self.check_every or not 0 <= self.min_gain < 1:
            raise ValueError(f"invalid stop rule in CapacitySettings: {self}")

    def train_config(self, lr: float, longer: int = 1) -> TrainConfig:
        """The trainer's config for a probe at ``lr`` (no diagnostics); ``longer`` multiplies the ceiling."""
        return TrainConfig(steps=self.steps * longer, lr=lr, record_every=0, device=self.device)

    def stop(self, kind: str, longer: int = 1) -> FitOrPlateau:
        """The probe's stop rule; ``longer`` multiplies the patience with the ceiling (the 2× check)."""
        target = 1.0 if kind == "binary" else self.tolerance * TARGET_VARIANCE
        return FitOrPlateau(kind, target, self.check_every, self.patience * longer, self.min_gain)


@dataclass(frozen=True)
class FitOrPlateau:
    """A probe's stop rule (``trainer.Stop``): fitted, plateaued, or diverged, checked every ``every`` steps.

    Fitted: 100% training accuracy (binary) or train MSE ≤ ``target`` (real). Plateau: the lowest loss of the
    last ``patience`` steps is less than ``min_gain`` (relative) below the lowest before them, once there
    are at least 2 × ``patience`` steps. Diverged: the last loss is not finite.
    """

    kind: str
    target: float
    every: int
    patience: int
    min_gain: float

    def reasons(self, step: int, losses: Tensor, train_metric: Tensor) -> list[str]:
        """One reason per replica ("" to go on) from its loss curve ``(step, M)`` and training metric."""
        fitted = train_metric >= self.target if self.kind == "binary" else train_metric <= self.target
        plateau = torch.zeros_like(fitted)
        if step >= 2 * self.patience:
            recent = losses[step - self.patience :].min(0).values
            before = losses[: step - self.patience].min(0).values
            plateau = recent > (1 - self.min_gain) * before
        finite = torch.isfinite(losses[-1])
        return [
            "diverged" if not ok else "fitted" if fit else "plateau" if flat else ""
            for ok, fit, flat in zip(finite.tolist(), fitted.tolist(), plateau.tolist(), strict=True)
        ]


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
    factor: float = START_FACTOR  # the first step from ``start``
    lo: int = 0  # largest N seen fitted (0: none yet)
    hi: int | None = None  # smallest N seen not fitted (None: none yet)
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
    fit: Fit, seeds: Sequence[int], start: int, max_points: int, resolution: float,
    factor: float = START_FACTOR,
) -> dict[int, Bracket]:  # fmt: skip
    """Per seed, the largest N that ``fit`` fits; seeds that want the same N are asked in one call.

    ``factor`` is the first step away from ``start``: ``resolution`` when ``start`` is already a good answer
    (one fitted and one failed probe then settle it), larger when it is a guess.
    """
    brackets = {s: Bracket(start, max_points, resolution, factor) for s in seeds}
    while True:
        wanted = {s: n for s, b in brackets.items() if (n := b.next_probe()) is not None}
        if not wanted:
            return brackets
        for n in sorted(set(wanted.values())):
            group = [s for s, m in wanted.items() if m == n]
            for s, fitted in fit(n, group).items():
                brackets[s].update(n, fitted)


# ---------------------------------------------------------------- measurement
CHECK_COLUMNS = (
    "kind", "neuron", "budget", "params", "lr", "points_by_lr", "points", "check_points", "fits_longer",
    "fits_lower_lr", "fits_higher_lr", "lower_bound", "why",
)  # fmt: skip


def neighbours(lrs: Sequence[float], lr: float) -> tuple[float, float]:
    """The grid points either side of ``lr``; past an edge, one more step of the grid's ratio there (√10
    for a one-point grid), so a choice at an edge is checked against the value beyond it."""
    lrs = list(lrs)
    i = lrs.index(lr)
    low_ratio = lrs[1] / lrs[0] if len(lrs) > 1 else 10**0.5
    high_ratio = lrs[-1] / lrs[-2] if len(lrs) > 1 else 10**0.5
    return (lrs[i - 1] if i > 0 else lr / low_ratio), (lrs[i + 1] if i + 1 < len(lrs) else lr * high_ratio)


class CapacityRun:
    """One measurement: its settings, cache, every probe trained, the records and the convergence checks.

    Per (neuron, kind): at the smallest budget, one search per learning rate of the grid on ``select_seed``
    (never reported) chooses the lr that fits the most points (ties: the smaller); every budget then
    searches each measured seed at that lr and, on the first seed, tries ⌈margin·N⌉ points three ways:
    twice the ceiling (and patience), and one grid step lower and higher in lr. If any fits, more training
    or another lr would move N by ≥ 10%, and the budget's N is reported as a lower bound.
    """

    def __init__(
        self, settings: CapacitySettings, cache: ResultCache | None = None, scheduler: str = ""
    ) -> None:
        self.settings, self.cache = settings, cache or ResultCache()
        self.scheduler = scheduler  # a Dask scheduler's address: probes train on its workers (training.pool)
        self.probes: list[dict] = []  # every training the searches asked for
        self.rows: list[dict] = []
        self.check_rows: list[dict] = []
        self.trained = self.reused = self.calls = 0
        self.seconds = 0.0
        self.lock = threading.Lock()  # searches of different neurons run in threads (``workers``)
        self.chain = threading.local()  # per chain thread: ``priority``, its probes' priority on the pool

    def key(
        self, neuron: str, kind: str, budget: int, width: int, seed: int, n: int, lr: float, longer: int
    ) -> str:
        """Cache key: neuron, width, seed, N, kind, the data generator, training and stop settings, code."""
        s = self.settings
        sizing = {"width": width, "depth": s.depth, "budget": budget}
        options = {
            "omega": s.omega,
            "init": s.init,
            "data": DATA_VERSION,
            "stop": asdict(s.stop(kind, longer)),
        }
        return cache_key(neuron, f"capacity_{kind}/n={n}", seed, sizing, options, s.train_config(lr, longer))

    def train_group(
        self, neuron: str, kind: str, budget: int, width: int, n: int, seeds: list[int], lr: float,
        longer: int = 1,
    ) -> dict:  # fmt: skip
        """Each seed's probe at N from the cache, training the missing ones together."""
        s = self.settings
        keys = {seed: self.key(neuron, kind, budget, width, seed, n, lr, longer) for seed in seeds}

        def train(missing: list[int]) -> list[RunResult]:
            with self.lock:
                self.calls += 1
            task = functools.partial(capacity_task, kind, n, budget=budget)  # seed -> Task; pickles for Dask
            options = {"width": width, "depth": s.depth, "omega": s.omega, "init": s.init,
                       "config": s.train_config(lr, longer), "stop": s.stop(kind, longer)}  # fmt: skip
            if self.scheduler:
                ahead = getattr(self.chain, "priority", CHAIN)
                return pool.train_remote(self.scheduler, neuron, task, missing, priority=ahead, **options)[0]
            return train_models(neuron, task, missing, **options)[1]

        batch = f"capacity|{neuron}|{kind}|{width}|{n}|{lr}|{longer}|{s}"
        found, missing = self.cache.fill(keys, batch, train)
        with self.lock:
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

    def measure(
        self, neuron: str, kind: str, budget: int, seeds: Sequence[int], ratio: float,
        lr: float | None = None, checks: bool = True,
    ) -> tuple[list[dict], dict]:  # fmt: skip
        """One budget: choose the lr (when ``lr`` is None), search every seed, check convergence.

        Returns the records (one per seed) and the check row (``CHECK_COLUMNS``).
        """
        s = self.settings
        width = capacity_width(neuron, kind, budget, s.depth)
        params = param_count(neuron, IN_DIM, OUT_DIM[kind], width, s.depth)
        at: dict[tuple[int, int, float], RunResult] = {}  # (seed, N, lr) -> its probe at the ceiling
        spent: dict[tuple[int, float], float] = {}  # (seed, lr) -> training seconds of its search

        def fitter(lr: float, longer: int = 1) -> Fit:
            def fit(n: int, group: list[int]) -> dict[int, bool]:
                out = {}
                for seed, (r, trained) in self.train_group(
                    neuron, kind, budget, width, n, group, lr, longer
                ).items():
                    fitted, score = self.is_fitted(kind, r)
                    if longer == 1:
                        at[(seed, n, lr)] = r
                        spent[(seed, lr)] = spent.get((seed, lr), 0.0) + r.seconds
                    out[seed] = fitted
                    with self.lock:
                        self.probes.append(
                            {"neuron": neuron, "kind": kind, "budget": budget, "params": params,
                             "seed": seed, "lr": lr, "ceiling": s.steps * longer, "points": n,
                             "fitted": fitted, "score": score, "steps": r.steps, "stopped": r.stopped,
                             "trained": trained, "seconds": r.seconds}
                        )  # fmt: skip
                return out

            return fit

        start = max(1, round(ratio * params))
        by_lr = ""
        if lr is None:  # the same search for every lr of the grid, on a seed that is never reported
            sel = s.select_seed
            found = {
                x: search_points(fitter(x), [sel], start, s.max_points, s.resolution)[sel].lo for x in s.lrs
            }
            lr = max(s.lrs, key=found.__getitem__)  # max keeps the first of equals: the smaller lr
            by_lr = " ".join(f"{x:g}:{n}" for x, n in found.items())
            start = found[lr] or start
        brackets = search_points(fitter(lr), seeds, start, s.max_points, s.resolution)
        first = brackets[seeds[0]].lo
        check_n = min(s.max_points, max(first + 1, math.ceil(s.margin * first)))
        fits: dict[str, bool | None] = {"fits_longer": None, "fits_lower_lr": None, "fits_higher_lr": None}
        why = []
        if checks:  # does more training, or a neighbouring lr, fit ≥ 10% more points on the first seed?
            down, up = neighbours(s.lrs, lr)
            for column, name, x, longer in (
                ("fits_longer", "2× ceiling", lr, 2), ("fits_lower_lr", f"lr {down:g}", down, 1),
                ("fits_higher_lr", f"lr {up:g}", up, 1),
            ):  # fmt: skip
                fits[column] = fitter(x, longer)(check_n, [seeds[0]])[seeds[0]]
                if fits[column]:
                    why.append(f"{name} fits {check_n}")
        if any(b.censored for b in brackets.values()):
            why.append("censored at max_points")
        check = {
            "kind": kind, "neuron": neuron, "budget": budget, "params": params, "lr": lr,
            "points_by_lr": by_lr,
            "points": first, "check_points": check_n if checks else None, **fits, "lower_bound": bool(why),
            "why": "; ".join(why),
        }  # fmt: skip
        rows = [
            self.record(neuron, kind, budget, width, params, seed, b, at.get((seed, b.lo, lr)),
                        spent.get((seed, lr), 0.0), lr, bool(why))
            for seed, b in brackets.items()
        ]  # fmt: skip
        return rows, check

    def record(
        self, neuron: str, kind: str, budget: int, width: int, params: int, seed: int, b: Bracket,
        r: RunResult | None, seconds: float, lr: float, lower_bound: bool,
    ) -> dict:  # fmt: skip
        """One protocol §7 record: value = points fitted (the search's lower end), plus bits per parameter.

        ``train_value`` is the training accuracy (binary) or MSE (real) at that N; ``seconds`` the seed's
        training time over all its probes; ``diverged`` stays False, a diverged probe counts as not fitted;
        ``steps`` the steps that probe took (it stopped when it fitted), ``total_steps`` the ceiling.
        """
        s = self.settings
        return {
            "version": "capacity", "neuron": neuron, "task": f"capacity_{kind}", "seed": seed,
            "budget": budget, "params": params, "width": width, "metric": "points", "value": b.lo,
            "train_value": r.train_value if r else math.nan, "steps": r.steps if r else 0, "diverged": False,
            "seconds": seconds, "id_value": None, "trivial_value": None, "model": neuron, "kind": "capacity",
            "omega": s.omega, "init": s.init, "depth": s.depth, "lr": lr, "total_steps": s.steps,
            "diverged_step": None,
            "bits_per_param": b.lo / params, "upper": b.hi, "probes": len(b.probes), "censored": b.censored,
            "lower_bound": lower_bound,
        }  # fmt: skip

    @property
    def records(self) -> pd.DataFrame:
        """One row per (neuron, kind, budget, seed): RECORD_COLUMNS."""
        return pd.DataFrame(self.rows, columns=list(RECORD_COLUMNS))

    @property
    def checks(self) -> pd.DataFrame:
        """One row per (neuron, kind, budget): the chosen lr, N per lr on the selection seed, the 2× check."""
        return pd.DataFrame(self.check_rows, columns=list(CHECK_COLUMNS))

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
    """Write RECORD_COLUMNS (protocol §7 plus ``bits_per_param`` and the search's columns) atomically."""
    return write_records(records, path, extra=RECORD_COLUMNS[len(COLUMNS) :])


def chain_priority(left: Sequence[int], smallest: int) -> int:
    """A chain's probes' priority on the pool: ``CHAIN`` plus the work its budgets ``left`` still need, in
    units of its smallest budget's (a probe's cost grows as N·P, ~budget²)."""
    return CHAIN + round(sum((b / smallest) ** 2 for b in left))


def measure_capacity(
    neurons: Sequence[str],
    budgets: Sequence[int],
    seeds: Sequence[int] = (0, 1, 2),
    *,
    kinds: Sequence[str] = KINDS,
    settings: CapacitySettings | None = None,
    records: str | Path | None = "",
    cache: ResultCache | None = None,
    workers: int = 0,
    checks: bool = True,
    scheduler: str | None = None,
    larger: Mapping[str, Sequence[int]] | None = None,
    **overrides: object,
) -> CapacityRun:
    """Capacity of every neuron × kind × budget × seed, searched and cached; writes the records CSV.

    ``overrides`` replace fields of ``settings`` (e.g. ``steps=400``); ``records`` is the CSV path ("" =
    executed/interactive/capacity.records.csv, None = write nothing). Each (neuron, kind) is one chain of
    searches over the budgets, ascending; ``workers`` chains run at once (0: one per core), each training
    on one thread, so the records are the same bits for any ``workers``. ``checks=False`` skips the
    convergence checks (``CapacityRun``). With a Dask scheduler (``scheduler`` or ``$RNLIB_SCHEDULER``, as
    ``Study``) every chain runs at once here and its probes train on the cluster's workers. ``larger`` adds
    budgets for some neurons only (the default profile measures vanilla and SinGLU at 4K too).
    """
    start = time.perf_counter()
    settings = replace(settings or CapacitySettings(), **overrides)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise KeyError(f"unknown capacity kind(s) {', '.join(unknown)}; valid: {', '.join(KINDS)}")
    for name in larger or {}:  # a typo fails here, listing the registry; a neuron not measured adds nothing
        neuron_class(name)
    if settings.select_seed in seeds:
        raise ValueError(
            f"select_seed {settings.select_seed} is also a measured seed; keep it apart from {seeds}"
        )
    runtime.configure()
    run = CapacityRun(settings, cache, pool.scheduler_address(scheduler))
    seeds = [int(s) for s in seeds]

    def chain(item: tuple[str, str]) -> list[tuple[list[dict], dict]]:
        neuron, kind = item
        history: list[tuple[int, float]] = []
        out = []
        lr = settings.lrs[0] if len(settings.lrs) == 1 else None  # one lr: nothing to choose
        mine = sorted({int(b) for b in [*budgets, *(larger or {}).get(neuron, ())]})
        for i, budget in enumerate(mine):  # why ascending: each budget's first guess extrapolates the last
            run.chain.priority = chain_priority(mine[i:], mine[0])
            guess = next_guess(history, budget, PRIOR_RATIO[kind])
            rows, check = run.measure(neuron, kind, int(budget), seeds, guess, lr, checks)
            lr = check["lr"]  # chosen at the smallest budget, kept for the larger ones
            history.append((budget, check["points"] / check["params"] or guess))
            out.append((rows, check))
        return out

    items = [(neuron, kind) for neuron in neurons for kind in kinds]
    workers = len(items) if run.scheduler else workers or runtime.program_workers(settings.device)
    for done in runtime.map_programs(chain, items, workers):
        for rows, check in done:
            run.rows += rows
            run.check_rows.append(check)
    run.seconds = time.perf_counter() - start
    if records is not None:
        write_capacity_records(run.records, records or EXECUTED_DIR / "interactive" / "capacity.records.csv")
    return run


def longer_training(
    run: CapacityRun, kind: str, budget: int, factors: Sequence[int] = (2, 4), neurons: Sequence[str] = ()
) -> pd.DataFrame:
    """``run``'s records at ``budget`` and again with the ceiling and patience × each factor (each neuron at
    its chosen lr, same seeds, no checks): how N moves as training grows. Adds a ``ceiling`` column."""
    done = run.records
    done = done[(done["task"] == f"capacity_{kind}") & (done["budget"] == budget)]
    chosen = run.checks.set_index(["kind", "neuron", "budget"])["lr"]
    frames = [done.assign(ceiling=run.settings.steps)]
    measured = list(dict.fromkeys(done["neuron"]))
    for neuron in [n for n in neurons if n in measured] if neurons else measured:
        for k in factors:
            s = replace(run.settings, steps=k * run.settings.steps, patience=k * run.settings.patience,
                        lrs=(float(chosen[(kind, neuron, budget)]),))  # fmt: skip
            again = measure_capacity([neuron], [budget], sorted(set(done["seed"].astype(int))), kinds=[kind],
                                     settings=s, records=None, cache=run.cache, checks=False,
                                     scheduler=run.scheduler)  # fmt: skip
            frames.append(again.records.assign(ceiling=s.steps))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- reading the records
