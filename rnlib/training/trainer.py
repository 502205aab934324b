"""One batched trainer: the seeds of one neuron on one task train together as a single tensor program.

Every replica is trained exactly as it would be alone: its own data and initialisation from its seed, its own
Adam state (Adam is elementwise, so one update over the stacked parameters is M independent updates), and
the summed loss gives each replica the gradient of its own loss. Nothing couples replicas: no shared loss
scale, clipping or early stop. A replica that diverges (NaN/inf) is recorded with its step; its NaNs stay in
its own slice and the others carry on bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
from torch import Tensor, nn

from rnlib.core.metrics import cosine_lr, replica_loss, replica_metric
from rnlib.core.models import DEFAULT_DEPTH, RichNet, build_model, count_params
from rnlib.core.tasks import Task, make_task
from rnlib.provenance import STEP_KINDS
from rnlib.training import fused, runtime


@dataclass(frozen=True)
class TrainConfig:
    """The training protocol (protocol §5); every field is part of the result cache key."""

    steps: int = 3000  # protocol §5
    lr: float = 1e-3  # protocol §5: peak learning rate, cosine-decayed to 0 over `steps`
    betas: tuple[float, float] = (0.9, 0.999)  # torch.optim.Adam's defaults
    eps: float = 1e-8  # torch.optim.Adam's default
    record_every: int = 100  # diagnostics every this many steps (0 = off): 30 snapshots over 3000 steps
    curve_points: int = 150  # loss-curve samples kept per replica: enough to draw, small to store
    probe_points: int = 256  # test inputs the diagnostics look at: cheap, and plenty for quantiles
    device: str = "cpu"
    step: str = "auto"  # how a step is computed: "fused" (rnlib.training.fused), "autograd", or "auto" (fused
    # where this machine and the model allow it); RNLIB_STEP in the environment sets "auto"'s answer

    def __post_init__(self) -> None:
        if self.step not in STEP_KINDS:
            raise ValueError(
                f"invalid TrainConfig: unknown step {self.step!r}; valid: {', '.join(STEP_KINDS)}"
            )
        if self.steps < 1 or self.lr <= 0 or self.record_every < 0 or self.curve_points < 2:
            raise ValueError(f"invalid TrainConfig: {self}")
        if not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1) or self.eps <= 0:
            raise ValueError(f"invalid Adam settings in TrainConfig: betas={self.betas}, eps={self.eps}")


@dataclass
class RunResult:
    """One trained replica: what protocol §7 records, plus its loss curve and diagnostics."""

    neuron: str
    task: str
    seed: int
    width: int
    params: int
    metric: str
    value: float  # test metric (NaN when diverged)
    train_value: float
    id_value: float | None  # `ood` only: in-distribution test MSE
    steps: int
    diverged: bool
    diverged_step: int | None
    seconds: float  # the batch's wall time divided by its replicas
    stopped: str | None = None  # why a ``Stop`` ended this replica early ("fitted", "plateau", ...)
    val_value: float | None = None  # the metric on the validation split (protocol §4); None without one
    curve: list[tuple[int, float]] = field(default_factory=list)
    diagnostics: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class TrainState:
    """What a callback sees at a recording step: gradients are populated, the update not yet applied."""

    step: int
    model: RichNet
    losses: Tensor  # (M,)
    x_probe: Tensor  # (M, P, in)
    diagnostics: list[dict[str, list[float]]]  # one dict per replica, series keyed by name

    def log(self, name: str, values: Tensor) -> None:
        """Append one value per replica to the series ``name``."""
        for d, v in zip(self.diagnostics, values.tolist(), strict=True):
            d.setdefault(name, []).append(v)


Callback = Callable[[TrainState], None]


class Stop(Protocol):
    """An early stop, checked every ``every`` steps after the update; part of the result cache key.

    ``reasons(step, losses, train_metric)`` gets the steps done so far, each replica's loss curve up to them
    ``(step, M)`` and its training metric now ``(M,)``; it returns one reason per replica, "" to go on. A
    replica's result is frozen at its first reason (its metrics then, ``steps`` = that step), whatever the
    batch does afterwards, so it never depends on which seeds it trained with; the batch ends when every
    replica has one.
    """

    every: int

    def reasons(self, step: int, losses: Tensor, train_metric: Tensor) -> list[str]: ...


class FlatAdam:
    """Adam over one flat buffer that holds every parameter (as views) and every gradient.

    The update is PyTorch's fused Adam op (``torch._fused_adam_``, what ``torch.optim.Adam(fused=True)``
    calls) on that one buffer: one pass over the parameters per step instead of ~10 op calls per parameter
    tensor. At these model sizes the launches cost more than the arithmetic: 15K parameters update in ~9 µs
    against ~125 µs for the six-call unfused form. Same update rule as ``torch.optim.Adam``; the summation
    order of its arithmetic differs at float32 rounding.
    """

    def __init__(self, params: Sequence[nn.Parameter], betas: tuple[float, float], eps: float) -> None:
        params = list(params)
        ref = params[0]
        self.flat = torch.empty(sum(p.numel() for p in params), dtype=ref.dtype, device=ref.device)
        self.grad = torch.zeros_like(self.flat)
        offset = 0
        for p in params:
            k = p.numel()
            self.flat[offset : offset + k].copy_(p.detach().reshape(-1))
            p.data = self.flat[offset : offset + k].view_as(p)
            p.grad = self.grad[offset : offset + k].view_as(p)  # autograd accumulates in place here
            offset += k
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.state_step = torch.zeros((), device=ref.device)  # a float32 tensor, as torch.optim.Adam keeps it
        self.betas, self.eps = betas, eps

    def zero_grad(self) -> None:
        """Zero every gradient in one call."""
        self.grad.zero_()

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """One Adam update with learning rate ``lr``."""
        self.state_step += 1
        torch._fused_adam_(
            [self.flat], [self.grad], [self.exp_avg], [self.exp_avg_sq], [], [self.state_step],
            amsgrad=False, lr=lr, beta1=self.betas[0], beta2=self.betas[1], weight_decay=0.0, eps=self.eps,
            maximize=False,
        )  # fmt: skip


def stack_tasks(tasks: Sequence[Task], device: str) -> dict[str, Tensor]:
    """Stack each seed's own data along a leading replica axis: name -> (M, N, ·)."""
    names = ["x_train", "y_train", "x_test", "y_test"]
    if tasks[0].x_id_test is not None:
        names += ["x_id_test", "y_id_test"]
    if tasks[0].x_val is not None:
        names += ["x_val", "y_val"]
    return {k: torch.stack([getattr(t, k) for t in tasks]).to(device) for k in names}


