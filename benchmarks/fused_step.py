"""What fusing the non-matmul work would buy: rnlib's training step against the same step with fused C passes.

A measurement of the lead left by issue 7, not a path rnlib takes. Workload: the throughput benchmark's (3
seeds on `mixedfreq`, 1000 points, default budget, full-batch Adam), for `vanilla` and `singlu` (ω = 1). Step
A is rnlib's trainer step (autograd over the batched model, fused Adam on the flat buffer). Step B computes
the same thing by hand: the hidden layer's matmuls stay PyTorch's (`baddbmm`/`bmm`), and everything else runs
as single-threaded C passes (`benchmarks/fused_step.c`, built here with gcc -O3 -ffp-contract=off): the
2-wide first layer with its activation; the second layer's activation (SinGLU); the one-output head, the MSE
loss and their backward into the second layer's pre-activations; the first layer's backward. SinGLU's `sin`
and `cos` are glibc's AVX2 vector functions (libmvec). Adam is the same fused kernel. Both start from the
same weights; after `--check` steps the script prints how far their weights are apart (float32 rounding: the
passes sum in another order, libmvec's `sin` is not ATen's) and fails above 1e-5 (longer runs part later, once
a ReLU input near 0 takes the other side, as any two implementations do). Then rounds of A and B alternate;
per neuron it prints medians, the range of the per-round ratios and B's parts, and last `fused: X.XX`, the
smaller of the neurons' ratios (median ms of A over B).

    .venv/bin/python benchmarks/fused_step.py [--neurons vanilla singlu] [--rounds 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from rnlib import runtime
from rnlib.metrics import cosine_lr, replica_loss
from rnlib.models import RichNet, build_model
from rnlib.tasks import make_task
from rnlib.trainer import FlatAdam, TrainConfig, stack_tasks

SOURCE = Path(__file__).with_name("fused_step.c")
SEEDS, TASK = (0, 1, 2), "mixedfreq"
CONFIG = TrainConfig()  # the protocol's Adam and its learning-rate schedule over a SPEC-length run
MAX_WIDTH = 4096  # the C passes' row buffer


def build(out_dir: Path) -> ctypes.CDLL:
    """Compile the C passes into a shared library in ``out_dir`` and load it."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        sys.exit("fused_step: no C compiler (gcc or cc) on PATH; this benchmark needs one")
    lib_path = out_dir / "libfused_step.so"
    flags = ["-O3", "-march=native", "-ffp-contract=off", "-fPIC", "-shared"]
    subprocess.run([cc, *flags, str(SOURCE), "-o", str(lib_path), "-lmvec", "-lm"], check=True)
    lib = ctypes.CDLL(str(lib_path))
    i64, ptr = ctypes.c_long, ctypes.c_void_p
    lib.layer1_forward.argtypes = [i64] * 4 + [ptr] * 4
    lib.head_mse.argtypes = [i64] * 3 + [ptr] * 9
    lib.layer1_backward.argtypes = [i64] * 4 + [ptr] * 5
    lib.singlu_activation.argtypes = [i64] + [ptr] * 5
    lib.singlu_layer1_forward.argtypes = [i64] * 4 + [ptr] * 10
    lib.singlu_head_mse.argtypes = [i64] * 3 + [ptr] * 14
    lib.singlu_layer1_backward.argtypes = [i64] * 4 + [ptr] * 9
    return lib


class AutogradStep:
    """rnlib's trainer step: autograd over the batched model, fused Adam over the flat buffer."""

    def __init__(self, model: RichNet, x: Tensor, y: Tensor) -> None:
        self.model, self.x, self.y = model, x, y
        self.adam = FlatAdam(list(model.parameters()), CONFIG.betas, CONFIG.eps)

    def __call__(self, step: int) -> None:
        self.adam.zero_grad()
        replica_loss(self.model(self.x), self.y, "mse").sum().backward()
        self.adam.step(cosine_lr(CONFIG.lr, step, CONFIG.steps))


