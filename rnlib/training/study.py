"""What a notebook calls: train models × tasks × seeds (cached, batched over seeds) and keep the records.

A notebook makes one ``Study`` from its parameters and calls ``study.run(...)`` once per comparison; every
call appends its records to the notebook's records file, rewritten atomically each time. Each call shows a
progress bar (a line updated in place in a kernel, tqdm's text on stderr in a terminal) unless
``RNLIB_PROGRESS=0``, which the batch runner sets for its kernels.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rnlib.core.models import DEFAULT_DEPTH, RichNet, param_count, width_for_budget
from rnlib.core.neurons import neuron_class
from rnlib.core.tasks import TASKS, hifreq_target, make_task, ood_target, task_names
from rnlib.paths import EXECUTED_DIR
from rnlib.provenance import PROGRESS_ENV, STEP_ENV
from rnlib.records import COLUMNS, KEY, write_records
from rnlib.training import pool, runtime
from rnlib.training.cache import ResultCache, cache_key
from rnlib.training.diagnostics import DEFAULT_RECORDERS
from rnlib.training.trainer import RunResult, TrainConfig, train, train_models


@dataclass(frozen=True)
class Variant:
    """One model variant to train: a registered neuron, its options, and the name tables show."""

    neuron: str
    omega: float | None = None  # None: the study's ω
    init: str = "default"
    width: int | None = None  # a fixed width instead of the budget-matched one (v03's matched width)
    label: str = ""
    lr: float | None = None  # None: the study's peak learning rate (the tuning track sets its own, §9)

    def __post_init__(self) -> None:
        neuron_class(self.neuron)  # unknown names fail here, listing the valid ones
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"Variant {self.name}: lr must be positive, got {self.lr!r}")

    @property
    def name(self) -> str:
        """The label, or the neuron's registry name."""
        return self.label or self.neuron


@dataclass
class Results:
    """One ``Study.run``: its records and, per (model, task), the trained replicas with their diagnostics."""

    records: pd.DataFrame
    runs: dict[tuple[str, str], list[RunResult]] = field(default_factory=dict)

    def diagnostics(self, model: str, task: str) -> pd.DataFrame:
        """Tidy per-step diagnostics of one model on one task: columns seed, step, key, value."""
        rows = []
        for r in self.runs[(model, task)]:
            steps = r.diagnostics.get("step", [])
            for key, series in r.diagnostics.items():
                if "@" in key or key == "step":
                    continue
                rows += [(r.seed, s, key, v) for s, v in zip(steps, series, strict=False)]
        return pd.DataFrame(rows, columns=["seed", "step", "key", "value"])

    def samples(self, model: str, task: str, key: str) -> pd.DataFrame:
        """Raw probe values at the first and last recording: columns seed, when (first/last), value."""
        rows = []
        for r in self.runs[(model, task)]:
            for when in ("first", "last"):
                rows += [(r.seed, when, v) for v in r.diagnostics.get(f"{key}@{when}", [])]
        return pd.DataFrame(rows, columns=["seed", "when", "value"])


@dataclass(frozen=True)
class PlaneGrid:
    """What a decision-boundary figure draws: per model, class-1 probability over a square grid."""

    task: str
    seed: int
    axis: np.ndarray  # (P,): both axes
    probability: dict[str, np.ndarray]  # label -> (P, P), rows over x2, columns over x1
    accuracy: dict[str, float]  # label -> test accuracy
    x_test: np.ndarray  # (N, 2)
    y_test: np.ndarray  # (N,)


@dataclass(frozen=True)
class LineCurves:
    """What an extrapolation figure draws: per model, predictions of a 1-D task, and the target."""

    task: str
    seed: int
    x: np.ndarray  # (N,)
    target: np.ndarray  # (N,)
    predictions: dict[str, np.ndarray]  # label -> (N,)
    train_range: tuple[float, float]
    ood_range: tuple[float, float] | None  # the OOD test range, for tasks that have one


TARGETS_1D = {"ood": ood_target, "hifreq": hifreq_target}  # 1-D tasks whose target line_curves can draw
Done = tuple[list[RunResult], int]  # one program's replicas in seed order and how many of them trained here
Job = tuple[Variant, str]  # one (model, task) program of a Study.run_jobs call


