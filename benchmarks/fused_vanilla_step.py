"""What fusing the non-matmul work would buy: rnlib's vanilla step against the same step with fused C passes.

A measurement of the lead left by issue 7, not a path rnlib takes. Workload: the throughput benchmark's (3
seeds of `vanilla` on `mixedfreq`, 1000 points, default budget, full-batch Adam). Step A is rnlib's trainer
step (autograd over the batched model, fused Adam on the flat buffer). Step B computes the same thing by hand:
the three 68-wide matmuls stay PyTorch's (`baddbmm`/`bmm`), and everything else, the 2-wide first layer with
its ReLU, the one-output head with the MSE loss and their backward into the ReLU mask, and the first layer's
backward, runs as three single-threaded C passes (`benchmarks/fused_vanilla.c`, built here with gcc -O3);
Adam is the same fused kernel. Both start from the same weights; after `--check` steps the script prints how
far their weights are apart (float32 rounding: the passes sum in another order) and fails above 1e-5 (longer
runs part later, once a ReLU input near 0 takes the other side, as any two implementations do). Then
rounds of A and B alternate; it prints medians, the range of the per-round ratios, B's parts, and last
`fused: X.XX` (median ms of A over B).

    .venv/bin/python benchmarks/fused_vanilla_step.py [--rounds 8] [--steps 50] [--threads 2]
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

from rnlib import runtime
from rnlib.metrics import cosine_lr, replica_loss
from rnlib.models import RichNet, build_model
from rnlib.tasks import make_task
from rnlib.trainer import FlatAdam, stack_tasks

SOURCE = Path(__file__).with_name("fused_vanilla.c")
SEEDS, TASK, STEPS, LR = (0, 1, 2), "mixedfreq", 3000, 1e-3  # the schedule of a SPEC-length run
MAX_WIDTH = 4096  # the C passes' row buffer


def build(out_dir: Path) -> ctypes.CDLL:
    """Compile the C passes into a shared library in ``out_dir`` and load it."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        sys.exit("fused_vanilla_step: no C compiler (gcc or cc) on PATH; this benchmark needs one")
    lib_path = out_dir / "libfused_vanilla.so"
    flags = ["-O3", "-march=native", "-ffp-contract=off", "-fPIC", "-shared"]
    subprocess.run([cc, *flags, str(SOURCE), "-o", str(lib_path)], check=True)
    lib = ctypes.CDLL(str(lib_path))
    i64, ptr = ctypes.c_long, ctypes.c_void_p
    lib.layer1_forward.argtypes = [i64] * 4 + [ptr] * 4
    lib.head_mse.argtypes = [i64] * 3 + [ptr] * 9
    lib.layer1_backward.argtypes = [i64] * 4 + [ptr] * 5
    return lib


class AutogradStep:
    """rnlib's trainer step: autograd over the batched model, fused Adam over the flat buffer."""

    def __init__(self, model: RichNet, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.x, self.y = model, x, y
        self.adam = FlatAdam(list(model.parameters()), (0.9, 0.999), 1e-8)

    def __call__(self, step: int) -> None:
        self.adam.zero_grad()
        replica_loss(self.model(self.x), self.y, "mse").sum().backward()
        self.adam.step(cosine_lr(LR, step, STEPS))


class FusedStep:
    """The same step by hand: PyTorch's three matmuls, three fused C passes, the same fused Adam."""

    def __init__(self, model: RichNet, x: torch.Tensor, y: torch.Tensor, lib: ctypes.CDLL) -> None:
        x, y = x.contiguous(), y.contiguous()
        self.adam = FlatAdam(list(model.parameters()), (0.9, 0.999), 1e-8)
        first, second = model.layers
        params = (first.W, first.b, second.W, second.b, model.head_W, model.head_b)
        w1, b1, w2, b2, wh, bh = (p.detach() for p in params)
        g_w1, g_b1, g_w2, g_b2, g_wh, g_bh = (p.grad for p in params)  # views into the flat gradient buffer
        (m, n, k), width = x.shape, model.width
        a1, a2, ga1, ga2 = (torch.empty(m, n, width) for _ in range(4))
        loss = torch.empty(m)
        ptr = torch.Tensor.data_ptr
        self.step = 0
        self.parts: list[tuple[str, Callable[[], object]]] = [
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
            ("adam", lambda: self.adam.step(cosine_lr(LR, self.step, STEPS))),
        ]  # fmt: skip
        self.seconds: dict[str, float] = collections.defaultdict(float)

    def __call__(self, step: int, timed: bool = False) -> None:
        self.step = step
        for name, run in self.parts:
            start = time.perf_counter() if timed else 0.0
            run()
            if timed:
                self.seconds[name] += time.perf_counter() - start


def main() -> None:
    """Check that both steps train the same model, time them in alternating rounds, print `fused:` last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50, help="steps per round")
    parser.add_argument("--check", type=int, default=20, help="steps both take before their weights compare")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runtime.retain_freed_memory()
    data = stack_tasks([make_task(TASK, s) for s in SEEDS], "cpu")
    x, y = data["x_train"], data["y_train"]
    models = [build_model("vanilla", x.shape[-1], y.shape[-1], budget=5000, seeds=SEEDS) for _ in range(2)]
    if models[0].width > MAX_WIDTH or y.shape[-1] != 1:
        sys.exit(f"fused_vanilla_step: needs one output and width <= {MAX_WIDTH}")
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(Path(tmp))
        autograd, fused = AutogradStep(models[0], x, y), FusedStep(models[1], x, y, lib)
        for step in range(args.check):
            autograd(step)
            fused(step)
        apart = max(
            ((a - b).abs().max() / a.abs().max()).item()
            for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True)
        )
        print(f"vanilla on {TASK}, {len(SEEDS)} seeds, width {models[0].width}, {args.threads} threads")
        print(f"weights after {args.check} steps of each: {apart:.1e} apart (largest relative difference)")
        if not apart < 1e-5:
            sys.exit(f"fused_vanilla_step: the fused step trains another model ({apart:.1e} apart)")
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
    print(f"ms per step (median of {args.rounds} rounds): autograd {a_ms:.3f}, fused {f_ms:.3f}; "
          f"per-round ratios {ratios[0]:.2f}–{ratios[-1]:.2f}")  # fmt: skip
    print("fused step's parts (µs per step): " + ", ".join(
        f"{name} {seconds / (args.steps * args.rounds) * 1e6:.0f}" for name, seconds in fused.seconds.items()
    ))  # fmt: skip
    print(f"fused: {a_ms / f_ms:.2f}")


if __name__ == "__main__":
    main()
