"""The 9 benchmark tasks of protocol §4: a registry of specs and `make_task(name, seed)`.

Every task is drawn from a CPU `torch.Generator`, so a seed gives bit-identical tensors on any machine.
Two choices make that hold (both checked by tests/test_tasks.py):
- Random draws and target formulas run in float64 and are cast to float32 at the end. torch's float32
  `randn` takes an ISA-specific path (AVX2 vs scalar give different bits); float64 draws do not, and
  a last-ulp float64 difference in `sin`/`exp` almost never survives rounding to float32.
- torch's CPU mt19937 keeps only the low 32 bits of a seed, so the task name (crc32) and the seed are
  combined within 32 bits: `(crc32(name) + seed) mod 2**32`. For one task, distinct seeds in
  [0, 2**32) give distinct streams; different tasks with the same seed get unrelated streams.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from rnlib.core.catalog import KINDS, METRICS, TaskInfo
from rnlib.core.catalog import TASKS as CATALOG_TASKS

MAX_SEED = 2**32 - 1  # why: the CPU generator keeps 32 bits of its seed (see module docstring)
SPIRAL_TURNS = 5  # why: protocol §4; with 3 turns every neuron reached ~97% in the pilot (a ceiling)
SPIRAL_NOISE = 0.02  # why: protocol §4; arms are 0.1 apart in radius, so 0.02 keeps them separable
CHECKER_CELLS = 4  # why: protocol §4; ⌊4(x+1)⌋ on [-1, 1] gives 8 cells per axis, an 8×8 board
FREQ_TEST_C = 5.0  # κ/2π at test, κ = 10π. why: protocol §4; 5× the largest training κ (2π)

Draws = dict[str, Tensor]


# ---------------------------------------------------------------- target formulas (protocol §4, verbatim)
def complex4d_target(x: Tensor) -> Tensor:
    """exp(½·(sin(π(x1²+x2²)) + sin(π(x3²+x4²)))), the KAN paper's 4-D example; (N, 4) -> (N, 1)."""
    a = torch.sin(math.pi * (x[:, 0] ** 2 + x[:, 1] ** 2))
    b = torch.sin(math.pi * (x[:, 2] ** 2 + x[:, 3] ** 2))
    return torch.exp(0.5 * (a + b)).unsqueeze(1)


def nested2d_target(x: Tensor) -> Tensor:
    """sin(π·x2·sin(π·x1)); (N, 2) -> (N, 1)."""
    return torch.sin(math.pi * x[:, 1] * torch.sin(math.pi * x[:, 0])).unsqueeze(1)


def hifreq_target(x: Tensor) -> Tensor:
    """sin(2π·8x) + sin(2π·20x) + sin(2π·45x); (N, 1) -> (N, 1)."""
    return torch.sin(2 * math.pi * 8 * x) + torch.sin(2 * math.pi * 20 * x) + torch.sin(2 * math.pi * 45 * x)


def ood_target(x: Tensor) -> Tensor:
    """sin(3x) + ½x²; (N, 1) -> (N, 1)."""
    return torch.sin(3 * x) + 0.5 * x**2


def freqgen_target(x: Tensor, kappa: Tensor) -> Tensor:
    """sin(κ·x); x, κ (N, 1) -> (N, 1)."""
    return torch.sin(kappa * x)


def mixedfreq_target(x: Tensor, kappa: Tensor) -> Tensor:
    """sin(κ·x) + ½·sin(2κ·x); x, κ (N, 1) -> (N, 1)."""
    return torch.sin(kappa * x) + 0.5 * torch.sin(2 * kappa * x)


def checkerboard_label(x: Tensor) -> Tensor:
    """Parity of ⌊4(x1+1)⌋ + ⌊4(x2+1)⌋; (N, 2) -> (N,) int64."""
    cells = torch.floor(CHECKER_CELLS * (x + 1)).to(torch.int64)
    return (cells[:, 0] + cells[:, 1]) % 2


