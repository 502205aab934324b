"""The fused CPU step (rnlib.training.fused) against autograd on the same batched model: loss, every gradient.

Autograd differentiates the layers' protocol equations as ``rnlib.core.neurons`` writes them, with none of the
C passes' hand-derived backward, so a wrong derivative, a swapped vector or a missed bias shows up here.
Weights and per-unit vectors are perturbed away from their initial values first (``β = γ = 1``, LayerNorm's 1
and 0 would hide a swapped factor). The neurons tested are those the built library names
(``fused_neurons()``); a registered neuron without a C entry trains with autograd. The guard
(``fused.disagreement``) repeats a small form of this comparison in every process before the fused step
trains a neuron.
"""

import subprocess
import warnings
from dataclasses import replace

import pytest
import torch

from rnlib.core import neurons
from rnlib.core.metrics import replica_loss
from rnlib.core.models import RichNet, build_model
from rnlib.core.neurons import NEURONS, Matrix, NeuronLayer, V10FreePhase
from rnlib.core.tasks import make_task
from rnlib.provenance import STEP_KINDS, cpu_flags, fused_support
from rnlib.training import fused
from rnlib.training.trainer import FlatAdam, TrainConfig, stack_tasks, train, train_models

LIB, WHY = fused.load()
needs_fused = pytest.mark.skipif(LIB is None, reason=f"fused passes unavailable here: {WHY}")
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


@needs_fused
@pytest.mark.parametrize("task, depth, omega", CASES)
@pytest.mark.parametrize("neuron", fused.fused_neurons())
def test_fused_step_equals_autograd(neuron, task, depth, omega):
    """Loss and every parameter's gradient equal autograd's to float32 rounding."""
    (ref, fused_model), x, y, metric = perturbed(neuron, task, depth, omega)
    adams = [FlatAdam(list(m.parameters()), (0.9, 0.999), 1e-8) for m in (ref, fused_model)]
    adams[0].zero_grad()
    loss = replica_loss(ref(x), y, metric)
    loss.sum().backward()
    step = fused.FusedStep(fused_model, x, y, metric)
    adams[1].grad.fill_(float("nan"))  # every gradient must be written by the step
    torch.testing.assert_close(step(), loss.detach(), rtol=1e-5, atol=1e-7)
    for (name, p), q in zip(ref.named_parameters(), fused_model.parameters(), strict=True):
        scale = p.grad.abs().max().item()
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5 * scale, msg=f"gradient of {name}")


@needs_fused
def test_the_library_names_its_neurons_and_limits():
    """The C table, read by name: ids in order, names unique and registered, saved-row counts the passes
    hold to (a wrong count is an error, not a silent skip); widths above ``rn_max_width`` stay on autograd."""
    table = fused.table()
    assert [entry.id for entry in table.values()] == list(range(LIB.rn_neuron_count()))
    assert tuple(table) == fused.fused_neurons() and set(table) <= set(NEURONS)
    assert all(0 <= entry.saved <= 5 for entry in table.values())
    assert LIB.rn_neuron_name(len(table)) is None and LIB.rn_saved_rows(-1) == -1
    (model, _), x, y, metric = perturbed("v10_free_phase", "nested2d", 2, 1.0, (0,))
    FlatAdam(list(model.parameters()), (0.9, 0.999), 1e-8)
    step = fused.FusedStep(model, x, y, metric)
    step.layers[0].saved_ptr = fused.addresses(step.layers[0].saved[:-1])
    step.layers[0].saved = step.layers[0].saved[:-1]
    with pytest.raises(RuntimeError, match="rn_forward failed"):
        step()
    wide = RichNet("vanilla", 1, 1, width=LIB.rn_max_width() + 1, depth=1)
    assert f"above the fused passes' {LIB.rn_max_width()}" in fused.unsupported(wide, "cpu", "auto")


def test_fused_support_says_why_without_compiling(monkeypatch, tmp_path):
    """``fused_support`` reads the environment, the CPU and PATH only: it never runs the compiler."""
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("fused_support compiled"))
    monkeypatch.setenv("RNLIB_STEP", "autograd")
    assert fused_support() == "RNLIB_STEP=autograd"
    monkeypatch.setenv("RNLIB_STEP", "auto")
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    if {"avx2", "fma"} <= cpu_flags():
        assert fused_support() == "no C compiler (gcc or cc) on PATH"
    else:
        assert "AVX2 and FMA" in fused_support()
    monkeypatch.setenv("RNLIB_FUSED_DIR", str(tmp_path / "built"))
    assert fused.build_dir() == tmp_path / "built"


@needs_fused
@pytest.mark.parametrize("neuron", fused.fused_neurons())
def test_the_guard_passes_every_fused_neuron_and_leaves_the_rng_alone(neuron):
    """Every head and first-layer kind agrees with autograd at the guard's size; the check draws from its own
    generator, so the process's RNG state (and any training around it) is untouched."""
    cls, state = neurons.neuron_class(neuron), torch.get_rng_state()
    for head in fused.HEADS:
        for thin in (True, False):
            assert fused.check.__wrapped__(neuron, cls, cls.activate, head, thin) == ""
    assert torch.equal(torch.get_rng_state(), state)