def show_progress(progress: bool | None = None) -> bool:
    """``progress`` when given, else whether ``$RNLIB_PROGRESS`` allows it ("0" hides it: the batch runner's
    kernels, whose executed notebooks would keep every redraw)."""
    if progress is not None:
        return progress
    return os.environ.get(PROGRESS_ENV, "").strip().lower() not in ("0", "false", "no", "off")


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (JupyterLab, papermill), not a terminal."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class KernelBar:
    """tqdm's text bar in a kernel, as one output line updated in place through a display handle: live in
    JupyterLab, and an executed notebook keeps its final state (a widget's saved form would show 0%)."""

    EVERY = 0.5  # seconds between redraws; the last one always draws

    def __init__(self, total: int, desc: str) -> None:
        from IPython.display import display

        self.total, self.desc, self.n, self.postfix = total, desc, 0, ""
        self.start = self.drawn = time.perf_counter()
        self.handle = display({"text/plain": self.text()}, raw=True, display_id=True)

    def text(self) -> str:
        """The bar as tqdm draws it: count, rate and the estimate of time left."""
        from tqdm import tqdm

        elapsed = time.perf_counter() - self.start
        return tqdm.format_meter(self.n, self.total, elapsed, ncols=100, prefix=self.desc, unit="program",
                                 postfix=self.postfix or None)  # fmt: skip

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self.postfix = text

    def update(self) -> None:
        self.n += 1
        if self.n == self.total or time.perf_counter() - self.drawn >= self.EVERY:
            self.handle.update({"text/plain": self.text()}, raw=True)
            self.drawn = time.perf_counter()


@contextlib.contextmanager
def progress_bar(total: int, desc: str, show: bool) -> Iterator[Callable[[Done], Done]]:
    """A callback to pass each finished program through: it advances a bar of ``total`` programs and counts
    replicas trained vs from the cache in its postfix; tqdm estimates the time left. A no-op when hidden; in
    a kernel a ``KernelBar``, in a terminal tqdm's text on stderr."""
    if not show:
        yield lambda done: done
        return
    lock, counts = threading.Lock(), [0, 0]  # programs finish on map_programs' worker threads
    if in_kernel():
        bar: object = contextlib.nullcontext(KernelBar(total, desc))
    else:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="program", file=sys.stderr, dynamic_ncols=True)
    with bar as b:

        def tick(done: Done) -> Done:
            runs, trained = done
            with lock:
                counts[0] += trained
                counts[1] += len(runs) - trained
                b.set_postfix_str(f"replicas: {counts[0]} trained, {counts[1]} from cache", refresh=False)
                b.update()
            return done

        yield tick


@functools.lru_cache(maxsize=256)
def trivial_value(task: str, seed: int) -> float:
    """``make_task(task, seed).trivial_value()``, drawn once per (task, seed) in a process."""
    return make_task(task, seed).trivial_value()


def resolve_tasks(tasks: Sequence[str] | None) -> list[str]:
    """The named tasks in registry order (all when empty); unknown names fail listing the valid ones."""
    if not tasks:
        return task_names()
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise KeyError(f"unknown task(s) {', '.join(unknown)}; valid tasks: {', '.join(TASKS)}")
    return list(tasks)