def first_nonfinite(losses: Tensor) -> list[int | None]:
    """Per replica, the first step whose loss is NaN or inf: (steps, M) -> M entries."""
    bad = ~torch.isfinite(losses)
    first = torch.where(bad.any(0), bad.float().argmax(0), torch.full_like(bad[0], -1, dtype=torch.long))
    return [None if s < 0 else int(s) for s in first.tolist()]


def fused_step(
    model: RichNet, x: Tensor, y: Tensor, metric: str, config: TrainConfig
) -> fused.FusedStep | None:
    """The fused step for ``model`` when ``config.step`` and the model allow it, else ``None`` (autograd).

    Call after ``FlatAdam`` holds the parameters. ``step="fused"`` on a model it cannot take is an error, as
    is a neuron whose fused step disagrees with autograd (``fused.disagreement``; ``auto`` trains it with
    autograd).
    """
    why = fused.unsupported(model, config.device, config.step) or fused.disagreement(model, metric)
    if why and config.step == "fused":
        raise ValueError(f"step='fused' cannot train {model.neuron} (width {model.width}): {why}")
    return None if why else fused.FusedStep(model, x, y, metric)


FROZEN_SPLITS = {"value": "test", "id_value": "id_test", "val_value": "val"}  # RunResult field -> split


class Frozen:
    """Each replica's result at its first stop reason: what ``train_models`` reports under a ``Stop``."""

    def __init__(self, stop: Stop, data: dict[str, Tensor], metric: str) -> None:
        self.stop, self.data, self.metric = stop, data, metric
        self.at: dict[int, dict] = {}  # replica -> its frozen fields

    @torch.no_grad()
    def check(self, step: int, model: RichNet, losses: Tensor) -> bool:
        """Ask the stop about the ``step`` steps done; freeze newly stopped replicas; True when all are."""
        d = self.data
        train_metric = replica_metric(model(d["x_train"]), d["y_train"], self.metric)
        reasons = self.stop.reasons(step, losses[:step], train_metric)
        new = [m for m, why in enumerate(reasons) if why and m not in self.at]
        if new:
            splits = {
                name: replica_metric(model(d[f"x_{split}"]), d[f"y_{split}"], self.metric)
                for name, split in FROZEN_SPLITS.items()
                if f"x_{split}" in d
            }
            for m in new:
                self.at[m] = {name: float(v[m]) for name, v in splits.items()}
                self.at[m].update(train_value=float(train_metric[m]), steps=step, stopped=reasons[m])
        return len(self.at) == model.replicas

    def apply(self, results: list[RunResult], losses: Tensor) -> list[RunResult]:
        """``results`` with every stopped replica's metrics, steps, divergence and curve as at its stop."""
        out = []
        for m, r in enumerate(results):
            if m in self.at:
                at = self.at[m]
                bad = first_nonfinite(losses[: at["steps"], m : m + 1])[0]  # what came after is not its own
                r = replace(r, **at, diverged=bad is not None, diverged_step=bad,
                            curve=[(s, c) for s, c in r.curve if s < at["steps"]])  # fmt: skip
            out.append(r)
        return out


