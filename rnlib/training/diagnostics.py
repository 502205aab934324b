"""Training-time diagnostics recorded as trainer callbacks: gradient norms by role and by layer, and the
statistics of each neuron's internal quantities (gates, phases, frequencies) over probe inputs.

Series are keyed ``grad/<role>``, ``grad/layer<i>`` and ``L<i>.<probe>/<stat>``; ``step`` holds the steps.
Raw samples of every probe at the first and last recording (``L<i>.<probe>@first``/``@last``) feed the
distribution plots; the correlation between ``g`` and the phase term is a series of its own.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnlib.training.trainer import TrainState

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)  # the bands drawn over training
SAMPLE_VALUES = 512  # raw values kept per probe and replica at the first and last recording (cache size)


def replica_sq_norm(t: Tensor) -> Tensor:
    """Sum of squares over every axis but the leading replica axis: (M, ...) -> (M,)."""
    return t.detach().float().pow(2).flatten(1).sum(1)


def record_steps(state: TrainState) -> None:
    """Log the step number itself, so every series can be drawn against it."""
    state.log("step", torch.full((state.model.replicas,), float(state.step)))


def record_grad_norms(state: TrainState) -> None:
    """Per-replica gradient norm of each parameter role (direct, meta, norm, head) and of each layer."""
    for role, params in state.model.param_groups().items():
        state.log(f"grad/{role}", sum(replica_sq_norm(p.grad) for _, p in params).sqrt())
    for i, layer in enumerate(state.model.layers):
        state.log(f"grad/layer{i}", sum(replica_sq_norm(p.grad) for p in layer.parameters()).sqrt())
    state.log(f"grad/layer{len(state.model.layers)}", (replica_sq_norm(state.model.head_W.grad)).sqrt())


def unit_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation over inputs, per unit: (M, P, W) x2 -> (M, W)."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


@torch.no_grad()
def record_probes(state: TrainState) -> None:
    """Quantiles, mean |value| and first/last raw samples of every probe each layer exposes."""
    model = state.model
    model.set_recording(True)
    try:
        model(state.x_probe)
        probes = [dict(layer.probes) for layer in model.layers]
    finally:
        model.set_recording(False)
    first = state.step == 0  # the trainer always records step 0
    for i, named in enumerate(probes):
        for name, t in named.items():  # (M, P, width)
            flat = t.flatten(1).float()
            qs = torch.quantile(flat, torch.tensor(QUANTILES, device=flat.device), dim=1)  # (Q, M)
            for q, row in zip(QUANTILES, qs, strict=True):
                state.log(f"L{i}.{name}/q{round(q * 100):02d}", row)
            state.log(f"L{i}.{name}/mean", flat.mean(1))
            state.log(f"L{i}.{name}/absmean", flat.abs().mean(1))
            keep_samples(state, f"L{i}.{name}", flat[:, :SAMPLE_VALUES], first)
        if "g" in named and "phase" in named:
            corr = unit_correlation(named["g"].float(), named["phase"].float())  # (M, width)
            state.log(f"L{i}.corr_g_phase/mean", corr.nan_to_num().mean(1))
            keep_samples(state, f"L{i}.corr_g_phase", corr, first)


def keep_samples(state: TrainState, key: str, values: Tensor, first: bool) -> None:
    """Store raw values (M, K) as ``key@first`` on the first recording and ``key@last`` on every later one."""
    for d, row in zip(state.diagnostics, values.tolist(), strict=True):
        d[f"{key}@first" if first else f"{key}@last"] = [float(f"{v:.5g}") for v in row]  # 5 digits: plots


DEFAULT_RECORDERS = (record_steps, record_grad_norms, record_probes)