# ---------------------------------------------------------------- generators (float64 draws)
def _uniform(gen: torch.Generator, n: int, d: int, low: float = -1.0, high: float = 1.0) -> Tensor:
    """n points uniform on [low, high]^d, on the float32 grid but held in float64; (n, d)."""
    x = low + (high - low) * torch.rand(n, d, generator=gen, dtype=torch.float64)
    # why round first: targets are then exact functions of the float32 inputs a model sees (and a
    # checkerboard label can never disagree with its stored point at a cell edge)
    return x.to(torch.float32).to(torch.float64)


Sampler = Callable[[torch.Generator, int], tuple[Tensor, Tensor]]  # n points of a training distribution


def _regression(target: Callable[[Tensor], Tensor], d: int, n: int) -> Callable[[torch.Generator], Draws]:
    """Generator for y = target(x), x uniform on [-1, 1]^d, n train and n fresh test points."""

    def generate(gen: torch.Generator) -> Draws:
        x_train, x_test = _uniform(gen, n, d), _uniform(gen, n, d)
        return {"x_train": x_train, "y_train": target(x_train), "x_test": x_test, "y_test": target(x_test)}

    return generate


def _uniform_sampler(target: Callable[[Tensor], Tensor], d: int) -> Sampler:
    """n points x uniform on [-1, 1]^d with y = target(x): the training distribution of most tasks."""

    def sample(gen: torch.Generator, n: int) -> tuple[Tensor, Tensor]:
        x = _uniform(gen, n, d)
        return x, target(x)

    return sample


def _gen_memorize(gen: torch.Generator) -> Draws:
    x = torch.randn(200, 8, generator=gen, dtype=torch.float64)  # (200, 8)
    y = torch.randn(200, 4, generator=gen, dtype=torch.float64)  # (200, 4)
    return {
        "x_train": x,
        "y_train": y,
        "x_test": x,
        "y_test": y,
    }  # why: protocol §4, test set IS the training set


def _spiral_split(gen: torch.Generator, n: int) -> tuple[Tensor, Tensor]:
    labels = torch.arange(n) % 2  # why: balanced classes, so chance accuracy is exactly 50%
    labels = labels[torch.randperm(n, generator=gen)]  # why: no class-ordered rows
    r = torch.rand(n, generator=gen, dtype=torch.float64)
    angle = SPIRAL_TURNS * 2 * math.pi * r + math.pi * labels
    x = r.unsqueeze(1) * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    x = x + SPIRAL_NOISE * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return x, labels  # (n, 2), (n,)


def _gen_spiral(gen: torch.Generator) -> Draws:
    x_train, y_train = _spiral_split(gen, 1000)
    x_test, y_test = _spiral_split(gen, 1000)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _gen_checkerboard(gen: torch.Generator) -> Draws:
    x_train, x_test = _uniform(gen, 2000, 2), _uniform(gen, 2000, 2)
    return {
        "x_train": x_train,
        "y_train": checkerboard_label(x_train),
        "x_test": x_test,
        "y_test": checkerboard_label(x_test),
    }


def _gen_ood(gen: torch.Generator) -> Draws:
    x_train = _uniform(gen, 1000, 1)
    x_test = _uniform(gen, 1000, 1, 1.0, 2.0)  # why: protocol §4, extrapolation range just past training
    x_id = _uniform(gen, 1000, 1)  # why: fresh in-distribution points, the OOD degradation's denominator
    return {
        "x_train": x_train,
        "y_train": ood_target(x_train),
        "x_test": x_test,
        "y_test": ood_target(x_test),
        "x_id_test": x_id,
        "y_id_test": ood_target(x_id),
    }


def _freq_sampler(target: Callable[[Tensor, Tensor], Tensor]) -> Sampler:
    """n training-distribution points of a frequency task: x uniform on [-1, 1], κ/2π ~ U[1/2, 1]."""

    def sample(gen: torch.Generator, n: int) -> tuple[Tensor, Tensor]:
        x, c = _uniform(gen, n, 1), _uniform(gen, n, 1, 0.5, 1.0)
        return torch.cat([x, c], dim=1), target(x, 2 * math.pi * c)

    return sample


