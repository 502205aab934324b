"""Hidden layers for every neuron of protocol §2, batched over independent model replicas.

Every weight carries a leading replica axis: a matrix is ``[M, in, width]`` and a bias or per-unit vector
``[M, 1, width]``, so ``M`` models of identical shape train as one tensor program (``baddbmm``) while each
replica keeps its own parameters. A single model is simply ``M = 1``.

A neuron is declared in ``rnlib.core.catalog`` (its matrices, per-unit vectors and equation, torch-free);
here ``@declared(name)`` gives it its math: the base class allocates, initialises and applies what the
declaration lists, and the subclass writes only the equation, in ``activate``. ``NEURONS`` maps every
declared name to its class, in the catalog's order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnlib.core import catalog
from rnlib.core.catalog import Matrix, Vector

ROLES = ("direct", "meta", "norm", "head")  # parameter groups; v05/v14 compare gradients of direct vs meta
INITS = ("default", "siren")
SIREN_OMEGA = 30.0  # Sitzmann et al. 2020, sec. 3.2: ω0 = 30 for the SIREN setting
LN_EPS = 1e-5  # torch.nn.LayerNorm's default


def uniform_(t: Tensor, bound: float, gen: torch.Generator) -> Tensor:
    """Fill ``t`` with U(-bound, bound) from ``gen``, in float64: same bits on every CPU."""
    return t.copy_(torch.empty(t.shape, dtype=torch.float64).uniform_(-bound, bound, generator=gen))


def batched_linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """``x @ w + b`` for every replica: (M, N, in) @ (M, in, out) + (M, 1, out) -> (M, N, out)."""
    if b is None:
        return torch.bmm(x, w)
    if w.shape[-1] == 1 and x.requires_grad:
        return SingleOutputLinear.apply(x, w, b)
    return torch.baddbmm(b, x, w)


class SingleOutputLinear(torch.autograd.Function):
    """``x @ w + b`` with one output unit, as broadcast multiply-and-sum instead of a GEMM.

    A regression head (``out = 1``) makes every matmul of its forward and backward a matrix-vector product or
    an outer product, which batched GEMM routines run at a fraction of their speed; the elementwise forms are
    ~2.5x faster here. The weight gradient stays a GEMM, but as ``grad^T @ x`` (a row vector times a
    contiguous matrix: 38 µs) rather than ``x^T @ grad`` (227 µs) or a multiply-and-sum (131 µs) at
    (3, 1000, 68). Same arithmetic, different summation order (float32 rounding only).
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor) -> Tensor:  # (M, N, in), (M, in, 1), (M, 1, 1)
        ctx.save_for_backward(x, w)
        return torch.linalg.vecdot(x, w.transpose(1, 2)).unsqueeze(-1) + b  # (M, N, 1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # grad: (M, N, 1)
        x, w = ctx.saved_tensors
        grad_x = grad * w.transpose(1, 2)  # (M, N, in): outer product as a broadcast multiply
        grad_w = torch.bmm(grad.transpose(1, 2), x).transpose(1, 2)  # (M, in, 1): a row vector times x
        return grad_x, grad_w, grad.sum(1, keepdim=True)


class Tanh(torch.autograd.Function):
    """``tanh(x)`` computed as ``2·sigmoid(2x) − 1``, with the backward ``grad·(1 − tanh²)``.

    ATen's vectorised ``tanh`` costs ~2.3 ns per element here against ~0.7 for ``sigmoid`` (on (3, 1000, 39):
    274 µs against 174 µs for this form). Identical in exact arithmetic; in float32 the absolute error
    is at most 1.8e-7 against 3e-8 for ``torch.tanh``, far below the resolution of the sine arguments it feeds
    (a float32 ``ω·g`` of order 1 is only resolved to ~1e-7). The backward uses the saved output, as
    ``torch.tanh``'s does.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        t = torch.sigmoid(x * 2).mul_(2).sub_(1)
        ctx.save_for_backward(t)
        return t

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (t,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, t)


def tanh(x: Tensor) -> Tensor:
    """``tanh`` for the neurons' phases and modulations (see ``Tanh``)."""
    return Tanh.apply(x)


