"""The trainer's fused CPU step: a whole forward and backward pass without autograd.

At the study's sizes (a few thousand parameters, 1000 points) a training step is bound by the number of
passes over memory, not by arithmetic: autograd runs each elementwise op of a neuron, its backward and the
thin first layer and one-output head as separate kernels. Here the hidden layers' matmuls stay PyTorch's
(``baddbmm``/``bmm``, as in ``rnlib.neurons``), and the rest runs as C passes (``kernels.c``): each
neuron's activation with its hand-derived backward, one row of units at a time; the thin first layer (few
inputs) as row multiply-adds; the one-output MSE head with its loss and backward in one pass. The passes
spread their rows over as many threads as PyTorch's intra-op setting (``torch.get_num_threads()``), on the
OpenMP runtime PyTorch loads, and give the same bits at every thread count. Gradients land in the
parameters' ``.grad`` views (``FlatAdam``'s flat buffer), so the optimizer, the diagnostics callbacks and
everything after the step are the autograd path's.

The C source is compiled on first use with the system's C compiler into ``.cache/kernels`` (``make setup``
builds it ahead) for x86-64 CPUs with AVX2 and FMA, whose vector ``sin``/``cos``/``exp`` come from glibc's
libmvec. Where that is not possible, or for a model the passes do not cover (``v4_lowrank``'s factorised
matrices, widths above ``MAX_WIDTH``, CUDA), the trainer uses autograd, which is also the reference the tests
hold these passes to. Which of the two this machine trains with is part of every cache key and job id
(``rnlib.provenance.trainer_step``), since they agree only to float32 rounding. ``RNLIB_KERNEL=autograd``
turns the fused step off for a process; ``TrainConfig(kernel=...)`` chooses per training run.

    python -m rnlib.kernels     # build the library now and say which step the trainer will use
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from rnlib.models import RichNet
from rnlib.neurons import NeuronLayer
from rnlib.paths import REPO_ROOT

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ("-O3", "-march=x86-64-v3", "-ffp-contract=off", "-fopenmp", "-fPIC", "-shared")  # AVX2 + FMA
LIBS = ("-lmvec", "-lm")
KERNELS = ("auto", "fused", "autograd")  # TrainConfig.kernel
MAX_WIDTH = 1024  # kernels.c's MAXW: the widest layer the passes take
THIN_INPUTS = 8  # a first layer with at most this many inputs runs as row multiply-adds in C
NEURON_IDS = (  # kernels.c's NEURONS table, same order
    "vanilla", "singlu", "v1_rich", "siren", "bilinear", "v1_no_residual", "v1_no_norm", "v4_lowrank",
    "v4_shared", "v6_routing", "v7_learned_freq", "v8_phase_gate", "v9_controlled", "v10_free_phase",
    "v11_scaled_phase", "v12_fm", "v13_aligned_phase", "v15_dual_phase",
)  # fmt: skip
SAVED = {  # rows of intermediates each neuron's forward keeps for its backward (kernels.c)
    "vanilla": 0, "singlu": 2, "v1_rich": 4, "siren": 1, "bilinear": 0, "v1_no_residual": 4, "v1_no_norm": 2,
    "v4_shared": 2, "v6_routing": 3, "v7_learned_freq": 3, "v8_phase_gate": 3, "v9_controlled": 5,
    "v10_free_phase": 3, "v11_scaled_phase": 3, "v12_fm": 3, "v13_aligned_phase": 3, "v15_dual_phase": 4,
}  # fmt: skip
FUSED_NEURONS = tuple(SAVED)


def kernel_dir() -> Path:
    """Where built libraries live: ``$RNLIB_KERNELS_DIR`` when set, else ``.cache/kernels`` in the repo."""
    return Path(os.environ.get("RNLIB_KERNELS_DIR", REPO_ROOT / ".cache" / "kernels")).expanduser()


def cpu_flags() -> set[str]:
    """This CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def compiler() -> str | None:
    """The C compiler: ``$CC`` when set, else gcc or cc on PATH."""
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")