def _freq_task(target: Callable[[Tensor, Tensor], Tensor]) -> Callable[[torch.Generator], Draws]:
    """Generator for input (x, κ/2π) -> target(x, κ); train κ ~ U[π, 2π] per point, test κ = 10π."""

    def generate(gen: torch.Generator) -> Draws:
        # why draw c = κ/2π ~ U[1/2, 1] (same law as κ ~ U[π, 2π]): κ = 2π·c is then exact for the stored c
        # why κ/2π as input at all: it counts periods per unit length, order 1 like x
        x_train, c_train = _uniform(gen, 1000, 1), _uniform(gen, 1000, 1, 0.5, 1.0)
        x_test = _uniform(gen, 1000, 1)
        c_test = torch.full_like(x_test, FREQ_TEST_C)
        return {
            "x_train": torch.cat([x_train, c_train], dim=1),
            "y_train": target(x_train, 2 * math.pi * c_train),
            "x_test": torch.cat([x_test, c_test], dim=1),
            "y_test": target(x_test, 2 * math.pi * c_test),
        }

    return generate


# ---------------------------------------------------------------- registry
GENERATORS: dict[str, Callable[[torch.Generator], Draws]] = {  # keyed like rnlib.core.catalog.TASKS
    "complex4d": _regression(complex4d_target, 4, 1000),
    "nested2d": _regression(nested2d_target, 2, 1000),
    "hifreq": _regression(hifreq_target, 1, 1000),
    "memorize": _gen_memorize,
    "spiral": _gen_spiral,
    "checkerboard": _gen_checkerboard,
    "ood": _gen_ood,
    "freqgen": _freq_task(freqgen_target),
    "mixedfreq": _freq_task(mixedfreq_target),
}


# Validation split (protocol §4): points of each task's *training* distribution, drawn from the same generator
# after every train and test draw, so that train and test keep their bits; as many as the test set.
# `memorize` has none: its test set is its training set, and it is not tuned.
VALIDATION: dict[str, Sampler] = {
    "complex4d": _uniform_sampler(complex4d_target, 4),
    "nested2d": _uniform_sampler(nested2d_target, 2),
    "hifreq": _uniform_sampler(hifreq_target, 1),
    "spiral": _spiral_split,
    "checkerboard": _uniform_sampler(checkerboard_label, 2),
    "ood": _uniform_sampler(ood_target, 1),  # why: [-1, 1], the training range, not the OOD test range
    "freqgen": _freq_sampler(freqgen_target),
    "mixedfreq": _freq_sampler(mixedfreq_target),
}


@dataclass(frozen=True)
class TaskSpec(TaskInfo):
    """A declared task (``rnlib.core.catalog.TaskInfo``) with the function that draws its tensors."""

    generate: Callable[[torch.Generator], Draws] = field(repr=False)


def _registry() -> dict[str, TaskSpec]:
    """Every declared task with its generator; a declaration without one (or the reverse) stops the import."""
    if GENERATORS.keys() != CATALOG_TASKS.keys():
        odd = sorted(GENERATORS.keys() ^ CATALOG_TASKS.keys())
        raise ImportError(f"tasks {odd} need both a catalog row (rnlib.core.catalog) and a generator (here)")
    return {name: TaskSpec(**asdict(info), generate=GENERATORS[name]) for name, info in CATALOG_TASKS.items()}


TASKS = _registry()