LAYERS: dict[str, type[NeuronLayer]] = {}  # filled by @declared


def declared(name: str) -> Callable[[type[NeuronLayer]], type[NeuronLayer]]:
    """Class decorator: ``name``'s catalog declaration (matrices, vectors, ω) becomes the class's own."""

    def bind(cls: type[NeuronLayer]) -> type[NeuronLayer]:
        decl = catalog.NEURONS[name]
        cls.declaration, cls.matrices, cls.vectors = decl, decl.matrices, decl.vectors
        cls.uses_omega = decl.uses_omega
        LAYERS[name] = cls
        return cls

    return bind


class NeuronLayer(nn.Module):
    """Base hidden layer: allocates the declared matrices and vectors with a replica axis."""

    declaration: ClassVar[catalog.Neuron]  # set by @declared
    matrices: ClassVar[tuple[Matrix, ...]] = ()
    vectors: ClassVar[tuple[Vector, ...]] = ()
    uses_omega: ClassVar[bool] = True

    def __init__(
        self, in_dim: int, width: int, *, replicas: int = 1, omega: float = 1.0, init: str = "default"
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
        self.in_dim, self.width, self.replicas = in_dim, width, replicas
        self.omega, self.init = float(omega), init
        self.recording = False  # when True, forward stores its named intermediates in self.probes
        self.probes: dict[str, Tensor] = {}
        for name, (shape, _) in self.param_specs(in_dim, width).items():
            self.register_parameter(name, nn.Parameter(torch.empty(replicas, *shape)))

    # ----- declaration -------------------------------------------------------------------------------
    @classmethod
    def param_specs(cls, in_dim: int, width: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """Every trainable tensor of one replica: name -> (shape, role), in initialisation order."""
        specs: dict[str, tuple[tuple[int, ...], str]] = {}
        for m in cls.matrices:
            specs[f"W{m.name}"] = ((in_dim, width), m.role)
            if m.bias:
                specs[f"b{m.name}"] = ((1, width), m.role)
        for v in cls.vectors:
            specs[v.name] = ((1, width), v.role)
        return specs

    @classmethod
    def count(cls, in_dim: int, width: int) -> int:
        """Trainable parameters of one replica of this layer."""
        return sum(math.prod(shape) for shape, _ in cls.param_specs(in_dim, width).values())

    def roles(self) -> dict[str, str]:
        """Parameter name -> role (``direct``, ``meta`` or ``norm``)."""
        return {name: role for name, (_, role) in self.param_specs(self.in_dim, self.width).items()}

    # ----- initialisation ----------------------------------------------------------------------------
    def init_replica(self, m: int, gen: torch.Generator, first: bool) -> None:
        """Initialise replica ``m`` from ``gen``: ``nn.Linear``'s default, or SIREN's on sine branches."""
        default_bound = 1.0 / math.sqrt(self.in_dim)  # nn.Linear: kaiming_uniform(a=√5) == U(±1/√fan_in)
        with torch.no_grad():
            for mat in self.matrices:
                w = getattr(self, f"W{mat.name}")[m]
                if mat.zero_init:
                    w.zero_()
                elif self.init == "siren" and mat.periodic:
                    # SIREN sec. 3.2: first layer U(±1/fan_in), later U(±√(6/fan_in)/ω0)
                    bound = 1.0 / self.in_dim if first else math.sqrt(6.0 / self.in_dim) / self.omega
                    uniform_(w, bound, gen)
                else:
                    uniform_(w, default_bound, gen)
                if mat.bias:
                    b = getattr(self, f"b{mat.name}")[m]
                    b.zero_() if mat.zero_init else uniform_(b, default_bound, gen)
            for vec in self.vectors:
                getattr(self, vec.name)[m].fill_(vec.init)

    # ----- forward -----------------------------------------------------------------------------------
    def preactivations(self, x: Tensor) -> dict[str, Tensor]:
        """Every ``W·x + b`` of the layer: name -> (M, N, width), each its own contiguous matmul."""
        return {m.name: self.linear(x, m) for m in self.matrices}

    def linear(self, x: Tensor, m: Matrix) -> Tensor:
        """One declared matrix applied to ``x``: (M, N, in) -> (M, N, width)."""
        return batched_linear(x, getattr(self, f"W{m.name}"), getattr(self, f"b{m.name}") if m.bias else None)

    def forward(self, x: Tensor) -> Tensor:  # (M, N, in) -> (M, N, width)
        """Apply the layer's protocol equation."""
        return self.activate(self.preactivations(x))

    def activate(self, z: dict[str, Tensor]) -> Tensor:
        """The neuron's equation on its pre-activations (subclasses implement it)."""
        raise NotImplementedError

    def probe(self, **tensors: Tensor) -> None:
        """Keep named intermediates for diagnostics when recording; free otherwise."""
        if self.recording:
            self.probes.update({k: t.detach() for k, t in tensors.items()})

    def scaled(self, t: Tensor) -> Tensor:
        """``ω·t``; skips the multiply at ω = 1, which is exact, saving an op forward and backward."""
        return t if self.omega == 1.0 else self.omega * t

    def layer_norm(self, h: Tensor) -> Tensor:
        """LayerNorm over units with this replica's own affine weight and bias."""
        return F.layer_norm(h, (self.width,), eps=LN_EPS) * self.ln_weight + self.ln_bias

    def extra_repr(self) -> str:
        omega = f", ω={self.omega:g}" if self.uses_omega else ""
        return f"in={self.in_dim}, width={self.width}, replicas={self.replicas}{omega}, init={self.init}"


@declared("vanilla")
class Vanilla(NeuronLayer):
    """B1: ``ReLU(W·x + b)``."""

    def activate(self, z):
        return torch.relu(z[""])


@declared("singlu")
class SinGLU(NeuronLayer):
    """B2: ``sin(ω·g) ⊙ v`` (GLU-style)."""

    def activate(self, z):
        return torch.sin(self.scaled(z["g"])) * z["v"]


@declared("siren")
class Siren(NeuronLayer):
    """v2 ablation, periodic only: ``sin(ω·(W·x + b))``."""

    def activate(self, z):
        return torch.sin(self.scaled(z[""]))


@declared("bilinear")
class Bilinear(NeuronLayer):
    """v2 ablation, multiplicative only: ``u ⊙ (W2·x + b2)``."""

    def activate(self, z):
        return z["1"] * z["2"]


@declared("reglu")
class ReGLU(NeuronLayer):
    """v2 control: ``ReLU(g) ⊙ v``."""

    def activate(self, z):
        return torch.relu(z["g"]) * z["v"]


@declared("geglu")
class GeGLU(NeuronLayer):
    """v2 control: ``GELU(g) ⊙ v`` with the exact, erf-based GELU."""

    def activate(self, z):
        return F.gelu(z["g"]) * z["v"]


@declared("swiglu")
class SwiGLU(NeuronLayer):
    """v2 control: ``SiLU(g) ⊙ v`` (``SiLU(g) = g·sigmoid(g)``)."""

    def activate(self, z):
        return F.silu(z["g"]) * z["v"]


@declared("v1_rich")
class V1Rich(NeuronLayer):
    """v1: ``LayerNorm(u ⊙ sin(ω·(W2·x + b2)) + u)``, ``u = W1·x + b1``."""

    residual, norm = True, True

    def activate(self, z):
        u = z["1"]
        h = u * torch.sin(self.scaled(z["2"]))
        if self.residual:
            h = h + u
        return self.layer_norm(h) if self.norm else h


@declared("v1_no_residual")
class V1NoResidual(V1Rich):
    """v2 ablation: v1 without ``+u``."""

    residual = False


@declared("v1_no_norm")
class V1NoNorm(V1Rich):
    """v2 ablation: v1 without LayerNorm."""

    norm = False


@declared("v4_lowrank")
class V4LowRank(V1Rich):
    """v4: v1 with ``W1``, ``W2`` each a rank-r product ``A·B``.

    Rank ``r = max(1, width // 4)`` (capped at ``in_dim``): two factorised hidden matrices then cost about one
    full ``width × width`` matrix, which is the width fix v4 tests.
    """

    @staticmethod
    def rank(in_dim: int, width: int) -> int:
        """The factorisation rank of a layer (one place, used for shapes and counts)."""
        return min(in_dim, max(1, width // 4))

    @classmethod
    def param_specs(cls, in_dim, width):
        r = cls.rank(in_dim, width)
        specs = {}
        for m in cls.matrices:
            specs[f"A{m.name}"] = ((in_dim, r), m.role)
            specs[f"B{m.name}"] = ((r, width), m.role)
            specs[f"b{m.name}"] = ((1, width), m.role)
        specs.update({v.name: ((1, width), v.role) for v in cls.vectors})
        return specs

    def init_replica(self, m, gen, first):
        # each factor is initialised as its own nn.Linear (in -> r, then r -> width); SIREN bounds on the
        # sine branch's product are not defined for a factorisation, so init="siren" keeps this default.
        r = self.rank(self.in_dim, self.width)
        with torch.no_grad():
            for mat in self.matrices:
                uniform_(getattr(self, f"A{mat.name}")[m], 1.0 / math.sqrt(self.in_dim), gen)
                uniform_(getattr(self, f"B{mat.name}")[m], 1.0 / math.sqrt(r), gen)
                uniform_(getattr(self, f"b{mat.name}")[m], 1.0 / math.sqrt(self.in_dim), gen)
            for vec in self.vectors:
                getattr(self, vec.name)[m].fill_(vec.init)

    def linear(self, x, m):
        return batched_linear(
            torch.bmm(x, getattr(self, f"A{m.name}")),
            getattr(self, f"B{m.name}"),
            getattr(self, f"b{m.name}"),
        )


@declared("v4_shared")
class V4Shared(NeuronLayer):
    """v4: ``u ⊙ sin(ω·u) + u`` with one shared ``W``."""

    def activate(self, z):
        u = z[""]
        return u * torch.sin(self.scaled(u)) + u


@declared("v6_routing")
class V6Routing(NeuronLayer):
    """v6: ``α ⊙ (sin(ω·g) ⊙ v) + (1 − α) ⊙ v``, ``α = sigmoid(Wa·x + ba)``."""

    def activate(self, z):
        alpha, v = torch.sigmoid(z["a"]), z["v"]
        self.probe(alpha=alpha)
        return alpha * (torch.sin(self.scaled(z["g"])) * v) + (1 - alpha) * v


@declared("v7_learned_freq")
class V7LearnedFreq(NeuronLayer):
    """v7: ``sin(ω(x) ⊙ g) ⊙ v``, ``ω(x) = ω·softplus(Wω·x + bω) / ln 2``.

    ``Wω`` and ``bω`` start at zero, so ``ω(x) = ω`` exactly at init (softplus(0) = ln 2) and the frequency
    learns its input dependence from there.
    """

    def activate(self, z):
        omega_x = self.omega * (F.softplus(z["omega"]) / math.log(2.0))  # exactly ω at init
        self.probe(omega=omega_x)
        return torch.sin(omega_x * z["g"]) * z["v"]


@declared("v8_phase_gate")
class V8PhaseGate(NeuronLayer):
    """v8: ``sigmoid(Wa·x + ba) ⊙ sin(ω·g + φ) ⊙ v``."""

    def activate(self, z):
        gate, phase = torch.sigmoid(z["a"]), z["phi"]
        self.probe(gate=gate, phase=phase)
        return gate * torch.sin(self.scaled(z["g"]) + phase) * z["v"]


@declared("v9_controlled")
class V9Controlled(NeuronLayer):
    """v9: ``α ⊙ sin(ω(x) ⊙ g + π·tanh(φ)) ⊙ v + (1 − α) ⊙ v``, ``ω(x) = ω·(1 + 0.5·tanh(Wω·x))``.

    ``Wω·x`` has no bias, as the protocol writes it.
    """

    def activate(self, z):
        alpha = torch.sigmoid(z["a"])
        omega_x = self.omega * (1 + 0.5 * tanh(z["omega"]))
        phase = math.pi * tanh(z["phi"])
        self.probe(alpha=alpha, omega=omega_x, phase=phase)
        v = z["v"]
        return alpha * torch.sin(omega_x * z["g"] + phase) * v + (1 - alpha) * v


@declared("v10_free_phase")
class V10FreePhase(NeuronLayer):
    """v10: ``sin(ω·g + π·tanh(φ)) ⊙ v``."""

    def activate(self, z):
        phase = math.pi * tanh(z["phi"])
        self.probe(g=z["g"], phase=phase)
        return torch.sin(self.scaled(z["g"]) + phase) * z["v"]


@declared("v11_scaled_phase")
class V11ScaledPhase(NeuronLayer):
    """v11: ``sin(ω·(g + 0.1·tanh(φ))) ⊙ v``; the probed phase is the shift in radians, ``0.1·ω·tanh(φ)``."""

    def activate(self, z):
        shift = 0.1 * tanh(z["phi"])
        self.probe(g=z["g"], phase=self.omega * shift)
        return torch.sin(self.scaled(z["g"] + shift)) * z["v"]


@declared("v12_fm")
class V12FM(NeuronLayer):
    """v12: ``sin(ω·g ⊙ (1 + 0.2·tanh(φ))) ⊙ v``; probes the modulation depth ``0.2·tanh(φ)``."""

    def activate(self, z):
        depth = 0.2 * tanh(z["phi"])
        g = z["g"]
        self.probe(g=g, modulation=depth, phase=self.omega * g * depth)
        return torch.sin(self.scaled(g) * (1 + depth)) * z["v"]


@declared("v13_aligned_phase")
class V13AlignedPhase(NeuronLayer):
    """v13: ``sin(ω·g + 0.1·g ⊙ tanh(φ)) ⊙ v``."""

    def activate(self, z):
        g = z["g"]
        phase = 0.1 * g * tanh(z["phi"])
        self.probe(g=g, phase=phase)
        return torch.sin(self.scaled(g) + phase) * z["v"]


@declared("v15_dual_phase")
class V15DualPhase(NeuronLayer):
    """v15: ``sin(ω·g + β ⊙ φ) ⊙ (1 + α ⊙ sin(2ω·g + γ ⊙ φ)) ⊙ v`` with learned per-unit ``α, β, γ``.

    Init ``α = 0.1`` (a small second harmonic), ``β = γ = 1`` (the phase enters at full strength), so every
    parameter receives a gradient at step 0.
    """

    def activate(self, z):
        g, phi = z["g"], z["phi"]
        phase = self.beta * phi
        self.probe(g=g, phase=phase)
        harmonic = 1 + self.alpha * torch.sin(2 * self.omega * g + self.gamma * phi)
        return torch.sin(self.scaled(g) + phase) * harmonic * z["v"]


def _registry() -> dict[str, type[NeuronLayer]]:
    """Every declared neuron's class, in catalog order; a declaration without a class stops the import."""
    if LAYERS.keys() != catalog.NEURONS.keys():
        odd = sorted(LAYERS.keys() ^ catalog.NEURONS.keys())
        raise ImportError(f"neurons {odd} need both a declaration (rnlib.core.catalog) and a class (here)")
    return {name: LAYERS[name] for name in catalog.NEURONS}


NEURONS = _registry()


def neuron_class(name: str) -> type[NeuronLayer]:
    """The layer class registered as ``name``; a ``KeyError`` lists the valid names."""
    try:
        return NEURONS[name]
    except KeyError:
        raise KeyError(f"unknown neuron {name!r}; valid neurons: {', '.join(NEURONS)}") from None