class FusedStep:
    """A step by hand: ``parts`` run in order (PyTorch's matmuls, the fused C passes, the same fused Adam)."""

    def __init__(self, model: RichNet) -> None:
        self.adam = FlatAdam(list(model.parameters()), CONFIG.betas, CONFIG.eps)
        self.step = 0
        self.parts: list[tuple[str, Callable[[], object]]] = []
        self.seconds: dict[str, float] = collections.defaultdict(float)

    def __call__(self, step: int, timed: bool = False) -> None:
        self.step = step
        for name, run in self.parts:
            start = time.perf_counter() if timed else 0.0
            run()
            if timed:
                self.seconds[name] += time.perf_counter() - start

    def adam_step(self) -> None:
        self.adam.step(cosine_lr(CONFIG.lr, self.step, CONFIG.steps))


class FusedVanilla(FusedStep):
    """Vanilla: the three matmuls, three C passes (``layer1_forward``, ``head_mse``, ``layer1_backward``)."""

    def __init__(self, model: RichNet, x: Tensor, y: Tensor, lib: ctypes.CDLL) -> None:
        super().__init__(model)
        first, second = model.layers
        params = (first.W, first.b, second.W, second.b, model.head_W, model.head_b)
        w1, b1, w2, b2, wh, bh = (p.detach() for p in params)
        g_w1, g_b1, g_w2, g_b2, g_wh, g_bh = (p.grad for p in params)  # views into the flat gradient buffer
        (m, n, k), width = x.shape, model.width
        a1, a2, ga1, ga2 = (torch.empty(m, n, width) for _ in range(4))
        loss = torch.empty(m)
        self.parts = [
            ("layer 1 forward (C)",
             lambda: lib.layer1_forward(m, n, k, width, ptr(x), ptr(w1), ptr(b1), ptr(a1))),
            ("layer 2 matmul", lambda: torch.baddbmm(b2, a1, w2, out=a2)),
            ("layer 2 relu_", lambda: a2.relu_()),
            ("head + loss + backward (C)",
             lambda: lib.head_mse(m, n, width, ptr(a2), ptr(wh), ptr(bh), ptr(y), ptr(loss), ptr(ga2),
                                  ptr(g_wh), ptr(g_bh), ptr(g_b2))),
            ("layer 2 weight gradient", lambda: torch.bmm(a1.transpose(1, 2), ga2, out=g_w2)),
            ("layer 2 input gradient", lambda: torch.bmm(ga2, w2.transpose(1, 2), out=ga1)),
            ("layer 1 backward (C)",
             lambda: lib.layer1_backward(m, n, k, width, ptr(x), ptr(a1), ptr(ga1), ptr(g_w1), ptr(g_b1))),
            ("adam", self.adam_step),
        ]  # fmt: skip


class FusedSinGLU(FusedStep):
    """SinGLU at ω = 1: the six matmuls, four C passes with libmvec's vectorised ``sin``/``cos``."""

    def __init__(self, model: RichNet, x: Tensor, y: Tensor, lib: ctypes.CDLL) -> None:
        super().__init__(model)
        if model.layers[0].omega != 1.0:
            sys.exit("fused_step: the SinGLU passes are written for ω = 1")
        first, second = model.layers
        params = [getattr(layer, name) for layer in (first, second) for name in ("Wg", "bg", "Wv", "bv")]
        params += [model.head_W, model.head_b]
        wg1, bg1, wv1, bv1, wg2, bg2, wv2, bv2, wh, bh = (p.detach() for p in params)
        d_wg1, d_bg1, d_wv1, d_bv1, d_wg2, d_bg2, d_wv2, d_bv2, d_wh, d_bh = (p.grad for p in params)
        (m, n, k), width = x.shape, model.width
        g1, v1, s1, c1, h1, g2, v2, s2, c2, h2, dg2, dv2, gh1 = (torch.empty(m, n, width) for _ in range(13))
        loss, h1t = torch.empty(m), h1.transpose(1, 2)
        self.parts = [
            ("layer 1 forward (C)",
             lambda: lib.singlu_layer1_forward(m, n, k, width, ptr(x), ptr(wg1), ptr(bg1), ptr(wv1), ptr(bv1),
                                               ptr(g1), ptr(v1), ptr(s1), ptr(c1), ptr(h1))),
            ("layer 2 matmuls",
             lambda: (torch.baddbmm(bg2, h1, wg2, out=g2), torch.baddbmm(bv2, h1, wv2, out=v2))),
            ("layer 2 activation (C)",
             lambda: lib.singlu_activation(m * n * width, ptr(g2), ptr(v2), ptr(s2), ptr(c2), ptr(h2))),
            ("head + loss + backward (C)",
             lambda: lib.singlu_head_mse(m, n, width, ptr(h2), ptr(wh), ptr(bh), ptr(y), ptr(s2), ptr(c2),
                                         ptr(v2), ptr(loss), ptr(dg2), ptr(dv2), ptr(d_wh), ptr(d_bh),
                                         ptr(d_bg2), ptr(d_bv2))),
            ("layer 2 weight gradients",
             lambda: (torch.bmm(h1t, dg2, out=d_wg2), torch.bmm(h1t, dv2, out=d_wv2))),
            ("layer 2 input gradient",
             lambda: torch.bmm(dg2, wg2.transpose(1, 2), out=gh1).baddbmm_(dv2, wv2.transpose(1, 2))),
            ("layer 1 backward (C)",
             lambda: lib.singlu_layer1_backward(m, n, k, width, ptr(x), ptr(s1), ptr(c1), ptr(v1), ptr(gh1),
                                                ptr(d_wg1), ptr(d_bg1), ptr(d_wv1), ptr(d_bv1))),
            ("adam", self.adam_step),
        ]  # fmt: skip