@functools.cache
def load() -> tuple[ctypes.CDLL | None, str]:
    """The built library (compiled if needed), or ``None`` and why not; decided once per process."""
    if os.environ.get("RNLIB_KERNEL", "auto") == "autograd":
        return None, "RNLIB_KERNEL=autograd"
    if platform.machine() not in ("x86_64", "AMD64") or not {"avx2", "fma"} <= cpu_flags():
        return None, f"needs an x86-64 CPU with AVX2 and FMA; this {platform.machine()} CPU lacks them"
    cc = compiler()
    if cc is None:
        return None, "no C compiler (gcc or cc) on PATH"
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join([*FLAGS, *LIBS, *version]).encode()).hexdigest()
    path = kernel_dir() / f"librnkernels-{digest[:16]}.so"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".build-", suffix=".so")
        os.close(fd)
        built = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp, *LIBS], capture_output=True, text=True)
        if built.returncode != 0:
            os.unlink(tmp)
            last = (built.stderr.strip().splitlines() or ["no message"])[-1]
            return None, f"{cc} could not build {SOURCE.name}: {last}"
        os.replace(tmp, path)  # atomic: concurrent builders each write their own file
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        return None, f"cannot load {path.name}: {err}"
    i64, f32, ptr = ctypes.c_long, ctypes.c_float, ctypes.c_void_p
    lib.rn_max_width.restype = i64
    lib.rn_forward.argtypes = [i64] * 5 + [f32, i64, ptr, i64, ptr, i64, ptr, ptr]  # first: threads
    lib.rn_backward.argtypes = [i64] * 5 + [f32, i64, ptr, i64, ptr, i64, ptr, ptr, ptr, ptr, ptr]
    lib.rn_thin_forward.argtypes = [i64] * 5 + [ptr] * 4
    lib.rn_thin_weight_grad.argtypes = [i64] * 5 + [ptr] * 3
    lib.rn_head_mse.argtypes = [i64] * 4 + [ptr] * 8
    for name in ("rn_forward", "rn_backward", "rn_thin_weight_grad", "rn_head_mse"):
        getattr(lib, name).restype = i64
    return lib, ""


def unsupported(model: RichNet, device: str, kernel: str) -> str:
    """Why ``model`` cannot take the fused step (empty when it can); ``kernel`` is a ``KERNELS`` name."""
    if kernel == "autograd":
        return "kernel='autograd' asked for"
    lib, why = load()
    if lib is None:
        return why
    if device != "cpu":
        return f"the fused step runs on the CPU, not {device}"
    if model.neuron not in FUSED_NEURONS:
        return f"{model.neuron} has no fused form (fused: {', '.join(FUSED_NEURONS)})"
    if model.width > MAX_WIDTH:
        return f"width {model.width} is above the fused passes' {MAX_WIDTH}"
    if model.head_W.dtype != torch.float32:
        return f"the fused passes are float32, not {model.head_W.dtype}"
    return ""


def addresses(tensors: list[Tensor | None]) -> ctypes.Array:
    """A C array of the tensors' data addresses (NULL for ``None``); the tensors must outlive it."""
    return (ctypes.c_void_p * max(1, len(tensors)))(*[None if t is None else t.data_ptr() for t in tensors])


@dataclass
class FusedLayer:
    """One hidden layer's parameters, gradient views and buffers, and the C arrays pointing into them.

    Each matrix's pre-activation is its own contiguous (M, N, W) buffer and its own matmul. (Measured and
    rejected: the K matrices side by side as one (M, in, K·W) matmul, cheaper alone, made whole steps up to
    15% slower, since the C passes then read and write rows K·W apart; README, Performance.)
    """

    neuron_id: int
    omega: float
    in_dim: int
    thin: bool  # the first layer with few inputs: C row multiply-adds instead of a matmul
    weights: list[Tensor]
    biases: list[Tensor | None]
    weight_grads: list[Tensor]
    z: list[Tensor]  # pre-activations, one (M, N, W) per matrix
    dz: list[Tensor]  # the loss gradient at each
    saved: list[Tensor]  # what the neuron's forward keeps for its backward
    h: Tensor  # the activation (M, N, W)
    dh: Tensor  # the loss gradient at the activation
    vectors: list[Tensor]  # per-unit vectors (M, 1, W), held for the pointer array below
    z_ptr: ctypes.Array
    dz_ptr: ctypes.Array
    saved_ptr: ctypes.Array
    vec_ptr: ctypes.Array
    vec_grad_ptr: ctypes.Array
    bias_grad_ptr: ctypes.Array