# ---------------------------------------------------------------- the task a model sees
@dataclass(frozen=True)
class Task:
    """One task's data for one seed: x float32 (N, in_dim); y float32 (N, out_dim) or int64 (N,)."""

    name: str
    kind: str
    metric: str
    in_dim: int
    out_dim: int
    default_budget: int
    n_train: int
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    x_id_test: Tensor | None = None  # only `ood`: in-distribution test split
    y_id_test: Tensor | None = None
    x_val: Tensor | None = None  # validation split from the training distribution (None for `memorize`)
    y_val: Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.metric != METRICS[self.kind]:
            raise ValueError(f"task {self.name!r}: bad kind/metric {self.kind!r}/{self.metric!r}")
        for x, y in (("x_id_test", "y_id_test"), ("x_val", "y_val")):
            if (getattr(self, x) is None) != (getattr(self, y) is None):
                raise ValueError(f"task {self.name!r}: {x} and {y} must both be set or both None")
        splits = [(self.x_train, self.y_train), (self.x_test, self.y_test)]
        splits += [
            (x, y) for x, y in ((self.x_id_test, self.y_id_test), (self.x_val, self.y_val)) if x is not None
        ]
        for x, y in splits:
            n = x.shape[0]
            y_shape, y_dtype = ((n,), torch.int64) if self.n_classes else ((n, self.out_dim), torch.float32)
            ok_x = x.dtype == torch.float32 and tuple(x.shape) == (n, self.in_dim)
            if not ok_x or y.dtype != y_dtype or tuple(y.shape) != y_shape:
                raise ValueError(
                    f"task {self.name!r}: got x {x.dtype} {tuple(x.shape)}, y {y.dtype} {tuple(y.shape)}; "
                    f"want x float32 {(n, self.in_dim)}, y {y_dtype} {y_shape}"
                )
        if self.x_train.shape[0] != self.n_train:
            raise ValueError(
                f"task {self.name!r}: n_train={self.n_train} but x_train has {len(self.x_train)}"
            )

    @property
    def n_classes(self) -> int:
        """2 for classification (2 logits), 0 otherwise."""
        return 2 if self.kind == "classification" else 0

    @property
    def n_test(self) -> int:
        """Number of test points."""
        return self.x_test.shape[0]

    def trivial_value(self) -> float:
        """The test metric of a model that learned nothing (protocol §4's trivial reference).

        MSE tasks: the better of predicting 0 and predicting the training targets' mean (per output);
        classification: the accuracy of always answering the training set's majority class (0 on a tie).
        """
        if self.n_classes:
            majority = int(torch.bincount(self.y_train, minlength=self.n_classes).argmax())
            return float((self.y_test == majority).double().mean())
        y, mean = self.y_test.double(), self.y_train.double().mean(0)
        return min(float(y.square().mean()), float((y - mean).square().mean()))

    def __repr__(self) -> str:
        def shape(t: Tensor | None) -> str:
            return "None" if t is None else "x".join(map(str, t.shape))

        extra = f", id_test={shape(self.x_id_test)}" if self.x_id_test is not None else ""
        return (
            f"Task({self.name!r}, {self.kind}, {self.metric}, {self.in_dim}->{self.out_dim}, "
            f"train={shape(self.x_train)}->{shape(self.y_train)}, test={shape(self.x_test)}{extra}, "
            f"budget={self.default_budget})"
        )


def task_names() -> list[str]:
    """Registered task names in protocol §4 order."""
    return list(TASKS)


def generator_seed(name: str, seed: int) -> int:
    """The 32-bit CPU generator seed for (task, seed): (crc32(name) + seed) mod 2**32."""
    return (zlib.crc32(name.encode()) + seed) % 2**32


def make_task(name: str, seed: int) -> Task:
    """Draw task `name`'s tensors from `seed`; the same (name, seed) gives bit-identical tensors anywhere."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an int in [0, {MAX_SEED}], got {seed!r}")
    spec = TASKS[name]
    gen = torch.Generator(device="cpu").manual_seed(generator_seed(name, seed))
    draws = spec.generate(gen)
    if name in VALIDATION:  # after every train/test draw: those keep their bits
        draws["x_val"], draws["y_val"] = VALIDATION[name](gen, len(draws["x_test"]))
    # why one cast per distinct tensor: memorize's test tensors stay the very same objects as its train ones
    cast: dict[int, Tensor] = {}
    for t in draws.values():
        if id(t) not in cast:
            cast[id(t)] = t if t.dtype == torch.int64 else t.to(torch.float32)
    tensors = {key: cast[id(t)] for key, t in draws.items()}
    return Task(
        name=spec.name,
        kind=spec.kind,
        metric=spec.metric,
        in_dim=spec.in_dim,
        out_dim=spec.out_dim,
        default_budget=spec.default_budget,
        n_train=spec.n_train,
        **tensors,
    )