def train(neuron: str, task: str, seeds: Sequence[int], **kwargs: object) -> list[RunResult]:
    """Train one replica per seed of ``neuron`` on ``task``, all at once; one ``RunResult`` per seed."""
    return train_models(neuron, task, seeds, **kwargs)[1]


def train_models(
    neuron: str,
    task: str | Callable[[int], Task],
    seeds: Sequence[int],
    *,
    budget: int | None = None,
    width: int | None = None,
    depth: int = DEFAULT_DEPTH,
    omega: float = 1.0,
    init: str = "default",
    config: TrainConfig = TrainConfig(),
    callbacks: Sequence[Callback] = (),
    stop: Stop | None = None,
) -> tuple[RichNet, list[RunResult]]:
    """As ``train``, also returning the trained batched model (replica ``m`` is ``seeds[m]``).

    ``task`` is a registry name or a function from seed to ``Task`` (for data made elsewhere, e.g. capacity).
    ``stop`` ends replicas early (capacity probes); without it every replica trains ``config.steps`` steps.
    """
    runtime.retain_freed_memory()
    start = time.perf_counter()
    tasks = [make_task(task, s) if isinstance(task, str) else task(s) for s in seeds]
    spec = tasks[0]
    if budget is None and width is None:
        budget = spec.default_budget
    model = build_model(
        neuron, spec.in_dim, spec.out_dim, budget=budget, width=width, depth=depth, seeds=seeds,
        omega=omega, init=init,
    ).to(config.device)  # fmt: skip
    data = stack_tasks(tasks, config.device)
    x, y = data["x_train"], data["y_train"]  # (M, N, in), (M, N, out) or (M, N)
    adam = FlatAdam(list(model.parameters()), config.betas, config.eps)
    losses = torch.empty(config.steps, len(seeds), device=config.device)  # (steps, M)
    diagnostics: list[dict[str, list[float]]] = [{} for _ in seeds]
    recording = config.record_every > 0 and callbacks
    x_probe = data["x_test"][:, : config.probe_points]
    fast = fused_step(model, x, y, spec.metric, config)
    frozen = Frozen(stop, data, spec.metric) if stop is not None else None
    for step in range(config.steps):
        if fast is not None:
            loss = fast()  # (M,); overwrites every gradient
        else:
            adam.zero_grad()
            loss = replica_loss(model(x), y, spec.metric)  # (M,)
            loss.sum().backward()
        losses[step] = loss.detach()
        if recording and (step % config.record_every == 0 or step == config.steps - 1):
            state = TrainState(step, model, loss.detach(), x_probe, diagnostics)
            for cb in callbacks:
                cb(state)
        adam.step(cosine_lr(config.lr, step, config.steps))
        done = step + 1
        if frozen is not None and done % frozen.stop.every == 0 and frozen.check(done, model, losses):
            losses = losses[:done]
            break
    results = evaluate(model, data, spec, losses, config)
    if frozen is not None:
        results = frozen.apply(results, losses)
    seconds = (time.perf_counter() - start) / len(seeds)
    for r, d in zip(results, diagnostics, strict=True):
        r.seconds, r.diagnostics = seconds, d
    return model, results


@torch.no_grad()
def evaluate(
    model: RichNet, data: dict[str, Tensor], spec: Task, losses: Tensor, config: TrainConfig
) -> list[RunResult]:
    """Final metrics per replica, divergence and the sub-sampled loss curve of the steps done (``losses``)."""
    metric, steps = spec.metric, losses.shape[0]
    value = replica_metric(model(data["x_test"]), data["y_test"], metric).tolist()
    train_value = replica_metric(model(data["x_train"]), data["y_train"], metric).tolist()
    id_value = val_value = [None] * model.replicas
    if "x_id_test" in data:
        id_value = replica_metric(model(data["x_id_test"]), data["y_id_test"], metric).tolist()
    if "x_val" in data:
        val_value = replica_metric(model(data["x_val"]), data["y_val"], metric).tolist()
    bad_step = first_nonfinite(losses)
    keep = torch.linspace(0, steps - 1, min(config.curve_points, steps)).round().long()
    curve = losses[keep.to(losses.device)].cpu()  # (points, M)
    results = []
    for m, seed in enumerate(model.seeds):
        diverged = bad_step[m] is not None or not math.isfinite(value[m])
        results.append(
            RunResult(
                neuron=model.neuron,
                task=spec.name,
                seed=seed,
                width=model.width,
                params=count_params(model),
                metric=metric,
                value=value[m],
                train_value=train_value[m],
                id_value=id_value[m],
                val_value=val_value[m],
                steps=steps if bad_step[m] is None else bad_step[m],
                diverged=diverged,
                diverged_step=bad_step[m] if bad_step[m] is not None else (steps if diverged else None),
                seconds=0.0,
                curve=[(int(s), float(c)) for s, c in zip(keep.tolist(), curve[:, m].tolist(), strict=True)],
            )
        )
    return results
