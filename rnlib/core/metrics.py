"""Losses and metrics per replica: every function maps (M, N, ·) predictions to an (M,) tensor."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

METRICS = ("mse", "accuracy")


def replica_loss(pred: Tensor, y: Tensor, metric: str) -> Tensor:
    """Each replica's own training loss: MSE for regression, cross-entropy for classification."""
    if metric == "mse":
        return (pred - y).square().mean(dim=(1, 2))  # (M,)
    m, n, c = pred.shape
    return F.cross_entropy(pred.reshape(m * n, c), y.reshape(m * n), reduction="none").view(m, n).mean(1)


def replica_metric(pred: Tensor, y: Tensor, metric: str) -> Tensor:
    """Each replica's reported metric: test MSE, or accuracy in [0, 1]."""
    if metric == "mse":
        return (pred - y).square().mean(dim=(1, 2))
    if metric == "accuracy":
        return (pred.argmax(-1) == y).float().mean(1)
    raise KeyError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")


def cosine_lr(lr: float, step: int, steps: int) -> float:
    """Learning rate at ``step`` of ``steps``: cosine decay from ``lr`` to 0 (protocol §5)."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
