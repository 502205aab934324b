"""The trainer's fused CPU step: a whole forward and backward pass without autograd.

At the study's sizes (a few thousand parameters, 1000 points) a training step is bound by the number of
passes over memory, not by arithmetic: autograd runs each elementwise op of a neuron, its backward and the
thin first layer and one-output head as separate PyTorch ops. Here the hidden layers' matmuls stay PyTorch's
(``baddbmm``/``bmm``, as in ``rnlib.core.neurons``), and the rest runs as C passes (``fused.c``): each
neuron's activation with its hand-derived backward, one row of units at a time; the thin first layer (few
inputs) as row multiply-adds; the one-output MSE head with its loss and backward in one pass. The passes
spread their rows over as many threads as PyTorch's intra-op setting (``torch.get_num_threads()``), on the
OpenMP runtime PyTorch loads, and give the same bits at every thread count. Gradients land in the
parameters' ``.grad`` views (``FlatAdam``'s flat buffer), so the optimizer, the diagnostics callbacks and
everything after the step are the autograd path's.

The C source is compiled on first use with the system's C compiler into ``.cache/fused`` (or
``$RNLIB_FUSED_DIR``; ``make setup`` builds it ahead) for x86-64 CPUs with AVX2 and FMA, whose vector
``sin``/``cos``/``exp`` come from glibc's libmvec. The library names its neurons: ``fused.c``'s table gives
each its registry name and saved-row count, read here once (``table``), so ``fused_neurons()`` is whatever
the built library covers. Where this machine cannot take the fused step
(``rnlib.provenance.fused_support``), or for a model the passes do not cover (a neuron with no entry, such as
``v4_lowrank``'s factorised matrices; widths above the library's ``rn_max_width``; CUDA), the trainer uses
autograd, which is also the reference the tests hold these passes to. Before a process first trains a neuron
with the fused step, ``disagreement`` checks it against autograd on a small model (per head and first-layer
kind), with the neuron class's ``activate`` as it is now; on a mismatch the neuron trains with autograd.
Which of the two steps this machine trains with is part of every cache key and job id (``rnlib.provenance``),
since they agree only to float32 rounding. ``RNLIB_STEP=autograd`` turns the fused step off for a process;
``TrainConfig(step=...)`` chooses per training run.

    python -m rnlib.training.fused     # build the library now and say which step the trainer will use
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from rnlib.core.metrics import replica_loss
from rnlib.core.models import RichNet
from rnlib.core.neurons import NeuronLayer, neuron_class
from rnlib.paths import REPO_ROOT
from rnlib.provenance import c_compiler, fused_support

SOURCE = Path(__file__).with_name("fused.c")
FLAGS = ("-O3", "-march=x86-64-v3", "-ffp-contract=off", "-fopenmp", "-fPIC", "-shared")  # AVX2 + FMA
LIBS = ("-lmvec", "-lm")
BUILD_DIR_ENV = "RNLIB_FUSED_DIR"  # where built libraries go (default: .cache/fused in the repo)
THIN_INPUTS = 8  # a first layer with at most this many inputs runs as row multiply-adds in C
# The guard's model (``check``): two layers (the first, thin or not, and a hidden one) of width 10 (one 8-lane
# vector and a padded tail per row) at ω = 2.5 (every sine argument scaled), two replicas, 16 points, and
# 3 outputs where the head is not the one-output C pass.
CHECK_WIDTH, CHECK_OMEGA, CHECK_SEEDS, CHECK_POINTS, CHECK_OUTPUTS = 10, 2.5, (0, 1), 16, 3
# The tolerances of tests/test_fused.py: float32 rounding of the loss and of each gradient summed in another
# order (the gradients' atol is relative to the tensor's largest entry).
LOSS_RTOL, LOSS_ATOL, GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-7, 1e-4, 1e-5


def build_dir() -> Path:
    """Where built libraries live: ``$RNLIB_FUSED_DIR`` when set, else ``.cache/fused`` in the repo."""
    return Path(os.environ.get(BUILD_DIR_ENV, REPO_ROOT / ".cache" / "fused")).expanduser()


@functools.cache
def load() -> tuple[ctypes.CDLL | None, str]:
    """The built library (compiled if needed), or ``None`` and why not; decided once per process."""
    why = fused_support()
    if why:
        return None, why
    cc = c_compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join([*FLAGS, *LIBS, *version]).encode()).hexdigest()
    path = build_dir() / f"librnfused-{digest[:16]}.so"
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
    for name in ("rn_max_width", "rn_neuron_count"):
        getattr(lib, name).restype = i64
    lib.rn_neuron_name.argtypes, lib.rn_neuron_name.restype = [i64], ctypes.c_char_p
    lib.rn_saved_rows.argtypes, lib.rn_saved_rows.restype = [i64], i64
    lib.rn_forward.argtypes = [i64] * 5 + [f32, i64, ptr, i64, ptr, i64, ptr, ptr]  # first: threads
    lib.rn_backward.argtypes = [i64] * 5 + [f32, i64, ptr, i64, ptr, i64, ptr, ptr, ptr, ptr, ptr]
    lib.rn_thin_forward.argtypes = [i64] * 5 + [ptr] * 4
    lib.rn_thin_weight_grad.argtypes = [i64] * 5 + [ptr] * 3
    lib.rn_head_mse.argtypes = [i64] * 4 + [ptr] * 8
    for name in ("rn_forward", "rn_backward", "rn_thin_weight_grad", "rn_head_mse"):
        getattr(lib, name).restype = i64
    return lib, ""


@dataclass(frozen=True)
class CNeuron:
    """A neuron's entry in the built library's table."""

    id: int  # its place in fused.c's NEURONS, which the passes take
    saved: int  # rows of intermediates its forward keeps for its backward


def table() -> dict[str, CNeuron]:
    """Registry name -> entry, for every neuron the built library has a fused form of (empty without one)."""
    lib, _ = load()
    return {} if lib is None else read_table(lib)


@functools.cache
def read_table(lib: ctypes.CDLL) -> dict[str, CNeuron]:
    """The library's neuron table, read once: the one place Python learns the C side's names, order and
    saved-row counts (nothing here repeats them)."""
    return {
        lib.rn_neuron_name(i).decode(): CNeuron(i, lib.rn_saved_rows(i)) for i in range(lib.rn_neuron_count())
    }


# a row of fused.c's table: {"name", saved rows, forward, backward},
SOURCE_ENTRY = re.compile(r'^\s*\{"(\w+)", \d+, fwd_\w+, bwd_\w+\},', re.MULTILINE)


@functools.cache
def source_neurons() -> frozenset[str]:
    """The neurons ``fused.c``'s table names, read from its text: what a cache key may use, since computing
    one never compiles (tests hold it equal to the built library's ``fused_neurons``)."""
    return frozenset(SOURCE_ENTRY.findall(SOURCE.read_text()))


def step_for(neuron: str, step: str, device: str = "cpu") -> str:
    """The step ``TrainConfig(step=step)`` trains ``neuron`` with here, ``fused`` or ``autograd``, decided
    without compiling: part of the neuron's cache keys. (A neuron the guard then moves to autograd keeps its
    ``fused`` keys: the guard catches an unbumped arithmetic change, which tests/test_golden.py fails on.)"""
    if step == "autograd" or device.split(":")[0] != "cpu" or fused_support():
        return "autograd"
    return "fused" if step == "fused" or neuron in source_neurons() else "autograd"


def fused_neurons() -> tuple[str, ...]:
    """The neurons the built library has a fused form of, in its table's order (empty where none can be
    built). Builds the library on first use."""
    return tuple(table())


def unsupported(model: RichNet, device: str, step: str) -> str:
    """Why ``model`` cannot take the fused step (empty when it can); ``step`` is ``TrainConfig.step``."""
    if step == "autograd":
        return "step='autograd' asked for"
    lib, why = load()
    if lib is None:
        return why
    if device != "cpu":
        return f"the fused step runs on the CPU, not {device}"
    if model.neuron not in table():
        return f"{model.neuron} has no fused form (fused: {', '.join(table())})"
    if model.width > lib.rn_max_width():
        return f"width {model.width} is above the fused passes' {lib.rn_max_width()}"
    if model.head_W.dtype != torch.float32:
        return f"the fused passes are float32, not {model.head_W.dtype}"
    return ""


def addresses(tensors: list[Tensor | None]) -> ctypes.Array:
    """A C array of the tensors' data addresses (NULL for ``None``); the tensors must outlive it."""
    return (ctypes.c_void_p * max(1, len(tensors)))(*[None if t is None else t.data_ptr() for t in tensors])


@dataclass
class FusedLayer:
    """One hidden layer's parameters, gradient views and buffers, and the C arrays pointing into them.

    Each matrix's pre-activation is its own contiguous (M, N, W) buffer and its own matmul: one (M, in, K·W)
    matmul for all K made whole steps up to 15% slower (the passes then stride K·W; docs/performance.md).
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
    entry = table()[neuron]
    z, dz, saved = buffers(len(mats)), buffers(len(mats)), buffers(entry.saved)
    (h, dh), values = buffers(2), [v.detach() for v in vectors]
    return FusedLayer(
        neuron_id=entry.id, omega=layer.omega, in_dim=layer.in_dim,
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
            raise RuntimeError(
                f"rnlib.training.fused: {name} failed (width {self.width}, {self.m}x{self.n} rows)"
            )

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


# ---------------------------------------------------------------- the guard: the fused step against autograd


def disagreement(model: RichNet, metric: str) -> str:
    """Why the fused step must not train ``model`` although it could ("" when it agrees with autograd).

    Before a process first trains a neuron with the fused step, per kind of head (the C pass's one-output
    MSE, multi-output MSE, cross-entropy) and of first layer (thin or not), ``check`` compares the fused loss
    and every gradient with autograd's on a small model of that neuron, built from the class registered for
    it now with its ``activate`` as it is now (so an activation patched in a notebook is caught). On a
    mismatch it warns once, naming the neuron and the largest difference, and the neuron trains with autograd
    for the rest of the process. For models ``unsupported`` accepts; touches neither ``model`` nor any RNG.
    """
    layer_cls = neuron_class(model.neuron)
    key = (model.neuron, layer_cls, layer_cls.activate)
    if key in FAILED:
        return FAILED[key]
    head = "ce" if metric != "mse" else "mse" if model.out_dim == 1 else "mse-multi"
    why = check(*key, head, model.layers[0].in_dim <= THIN_INPUTS)
    if why:
        FAILED[key] = why
        warnings.warn(f"rnlib.training.fused: {why}", RuntimeWarning, stacklevel=2)
    return why


FAILED: dict[tuple[str, type[NeuronLayer], object], str] = {}  # neurons found wrong, for the whole process
HEADS = {"mse": "one-output MSE head", "mse-multi": "multi-output MSE head", "ce": "cross-entropy head"}


@functools.cache
def check(neuron: str, layer_cls: type[NeuronLayer], activate: object, head: str, thin: bool) -> str:
    """The verdict on one neuron, head and first-layer kind: "" when the fused step agrees with autograd.

    Cached per process. ``layer_cls`` and ``activate`` only key the cache, so that a class or activation
    patched later is checked anew; the model is built from the registry, as the trainer builds it.
    """
    gen = torch.Generator().manual_seed(0)  # its own generator: the global RNG stays untouched
    in_dim, out_dim = 2 if thin else THIN_INPUTS + 1, 1 if head == "mse" else CHECK_OUTPUTS
    m, n, metric = len(CHECK_SEEDS), CHECK_POINTS, "accuracy" if head == "ce" else "mse"
    with torch.enable_grad():
        model = RichNet(neuron, in_dim, out_dim, CHECK_WIDTH, 2, seeds=CHECK_SEEDS, omega=CHECK_OMEGA)
        params = dict(model.named_parameters())
        with torch.no_grad():  # off the initial values, whose 1s and 0s (LayerNorm, β, γ) hide a swap
            for p in params.values():
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
        x = torch.rand(m, n, in_dim, generator=gen).mul_(2).sub_(1)
        if head == "ce":
            y = torch.randint(0, out_dim, (m, n), generator=gen)
        else:
            y = torch.randn(m, n, out_dim, generator=gen)
        loss = replica_loss(model(x), y, metric)
        loss.sum().backward()
        loss, expected = loss.detach(), {name: p.grad for name, p in params.items()}
        for p in params.values():
            p.grad = torch.full_like(p, float("nan"))  # every gradient must be written by the step
        got = FusedStep(model, x, y, metric)()
    apart = []  # (largest difference, where) for every tensor outside its tolerance
    if not torch.isclose(got, loss, rtol=LOSS_RTOL, atol=LOSS_ATOL).all():
        apart.append((largest_difference(got, loss), "the loss"))
    for name, ref in expected.items():
        grad = params[name].grad
        if not torch.isclose(grad, ref, rtol=GRAD_RTOL, atol=GRAD_ATOL * ref.abs().max().item()).all():
            apart.append((largest_difference(grad, ref), f"{name}'s gradient"))
    if not apart:
        return ""
    diff, where = max(apart)
    return (
        f"the fused step disagrees with autograd on {neuron} ({HEADS[head]}, "
        f"{'thin' if thin else 'matmul'} first layer): largest difference {diff:.2e}, in {where}; "
        f"{neuron} trains with autograd for the rest of this process"
    )


def largest_difference(a: Tensor, b: Tensor) -> float:
    """The largest elementwise ``|a - b|``; inf where only one of them is NaN."""
    return (a - b).abs().nan_to_num(float("inf")).max().item()


def main() -> None:
    """Build the library now; say which step the trainer will use and why."""
    lib, why = load()
    if lib is None:
        print(f"rnlib.training.fused: autograd ({why})")
    else:
        print(f"rnlib.training.fused: fused ({SOURCE.name} built; fused: {', '.join(table())})")


if __name__ == "__main__":
    main()