class Study:
    """A notebook's experiments: shared protocol settings, the result cache and the records file."""

    def __init__(
        self,
        version: str,
        *,
        seeds: Sequence[int] = (0, 1, 2),
        budget: int | Mapping[str, int] = 0,
        tasks: Sequence[str] = (),
        steps: int = 3000,
        lr: float = 1e-3,
        omega: float = 1.0,
        device: str = "cpu",
        records: str | Path = "",
        depth: int = DEFAULT_DEPTH,
        record_every: int = 100,
        cache: ResultCache | None = None,
        workers: int = 0,
        step: str = "",
        progress: bool | None = None,
        scheduler: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        if not seeds:
            raise ValueError("seeds must name at least one seed")
        self.version, self.seeds, self.budget = version, [int(s) for s in seeds], budget
        self.tasks = resolve_tasks(tasks)
        self.omega, self.depth = float(omega), depth
        step = step or os.environ.get(STEP_ENV, "auto")  # a profile's `step` reaches a kernel as RNLIB_STEP
        self.config = TrainConfig(steps=steps, lr=lr, record_every=record_every, device=device, step=step)
        self.records_path = (
            Path(records) if records else EXECUTED_DIR / "interactive" / f"{version}.records.csv"
        )
        self.cache = cache or ResultCache()
        runtime.configure()
        # programs trained at once, one intra-op thread each (rnlib.training.runtime: results never move)
        self.workers = workers or runtime.program_workers(device)
        self.progress = progress  # None: shown unless RNLIB_PROGRESS=0 (show_progress)
        # a Dask scheduler's address: programs train on its workers (rnlib.training.pool); "" trains here
        self.scheduler = pool.scheduler_address(scheduler)
        self.placements: list[tuple[str, str, str]] = []  # (model, task, worker) of each program sent there
        # record columns written after COLUMNS: `val_value` (the validation metric) and the names of the tags
        # `run(..., tags=)` sets; none by default, so the version notebooks' record files keep their columns
        self.extra = tuple(extra)
        self.frames: list[pd.DataFrame] = []
        self.trained = self.reused = 0
        self.seconds = 0.0

    @property
    def columns(self) -> list[str]:
        """The columns of this study's records: protocol §7's, then ``extra``."""
        return [*COLUMNS, *self.extra]

    @property
    def records(self) -> pd.DataFrame:
        """Every record this study has produced so far (a run repeated by a later call is kept once)."""
        if not self.frames:
            return pd.DataFrame(columns=self.columns)
        with warnings.catch_warnings():  # all-NA columns (id_value off `ood`) are expected; keep pandas quiet
            warnings.simplefilter("ignore", FutureWarning)
            records = pd.concat(self.frames, ignore_index=True)
        # e.g. v14's sweep at a task's default budget repeats the main run; the cached records are equal
        return records.drop_duplicates(list(KEY), keep="last", ignore_index=True)

    def budget_for(self, task: str, budget: int | Mapping[str, int] | None = None) -> int:
        """The budget for ``task``: an explicit one, a per-task mapping, or the task's default (0 or None)."""
        b = self.budget if budget is None else budget
        if isinstance(b, Mapping):
            b = b.get(task, 0)
        return int(b) if b else TASKS[task].default_budget

    def run(
        self,
        models: Sequence[str | Variant],
        tasks: Sequence[str] | None = None,
        *,
        budget: int | Mapping[str, int] | None = None,
        progress: bool | None = None,
        seeds: Sequence[int] | None = None,
        tags: Mapping[str, object] | None = None,
    ) -> Results:
        """Train every model on every task over the study's seeds (cached), append and write the records.

        The (model, task) programs the cache lacks train ``self.workers`` at a time, one thread each.
        ``progress`` shows or hides the bar of programs done (default: the Study's, else ``show_progress``);
        ``seeds`` and ``tags`` are as in ``run_jobs``.
        """
        models = [m if isinstance(m, Variant) else Variant(m) for m in models]
        jobs = [(m, t) for t in (resolve_tasks(tasks) if tasks is not None else self.tasks) for m in models]
        return self.run_jobs(jobs, budget=budget, progress=progress, seeds=seeds, tags=tags)

    def run_jobs(
        self,
        jobs: Sequence[Job],
        *,
        budget: int | Mapping[str, int] | None = None,
        progress: bool | None = None,
        seeds: Sequence[int] | None = None,
        tags: Mapping[str, object] | None = None,
    ) -> Results:
        """As ``run`` for given (model, task) pairs (the tuning track trains each task's chosen setting):
        over ``seeds`` (default: the study's), each record carrying the constant columns ``tags`` (each must
        be one of the study's ``extra`` columns)."""
        start = time.perf_counter()
        seeds = [int(s) for s in (self.seeds if seeds is None else seeds)]
        if not seeds:
            raise ValueError("seeds must name at least one seed")
        tags = dict(tags or {})
        if set(tags) - set(self.extra):
            raise ValueError(f"tags {sorted(set(tags) - set(self.extra))} are not among the study's extra "
                             f"columns {list(self.extra)}; declare them with Study(extra=...)")  # fmt: skip
        programs = [(model, task, self.budget_for(task, budget), seeds) for model, task in jobs]
        show = show_progress(self.progress if progress is None else progress)
        # on a cluster up to pool.IN_FLIGHT programs are submitted at once (threads here only wait); locally,
        # one per core
        workers = min(len(programs), pool.IN_FLIGHT) if self.scheduler else self.workers
        with progress_bar(len(programs), self.version, show) as tick:
            done = runtime.map_programs(lambda job: tick(self.train_cached(*job)), programs, workers)
        results = Results(records=pd.DataFrame(columns=self.columns))
        rows = []
        for (model, task, b, _), (runs, trained) in zip(programs, done, strict=True):
            results.runs[(model.name, task)] = runs
            rows += [{**self.record(model, task, b, r), **tags} for r in runs]
            self.trained += trained
            self.reused += len(runs) - trained
        results.records = pd.DataFrame(rows, columns=self.columns)
        self.frames.append(results.records)
        write_records(self.records, self.records_path, extra=self.extra)
        self.seconds += time.perf_counter() - start
        return results

    def fit_models(
        self,
        models: Sequence[str | Variant],
        task: str,
        seeds: Sequence[int] | None = None,
        *,
        budget: int | None = None,
    ) -> dict[str, RichNet]:
        """Retrain each model on ``task`` under the study's protocol and return the trained networks by label.

        For figures that need predictions (decision boundaries, extrapolation); nothing is cached or recorded.
        """
        models = [m if isinstance(m, Variant) else Variant(m) for m in models]

        def fit(model: Variant) -> RichNet:
            sizing, options = self.settings(model, self.budget_for(task, budget))
            net, _ = train_models(
                model.neuron, task, list(seeds or self.seeds), **sizing, depth=self.depth, **options,
                config=self.config_for(model),
            )  # fmt: skip
            return net.eval()

        return dict(
            zip([m.name for m in models], runtime.map_programs(fit, models, self.workers), strict=True)
        )

    def decision_grid(
        self, models: Sequence[str | Variant], task: str = "spiral", seed: int = 0, points: int = 200
    ) -> PlaneGrid:
        """Each model retrained on ``seed``: class-1 probability on a ``points``² grid, test accuracy."""
        data = make_task(task, seed)
        nets = self.fit_models(models, task, [seed])
        lim = float(data.x_test.abs().max()) * 1.1
        axis = torch.linspace(-lim, lim, points)
        grid = torch.cartesian_prod(axis, axis).flip(1)  # (points², 2), row-major over (x2, x1)
        probability, accuracy = {}, {}
        with torch.no_grad():
            for label, net in nets.items():
                device = next(net.parameters()).device
                p = net(grid[None].to(device)).softmax(-1)[0, :, 1].cpu()  # (points²,)
                hits = net(data.x_test[None].to(device))[0].argmax(-1).cpu() == data.y_test
                probability[label] = p.view(points, points).numpy()
                accuracy[label] = float(hits.float().mean())
        return PlaneGrid(
            task, seed, axis.numpy(), probability, accuracy, data.x_test.numpy(), data.y_test.numpy()
        )

    def line_curves(
        self,
        models: Sequence[str | Variant],
        task: str = "ood",
        x_range: tuple[float, float] = (-3.0, 3.0),
        seed: int = 0,
        points: int = 600,
    ) -> LineCurves:
        """Each model retrained on ``seed``: predictions of a 1-D task over ``x_range``, and the target."""
        if task not in TARGETS_1D:
            raise KeyError(f"no 1-D target for task {task!r}; valid: {', '.join(TARGETS_1D)}")
        data = make_task(task, seed)
        x = torch.linspace(*x_range, points)[:, None]  # (N, 1)
        nets = self.fit_models(models, task, [seed])
        with torch.no_grad():
            predictions = {
                label: net(x[None].to(next(net.parameters()).device))[0, :, 0].cpu().numpy()
                for label, net in nets.items()
            }  # label -> (N,)
        ood = None if data.x_id_test is None else (float(data.x_test.min()), float(data.x_test.max()))
        return LineCurves(
            task, seed, x[:, 0].numpy(), TARGETS_1D[task](x.double()).float()[:, 0].numpy(), predictions,
            (float(data.x_train.min()), float(data.x_train.max())), ood,
        )  # fmt: skip

    def settings(self, model: Variant, budget: int) -> tuple[dict[str, int], dict[str, float | str]]:
        """How ``model`` is sized (its fixed width, else ``budget``) and its options (ω, init)."""
        sizing = {"width": model.width} if model.width else {"budget": budget}
        return sizing, {"omega": self.omega if model.omega is None else model.omega, "init": model.init}

    def config_for(self, model: Variant) -> TrainConfig:
        """The study's training protocol with ``model``'s own learning rate, if it has one."""
        return self.config if model.lr is None else replace(self.config, lr=model.lr)

    def train_cached(
        self, model: Variant, task: str, budget: int, seeds: Sequence[int] | None = None
    ) -> tuple[list[RunResult], int]:
        """Each seed's replica (default: the study's seeds) from the cache, the missing seeds trained together
        in one batch. Returns the replicas in seed order and how many of them were trained here.
        """
        seeds = list(self.seeds if seeds is None else seeds)
        sizing, options = self.settings(model, budget)
        config = self.config_for(model)  # equal to the study's for lr=None: the same keys as before
        keys = {
            s: cache_key(model.neuron, task, s, {**sizing, "depth": self.depth}, options, config)
            for s in seeds
        }
        found, missing = self.cache.fill(
            keys,
            f"{model.neuron}|{task}|{sizing}|{options}|{config}",
            lambda todo: self.train_program(model, task, todo, {**sizing, **options}),
        )
        return [found[s] for s in seeds], len(missing)

    def train_program(self, model: Variant, task: str, seeds: list[int], settings: dict) -> list[RunResult]:
        """One program: ``seeds`` of ``model`` on ``task`` as replicas, here or on the cluster's workers."""
        config = self.config_for(model)
        options = {**settings, "depth": self.depth, "config": config, "callbacks": DEFAULT_RECORDERS}
        if not self.scheduler:
            return train(model.neuron, task, seeds, **options)
        runs, worker = pool.train_remote(self.scheduler, model.neuron, task, seeds, **options)
        self.placements.append((model.name, task, worker))
        return runs

    def record(self, model: Variant, task: str, budget: int, r: RunResult) -> dict:
        """One protocol §7 record, and the replica's validation metric (written when ``extra`` names it)."""
        return {
            "version": self.version,
            "neuron": model.neuron,
            "task": task,
            "seed": r.seed,
            "budget": budget,
            "params": r.params,
            "width": r.width,
            "metric": r.metric,
            "value": r.value,
            "train_value": r.train_value,
            "steps": r.steps,
            "diverged": r.diverged,
            "seconds": r.seconds,
            "id_value": r.id_value,
            "trivial_value": trivial_value(task, r.seed),
            "model": model.name,
            "kind": TASKS[task].kind,
            "omega": self.settings(model, budget)[1]["omega"],
            "init": model.init,
            "depth": self.depth,
            "lr": self.config_for(model).lr,
            "total_steps": self.config.steps,
            "diverged_step": r.diverged_step,
            "val_value": r.val_value,
        }

    def summary_line(self) -> str:
        """How much was trained (and where, on a cluster) and how much came from the cache."""
        where = (
            f" on the Dask cluster {self.scheduler} ({len(self.placements)} programs)"
            if self.scheduler
            else ""
        )
        return (
            f"{self.version}: {len(self.records)} records, {self.trained} replicas trained{where}, "
            f"{self.reused} from the cache, {self.seconds:.1f} s; records in {self.records_path}"
        )


def width_table(models: Sequence[str], tasks: Sequence[str] | None = None, budget: int = 0) -> pd.DataFrame:
    """Width and parameter count each neuron gets at each task's budget (no training)."""
    rows = []
    for task in resolve_tasks(tasks):
        spec = TASKS[task]
        b = budget or spec.default_budget
        for neuron in models:
            w = width_for_budget(neuron, spec.in_dim, spec.out_dim, b)
            rows.append(
                {
                    "task": task,
                    "neuron": neuron,
                    "budget": b,
                    "matrices": len(neuron_class(neuron).matrices),
                    "width": w,
                    "params": param_count(neuron, spec.in_dim, spec.out_dim, w),
                }
            )
    return pd.DataFrame(rows)