def fused_layer(layer: NeuronLayer, neuron: str, first: bool, m: int, n: int) -> FusedLayer:
    """Buffers and C pointer arrays for one hidden layer of ``M = m`` replicas on ``n`` points."""

    def buffers(k: int) -> list[Tensor]:
        return [torch.empty(m, n, layer.width) for _ in range(k)]

    mats = [getattr(layer, f"W{mat.name}") for mat in layer.matrices]
    biases = [getattr(layer, f"b{mat.name}") if mat.bias else None for mat in layer.matrices]
    vectors = [getattr(layer, v.name) for v in layer.vectors]
    z, dz, saved = buffers(len(mats)), buffers(len(mats)), buffers(SAVED[neuron])
    (h, dh), values = buffers(2), [v.detach() for v in vectors]
    return FusedLayer(
        neuron_id=NEURON_IDS.index(neuron), omega=layer.omega, in_dim=layer.in_dim,
        thin=first and layer.in_dim <= THIN_INPUTS, weights=[w.detach() for w in mats],
        biases=[None if b is None else b.detach() for b in biases], weight_grads=[w.grad for w in mats],
        z=z, dz=dz, saved=saved, h=h, dh=dh, vectors=values, z_ptr=addresses(z), dz_ptr=addresses(dz),
        saved_ptr=addresses(saved), vec_ptr=addresses(values),
        vec_grad_ptr=addresses([v.grad for v in vectors]),
        bias_grad_ptr=addresses([None if b is None else b.grad for b in biases]),
    )  # fmt: skip