@needs_fused
def test_the_guard_catches_a_patched_activation_and_trains_it_with_autograd(monkeypatch):
    """A notebook that changes ``V10FreePhase.activate`` (here by 1e-3) no longer matches the C passes: the
    guard warns once, naming the neuron and the largest difference, and ``auto`` then trains it with
    autograd, bit for bit as ``step="autograd"``; ``step="fused"`` refuses it."""
    original = V10FreePhase.activate
    monkeypatch.setattr(V10FreePhase, "activate", lambda self, z: original(self, z) + 1e-3)
    monkeypatch.setattr(fused, "FAILED", {})
    config = TrainConfig(steps=20, record_every=0)
    warned = r"on v10_free_phase .*largest difference \d\.\d\de[-+]\d\d"
    with pytest.warns(RuntimeWarning, match=warned) as seen:
        auto, auto_results = train_models("v10_free_phase", "nested2d", [0, 1], config=config)
    assert len(seen) == 1, [str(w.message) for w in seen]
    slow_config = replace(config, step="autograd")
    slow, slow_results = train_models("v10_free_phase", "nested2d", [0, 1], config=slow_config)
    assert [(r.curve, r.value, r.train_value) for r in auto_results] == [
        (r.curve, r.value, r.train_value) for r in slow_results
    ]
    assert all(torch.equal(p, q) for p, q in zip(auto.parameters(), slow.parameters(), strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per neuron: the verdict stands for the rest of the process
        again = train("v10_free_phase", "spiral", [0], config=config)
        with pytest.raises(ValueError, match=r"step='fused' cannot train v10_free_phase .*disagrees"):
            train("v10_free_phase", "nested2d", [0], config=replace(config, step="fused"))
    assert again[0].steps == 20


def test_a_neuron_without_a_c_entry_trains_with_autograd(monkeypatch):
    """A neuron registered now (a notebook's, or one added to rnlib.core.neurons without C) has no fused
    form: ``auto`` trains it with autograd, without error or warning, bit for bit as ``step="autograd"``."""

    class Throwaway(NeuronLayer):
        matrices = (Matrix("g", periodic=True), Matrix("v"))

        def activate(self, z):
            return torch.cos(self.scaled(z["g"])) * z["v"]

    monkeypatch.setitem(neurons.NEURONS, "throwaway", Throwaway)
    config = TrainConfig(steps=10, record_every=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, auto = train_models("throwaway", "nested2d", [0, 1], config=config)
    assert "throwaway" not in fused.fused_neurons()
    if LIB is not None:
        assert "throwaway has no fused form" in fused.unsupported(model, "cpu", "auto")
    slow = train("throwaway", "nested2d", [0, 1], config=replace(config, step="autograd"))
    assert [r.curve for r in auto] == [r.curve for r in slow] and all(r.steps == 10 for r in auto)


@needs_fused
def test_trainer_takes_the_fused_step_and_falls_back_by_name():
    """``auto`` trains fused models with the C passes (bit-identical to ``step='fused'``), and v4_lowrank,
    which has no C entry, with autograd; ``step='fused'`` on it is an error naming the neuron."""
    fast = TrainConfig(steps=30, record_every=0)
    auto, forced, slow = (
        train("v10_free_phase", "nested2d", [0, 1], config=replace(fast, step=k)) for k in STEP_KINDS
    )  # auto, fused, autograd
    assert [r.curve for r in auto] == [r.curve for r in forced]
    assert [r.curve for r in auto] != [r.curve for r in slow]  # another implementation: rounding differs
    for a, s in zip(auto, slow, strict=True):
        assert a.value == pytest.approx(s.value, rel=1e-3)
    low = train_models("v4_lowrank", "nested2d", [0], config=fast)[0]
    assert "no fused form" in fused.unsupported(low, "cpu", "auto")
    with pytest.raises(ValueError, match="step='fused' cannot train v4_lowrank"):
        train("v4_lowrank", "nested2d", [0], config=TrainConfig(steps=1, step="fused"))
    with pytest.raises(ValueError, match="unknown step 'c'; valid: auto, fused, autograd"):
        TrainConfig(step="c")


@needs_fused
@pytest.mark.parametrize("seeds", [(0,), SEEDS], ids=["M1", "M3"])
@pytest.mark.parametrize("neuron", fused.fused_neurons())
def test_fused_step_gives_the_same_bits_at_every_thread_count(neuron, seeds):
    """The C passes split rows and blocks of points over threads; the losses and every gradient are
    bit-identical on 1, 2 and 3 threads. Regression (the C head, thin first layer) at depth 3 on 1000 points,
    which 64-point blocks do not divide. With one replica, two threads sum blocks of the same replica at
    once, so a sum shared between threads would lose updates. The passes' thread count is set on the step
    while PyTorch stays on one thread: MKL splits a single GEMM (M = 1) differently on 3 threads, which is
    PyTorch's business, not the passes'."""
    (model, _), x, y, metric = perturbed(neuron, "nested2d", 3, 2.5, seeds)
    adam = FlatAdam(list(model.parameters()), (0.9, 0.999), 1e-8)
    step, seen = fused.FusedStep(model, x, y, metric), []
    assert step.threads == torch.get_num_threads()
    for threads in (1, 2, 3):
        step.threads = threads
        adam.grad.fill_(float("nan"))
        seen.append((step().clone(), adam.grad.clone()))
    for loss, grad in seen[1:]:
        assert torch.equal(loss, seen[0][0]) and torch.equal(grad, seen[0][1])


@pytest.mark.slow
@needs_fused
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


@needs_fused
def test_keys_know_the_step_from_the_source_table_without_compiling(monkeypatch):
    """Cache keys read fused.c's table from its text; it names exactly the neurons the built library has,
    so a neuron's key says the step that trains it (v4_lowrank, with no C entry: autograd under auto)."""
    assert fused.source_neurons() == set(fused.fused_neurons())
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("step_for compiled"))
    assert fused.step_for("singlu", "auto") == "fused" and fused.step_for("singlu", "autograd") == "autograd"
    assert fused.step_for("v4_lowrank", "auto") == "autograd"
    assert fused.step_for("singlu", "auto", device="cuda:0") == "autograd"