FUSED = {"vanilla": FusedVanilla, "singlu": FusedSinGLU}


def ptr(t: Tensor) -> int:
    """The address of a contiguous tensor's data, for the C passes."""
    return t.data_ptr()


def measure(neuron: str, lib: ctypes.CDLL, args: argparse.Namespace) -> float:
    """Check one neuron's fused step against rnlib's, time both in alternating rounds; print; return A/B."""
    data = stack_tasks([make_task(TASK, s) for s in SEEDS], "cpu")
    x, y = data["x_train"].contiguous(), data["y_train"].contiguous()
    models = [build_model(neuron, x.shape[-1], y.shape[-1], budget=5000, seeds=SEEDS) for _ in range(2)]
    if models[0].width > MAX_WIDTH or y.shape[-1] != 1:
        sys.exit(f"fused_step: needs one output and width <= {MAX_WIDTH}")
    autograd, fused = AutogradStep(models[0], x, y), FUSED[neuron](models[1], x, y, lib)
    for step in range(args.check):
        autograd(step)
        fused(step)
    apart = max(
        ((a - b).abs().max() / a.abs().max()).item()
        for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True)
    )
    print(f"{neuron}: width {models[0].width}; weights after {args.check} steps of each: {apart:.1e} apart")
    if not apart < 1e-5:
        sys.exit(f"fused_step: the fused {neuron} step trains another model ({apart:.1e} apart)")
    times: dict[str, list[float]] = {"autograd": [], "fused": []}
    for _ in range(args.rounds):
        for name, step_fn in (("autograd", autograd), ("fused", fused)):
            start = time.perf_counter()
            for step in range(args.steps):
                step_fn(step)
            times[name].append((time.perf_counter() - start) / args.steps * 1e3)
    for step in range(args.steps * args.rounds):
        fused(step, timed=True)
    ratios = sorted(a / f for a, f in zip(times["autograd"], times["fused"], strict=True))
    a_ms, f_ms = (statistics.median(times[k]) for k in ("autograd", "fused"))
    print(f"  ms per step (median of {args.rounds} rounds): autograd {a_ms:.3f}, fused {f_ms:.3f}, "
          f"{a_ms / f_ms:.2f}x; per-round ratios {ratios[0]:.2f}–{ratios[-1]:.2f}")  # fmt: skip
    print("  fused step's parts (µs per step): " + ", ".join(
        f"{name} {seconds / (args.steps * args.rounds) * 1e6:.0f}" for name, seconds in fused.seconds.items()
    ), flush=True)  # fmt: skip
    return a_ms / f_ms


def main() -> None:
    """Measure every neuron asked for; print `fused:` last, the smallest ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", nargs="+", choices=list(FUSED), default=list(FUSED))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50, help="steps per round")
    parser.add_argument("--check", type=int, default=20, help="steps both take before their weights compare")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runtime.retain_freed_memory()
    print(f"{TASK}, {len(SEEDS)} seeds, {args.threads} threads")
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(Path(tmp))
        ratios = [measure(neuron, lib, args) for neuron in args.neurons]
    print(f"fused: {min(ratios):.2f}")


if __name__ == "__main__":
    main()