class FusedStep:
    """Loss and gradients of every replica of ``model`` on ``(x, y)``, by the fused passes.

    Build it after ``FlatAdam`` holds the parameters (it writes into their ``.grad`` views, whose addresses
    never change). Each call returns the (M,) losses, as ``replica_loss`` would, and overwrites every
    gradient. The C passes run on ``torch.get_num_threads()`` threads as set when it is built.
    """

    def __init__(self, model: RichNet, x: Tensor, y: Tensor, metric: str) -> None:
        self.lib, _ = load()
        self.x, self.y, self.metric = x.contiguous(), y.contiguous(), metric
        self.m, self.n, _ = x.shape
        self.threads = torch.get_num_threads()
        self.width = model.width
        self.layers = [fused_layer(layer, model.neuron, i == 0, self.m, self.n) for i, layer in
                       enumerate(model.layers)]  # fmt: skip
        self.head_w, self.head_b = model.head_W.detach(), model.head_b.detach()
        self.head_w_grad, self.head_b_grad = model.head_W.grad, model.head_b.grad
        self.loss = torch.empty(self.m)
        self.one_output_mse = metric == "mse" and model.out_dim == 1

    def __call__(self) -> Tensor:
        inputs = self.forward()
        self.head()
        self.backward(inputs)
        return self.loss

    def call(self, name: str, *args: object) -> None:
        """Run one C pass; a non-zero return (bad sizes, no memory) is an error, not a silent skip."""
        if getattr(self.lib, name)(*args):
            raise RuntimeError(f"rnlib.kernels: {name} failed (width {self.width}, {self.m}x{self.n} rows)")

    def forward(self) -> list[Tensor]:
        """Every layer's pre-activations and activation; returns each layer's input."""
        m, n, w, t, inputs, h = self.m, self.n, self.width, self.threads, [], self.x
        for layer in self.layers:
            inputs.append(h)
            for weight, bias, z in zip(layer.weights, layer.biases, layer.z, strict=True):
                if layer.thin:
                    b = None if bias is None else bias.data_ptr()
                    self.lib.rn_thin_forward(
                        t, m, n, layer.in_dim, w, h.data_ptr(), weight.data_ptr(), b, z.data_ptr()
                    )
                elif bias is None:
                    torch.bmm(h, weight, out=z)
                else:
                    torch.baddbmm(bias, h, weight, out=z)
            self.call("rn_forward", t, layer.neuron_id, m, n, w, layer.omega, len(layer.z), layer.z_ptr,
                      len(layer.vectors), layer.vec_ptr, len(layer.saved), layer.saved_ptr,
                      layer.h.data_ptr())  # fmt: skip
            h = layer.h
        return inputs

    def head(self) -> None:
        """The linear head and the loss: ``self.loss``, the head's gradients and the last layer's ``dh``."""
        last = self.layers[-1]
        if self.one_output_mse:
            self.call("rn_head_mse", self.threads, self.m, self.n, self.width, last.h.data_ptr(),
                      self.head_w.data_ptr(), self.head_b.data_ptr(), self.y.data_ptr(),
                      self.loss.data_ptr(), last.dh.data_ptr(), self.head_w_grad.data_ptr(),
                      self.head_b_grad.data_ptr())  # fmt: skip
            return
        out = torch.baddbmm(self.head_b, last.h, self.head_w)  # (M, N, out)
        if self.metric == "mse":
            diff = out - self.y
            torch.mean(diff.square(), dim=(1, 2), out=self.loss)
            grad = diff.mul_(2.0 / diff[0].numel())
        else:  # cross-entropy; its gradient at the logits is (softmax - onehot) / N
            logp = F.log_softmax(out, dim=-1)
            picked = logp.gather(-1, self.y.unsqueeze(-1))  # (M, N, 1)
            torch.mean(picked.squeeze(-1), dim=1, out=self.loss).neg_()
            grad = logp.exp_()
            grad.scatter_add_(-1, self.y.unsqueeze(-1), torch.full_like(picked, -1.0))
            grad.div_(self.n)
        torch.bmm(last.h.transpose(1, 2), grad, out=self.head_w_grad)
        torch.sum(grad, dim=1, keepdim=True, out=self.head_b_grad)
        torch.bmm(grad, self.head_w.transpose(1, 2), out=last.dh)

    def backward(self, inputs: list[Tensor]) -> None:
        """From the last activation's gradient down: every hidden parameter's gradient."""
        m, n, w, t = self.m, self.n, self.width, self.threads
        for i in range(len(self.layers) - 1, -1, -1):
            layer, h = self.layers[i], inputs[i]
            self.call("rn_backward", t, layer.neuron_id, m, n, w, layer.omega, len(layer.z), layer.z_ptr,
                      len(layer.vectors), layer.vec_ptr, len(layer.saved), layer.saved_ptr,
                      layer.dh.data_ptr(), layer.dz_ptr, layer.bias_grad_ptr, layer.vec_grad_ptr)  # fmt: skip
            for dz, grad in zip(layer.dz, layer.weight_grads, strict=True):
                if layer.thin:
                    self.call("rn_thin_weight_grad", t, m, n, layer.in_dim, w, h.data_ptr(), dz.data_ptr(),
                              grad.data_ptr())  # fmt: skip
                else:
                    torch.bmm(h.transpose(1, 2), dz, out=grad)
            if i > 0:
                below = self.layers[i - 1].dh
                torch.bmm(layer.dz[0], layer.weights[0].transpose(1, 2), out=below)
                for dz, weight in zip(layer.dz[1:], layer.weights[1:], strict=True):
                    below.baddbmm_(dz, weight.transpose(1, 2))


def main() -> None:
    """Build the library now; say which step the trainer will use and why."""
    lib, why = load()
    print(f"rnlib.kernels: {'autograd (' + why if lib is None else 'fused (' + SOURCE.name + ' built'})")


if __name__ == "__main__":
    main()
