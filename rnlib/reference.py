"""The naive reference: one model and one ``torch.optim.Adam`` per seed, trained one after another.

Not used by the study. Tests check the batched trainer against it, and ``benchmarks/train_throughput.py``
measures the trainer's speed-up over it. It shares only the model definition with the trainer: data
stacking, loss, optimizer, schedule and divergence handling are all PyTorch's stock pieces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import CosineAnnealingLR

from rnlib.models import RichNet, build_model
from rnlib.tasks import make_task


def naive_train(
    neuron: str,
    task: str,
    seed: int,
    *,
    steps: int,
    lr: float = 1e-3,
    budget: int | None = None,
    width: int | None = None,
    **options: object,
) -> tuple[RichNet, list[float]]:
    """Train one model the textbook way; return it and its per-step training loss."""
    t = make_task(task, seed)
    if budget is None and width is None:
        budget = t.default_budget
    model = build_model(neuron, t.in_dim, t.out_dim, budget=budget, width=width, seed=seed, **options)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = CosineAnnealingLR(opt, T_max=steps)
    loss_fn = F.mse_loss if t.metric == "mse" else F.cross_entropy
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(t.x_train), t.y_train)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model, losses
