"""The fused CPU step (rnlib.kernels) against autograd on the same batched model: losses and every gradient.

Autograd differentiates the layers' SPEC equations as ``rnlib.neurons`` writes them, with none of the C
passes' hand-derived backward, so a wrong derivative, a swapped vector or a missed bias shows up here. Weights
and per-unit vectors are perturbed away from their initial values first (``β = γ = 1``, LayerNorm's 1 and 0
would hide a swapped factor).
"""

from dataclasses import replace

import pytest
import torch

from rnlib import kernels
from rnlib.metrics import replica_loss
from rnlib.models import build_model
from rnlib.neurons import NEURONS
from rnlib.tasks import make_task
from rnlib.trainer import FlatAdam, TrainConfig, stack_tasks, train, train_models

LIB, WHY = kernels.load()
needs_kernels = pytest.mark.skipif(LIB is None, reason=f"fused passes unavailable here: {WHY}")
SEEDS = (0, 1, 2)
# (task, depth, ω): one-output MSE (the C head) at depth 3, ω = 2.5; four outputs from 8 inputs (memorize,
# PyTorch's head); cross-entropy at depth 1 (spiral); 4 inputs at ω = 5. (At ω = 30 with these perturbed
# weights the sine arguments reach ~100 and any two summation orders of g part by ~1e-4 of the largest
# gradient.)
CASES = [("nested2d", 3, 2.5), ("memorize", 2, 1.0), ("spiral", 1, 1.0), ("complex4d", 2, 5.0)]


def perturbed(neuron: str, task: str, depth: int, omega: float, seeds: tuple[int, ...] = SEEDS):
    """Two equal models on ``task``'s stacked data, parameters moved off their initial values."""
    spec = make_task(task, 0)
    models = [
        build_model(neuron, spec.in_dim, spec.out_dim, budget=3000, depth=depth, seeds=seeds, omega=omega)
        for _ in range(2)
    ]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
            q.copy_(p)
    data = stack_tasks([make_task(task, s) for s in seeds], "cpu")
    return models, data["x_train"], data["y_train"], spec.metric


@needs_kernels
@pytest.mark.parametrize("task, depth, omega", CASES)
@pytest.mark.parametrize("neuron", kernels.FUSED_NEURONS)
def test_fused_step_equals_autograd(neuron, task, depth, omega):
    """Loss and every parameter's gradient equal autograd's to float32 rounding."""
    (ref, fused_model), x, y, metric = perturbed(neuron, task, depth, omega)
    adams = [FlatAdam(list(m.parameters()), (0.9, 0.999), 1e-8) for m in (ref, fused_model)]
    adams[0].zero_grad()
    loss = replica_loss(ref(x), y, metric)
    loss.sum().backward()
    step = kernels.FusedStep(fused_model, x, y, metric)
    adams[1].grad.fill_(float("nan"))  # every gradient must be written by the step
    torch.testing.assert_close(step(), loss.detach(), rtol=1e-5, atol=1e-7)
    for (name, p), q in zip(ref.named_parameters(), fused_model.parameters(), strict=True):
        scale = p.grad.abs().max().item()
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5 * scale, msg=f"gradient of {name}")


def test_every_neuron_is_fused_or_named_as_not():
    """The C table, its saved-row counts and the registry agree; only v4_lowrank stays on autograd."""
    assert list(kernels.NEURON_IDS) == list(NEURONS)
    assert set(NEURONS) - set(kernels.FUSED_NEURONS) == {"v4_lowrank"}
    if LIB is not None:
        assert LIB.rn_max_width() == kernels.MAX_WIDTH
        assert [bool(LIB.rn_has_neuron(i)) for i in range(len(NEURONS))] == [
            n in kernels.FUSED_NEURONS for n in NEURONS
        ]


@needs_kernels
def test_trainer_takes_the_fused_step_and_falls_back_by_name():
    """``auto`` trains fused models with the C passes (bit-identical to ``kernel='fused'``), and v4_lowrank,
    which they do not cover, with autograd; ``kernel='fused'`` on it is an error naming the neuron."""
    fast = TrainConfig(steps=30, record_every=0)
    auto, forced, slow = (
        train("v10_free_phase", "nested2d", [0, 1], config=replace(fast, kernel=k)) for k in kernels.KERNELS
    )  # auto, fused, autograd
    assert [r.curve for r in auto] == [r.curve for r in forced]
    assert [r.curve for r in auto] != [r.curve for r in slow]  # another implementation: rounding differs
    for a, s in zip(auto, slow, strict=True):
        assert a.value == pytest.approx(s.value, rel=1e-3)
    low = train_models("v4_lowrank", "nested2d", [0], config=fast)[0]
    assert "no fused form" in kernels.unsupported(low, "cpu", "auto")
    with pytest.raises(ValueError, match="kernel='fused' cannot train v4_lowrank"):
        train("v4_lowrank", "nested2d", [0], config=TrainConfig(steps=1, kernel="fused"))
    with pytest.raises(ValueError, match="unknown kernel 'c'; valid: auto, fused, autograd"):
        TrainConfig(kernel="c")


@needs_kernels
@pytest.mark.parametrize("seeds", [(0,), SEEDS], ids=["M1", "M3"])
@pytest.mark.parametrize("neuron", kernels.FUSED_NEURONS)
def test_fused_step_gives_the_same_bits_at_every_thread_count(neuron, seeds):
    """The C passes split rows and blocks of points over threads; the losses and every gradient are
    bit-identical on 1, 2 and 3 threads. Regression (the C head, thin first layer) at depth 3 on 1000 points,
    which 64-point blocks do not divide. With one replica, two threads sum blocks of the same replica at
    once, so a sum shared between threads would lose updates. The passes' thread count is set on the step
    while PyTorch stays on one thread: MKL splits a single GEMM (M = 1) differently on 3 threads, which is
    PyTorch's business, not the passes'."""
    (model, _), x, y, metric = perturbed(neuron, "nested2d", 3, 2.5, seeds)
    adam = FlatAdam(list(model.parameters()), (0.9, 0.999), 1e-8)
    step, seen = kernels.FusedStep(model, x, y, metric), []
    assert step.threads == torch.get_num_threads()
    for threads in (1, 2, 3):
        step.threads = threads
        adam.grad.fill_(float("nan"))
        seen.append((step().clone(), adam.grad.clone()))
    for loss, grad in seen[1:]:
        assert torch.equal(loss, seen[0][0]) and torch.equal(grad, seen[0][1])


@needs_kernels
def test_fused_training_does_not_depend_on_threads():
    """200 steps of three replicas on one and on two threads: the same curves and metrics, bit for bit.
    (The autograd step does differ here in the last bits; tests/test_runtime.py holds it to that.)"""
    config, before, runs = TrainConfig(steps=200, record_every=20), torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(train("v10_free_phase", "mixedfreq", SEEDS, config=config))
    finally:
        torch.set_num_threads(before)
    assert [(r.curve, r.value, r.train_value) for r in runs[0]] == [
        (r.curve, r.value, r.train_value) for r in runs[1]
    ]
