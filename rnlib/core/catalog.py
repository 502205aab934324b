"""The study's declarations, without torch: each neuron's matrices, vectors and equation, each task's row.

This is the registry's data half. ``rnlib.core.neurons`` gives each declared neuron its math (a layer class
whose ``activate`` writes the equation) and ``rnlib.core.tasks`` each declared task its data (a generator);
both refuse to import when a declaration lacks its half. Analysis, the summary and the README read only this
module, so they never import torch (docs/protocol.md §2 and §4 are the tables below in prose).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

KINDS = ("regression", "classification", "generalization")
METRICS = {"regression": "mse", "classification": "accuracy", "generalization": "mse"}  # protocol §4
BUDGET_TOLERANCE = 0.05  # protocol §2: every budget-matched model's count lies within 5% of its budget
BASELINES = ("vanilla", "singlu")  # protocol §3: every version notebook trains both
CAPACITY_KINDS = ("binary", "real")  # protocol §8: fair-coin labels, or y ~ N(0, 1) targets


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` are better (MSE, OOD degradation) or worse (accuracy)."""
    return metric in ("mse", "degradation")


# ----------------------------------------------------------------------------------------- neurons (§2)
@dataclass(frozen=True)
class Matrix:
    """One ``Linear`` of a layer: its name (``Wg`` is ``Matrix("g")``), role and placement."""

    name: str
    role: str = "direct"  # direct, meta (gates, phases, frequencies), norm: v05/v14 compare their gradients
    periodic: bool = False  # inside sin(ω·…): receives the SIREN init when init="siren"
    bias: bool = True
    zero_init: bool = False  # starts at 0 (v7: ω(x) = ω exactly at init)


@dataclass(frozen=True)
class Vector:
    """A learned per-unit vector (``α``, ``β``, ``γ``, LayerNorm affine) with its initial value."""

    name: str
    role: str
    init: float


@dataclass(frozen=True)
class Neuron:
    """A neuron's declaration: what it allocates, its equation (LaTeX) and the version that introduces it."""

    name: str
    version: str  # B1, B2 (the baselines) or the notebook version that studies it
    matrices: tuple[Matrix, ...]
    equation: str
    vectors: tuple[Vector, ...] = ()
    uses_omega: bool = True
    low_rank: bool = False  # matrices factorised as rank-r products (v4_lowrank)

    @property
    def periodic(self) -> bool:
        """Whether a matrix sits inside ``sin(ω·…)``."""
        return any(m.periodic for m in self.matrices)


LAYER_NORM = (Vector("ln_weight", "norm", 1.0), Vector("ln_bias", "norm", 0.0))  # nn.LayerNorm's init
V1_MATRICES = (Matrix("1"), Matrix("2", periodic=True))
GLU = (Matrix("g"), Matrix("v"))  # a gate and a value, neither inside a sine
PHASE_MATRICES = (Matrix("g", periodic=True), Matrix("phi", "meta"), Matrix("v"))  # v10 to v15

# fmt: off
NEURONS: dict[str, Neuron] = {n.name: n for n in (
    Neuron("vanilla", "B1", (Matrix(""),), r"\mathrm{ReLU}(Wx+b)", uses_omega=False),
    Neuron("singlu", "B2", (Matrix("g", periodic=True), Matrix("v")), r"\sin(\omega g)\odot v"),
    Neuron("v1_rich", "v1", V1_MATRICES, r"\mathrm{LN}(u\odot\sin(\omega(W_2x+b_2))+u)", LAYER_NORM),
    Neuron("siren", "v2", (Matrix("", periodic=True),), r"\sin(\omega(Wx+b))"),
    Neuron("bilinear", "v2", (Matrix("1"), Matrix("2")), r"u\odot(W_2x+b_2)", uses_omega=False),
    Neuron("v1_no_residual", "v2", V1_MATRICES, r"\mathrm{LN}(u\odot\sin(\omega(W_2x+b_2)))", LAYER_NORM),
    Neuron("v1_no_norm", "v2", V1_MATRICES, r"u\odot\sin(\omega(W_2x+b_2))+u"),
    # the GLU family (Shazeer 2020): SinGLU's gate with a standard activation, to tell the sine from the gate
    Neuron("reglu", "v2", GLU, r"\mathrm{ReLU}(g)\odot v", uses_omega=False),
    Neuron("geglu", "v2", GLU, r"\mathrm{GELU}(g)\odot v", uses_omega=False),  # the exact (erf) GELU
    Neuron("swiglu", "v2", GLU, r"\mathrm{SiLU}(g)\odot v", uses_omega=False),
    Neuron("v4_lowrank", "v4", V1_MATRICES, r"\mathrm{LN}(u\odot\sin(\omega(A_2B_2x+b_2))+u),\ u=A_1B_1x+b_1",
           LAYER_NORM, low_rank=True),
    Neuron("v4_shared", "v4", (Matrix("", periodic=True),), r"u\odot\sin(\omega u)+u,\ u=Wx+b"),
    Neuron("v6_routing", "v6", (Matrix("g", periodic=True), Matrix("v"), Matrix("a", "meta")),
           r"\alpha\odot\sin(\omega g)\odot v+(1-\alpha)\odot v,\ \alpha=\sigma(W_ax+b_a)"),
    Neuron("v7_learned_freq", "v7",
           (Matrix("g", periodic=True), Matrix("v"), Matrix("omega", "meta", zero_init=True)),
           r"\sin(\omega(x)\odot g)\odot v,\ \omega(x)=\omega\,\mathrm{softplus}(W_\omega x+b_\omega)/\ln 2"),
    Neuron("v8_phase_gate", "v8",
           (Matrix("a", "meta"), Matrix("g", periodic=True), Matrix("phi", "meta"), Matrix("v")),
           r"\sigma(W_ax+b_a)\odot\sin(\omega g+\varphi)\odot v"),
    Neuron("v9_controlled", "v9",
           (Matrix("g", periodic=True), Matrix("v"), Matrix("phi", "meta"), Matrix("a", "meta"),
            Matrix("omega", "meta", bias=False)),  # Wω·x has no bias, as the protocol writes it
           r"\alpha\odot\sin(\omega(x)\odot g+\pi\tanh\varphi)\odot v+(1-\alpha)\odot v,"
           r"\ \omega(x)=\omega(1+0.5\tanh(W_\omega x))"),
    Neuron("v10_free_phase", "v10", PHASE_MATRICES, r"\sin(\omega g+\pi\tanh\varphi)\odot v"),
    Neuron("v11_scaled_phase", "v11", PHASE_MATRICES, r"\sin(\omega(g+0.1\tanh\varphi))\odot v"),
    Neuron("v12_fm", "v12", PHASE_MATRICES, r"\sin(\omega g\odot(1+0.2\tanh\varphi))\odot v"),
    Neuron("v13_aligned_phase", "v13", PHASE_MATRICES, r"\sin(\omega g+0.1\,g\odot\tanh\varphi)\odot v"),
    Neuron("v15_dual_phase", "v15", PHASE_MATRICES,
           r"\sin(\omega g+\beta\odot\varphi)\odot(1+\alpha\odot\sin(2\omega g+\gamma\odot\varphi))\odot v",
           # α = 0.1: a small second harmonic; β = γ = 1: the phase enters at full strength, so every
           # parameter receives a gradient at step 0
           (Vector("alpha", "meta", 0.1), Vector("beta", "meta", 1.0), Vector("gamma", "meta", 1.0))),
)}


# ------------------------------------------------------------------------------------------- tasks (§4)
@dataclass(frozen=True)
class TaskInfo:
    """A task's row of protocol §4: what it is, its sizes and its default budget."""

    name: str
    kind: str
    metric: str
    in_dim: int
    out_dim: int
    n_train: int
    n_test: int
    default_budget: int
    description: str


TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    TaskInfo("complex4d", "regression", "mse", 4, 1, 1000, 1000, 8000,
             "exp(½·(sin(π(x1²+x2²)) + sin(π(x3²+x4²)))), x ~ U[-1,1]^4"),
    TaskInfo("nested2d", "regression", "mse", 2, 1, 1000, 1000, 3000, "sin(π·x2·sin(π·x1)), x ~ U[-1,1]^2"),
    TaskInfo("hifreq", "regression", "mse", 1, 1, 1000, 1000, 5000,
             "sin(2π·8x) + sin(2π·20x) + sin(2π·45x), x ~ U[-1,1]"),
    TaskInfo("memorize", "regression", "mse", 8, 4, 200, 200, 5000,
             "x ~ N(0, I8), y ~ N(0, I4); test set is the training set"),
    TaskInfo("spiral", "classification", "accuracy", 2, 2, 1000, 1000, 3000,
             "two spirals, 5 turns: r ~ U[0,1], angle 5·2π·r + π·class, + N(0, 0.02²)"),
    TaskInfo("checkerboard", "classification", "accuracy", 2, 2, 2000, 2000, 5000,
             "label = parity of ⌊4(x1+1)⌋ + ⌊4(x2+1)⌋ (8×8 board), x ~ U[-1,1]^2"),
    TaskInfo("ood", "generalization", "mse", 1, 1, 1000, 1000, 3000,
             "sin(3x) + ½x²; train x ~ U[-1,1], test x ~ U[1,2], id-test x ~ U[-1,1]"),
    TaskInfo("freqgen", "generalization", "mse", 2, 1, 1000, 1000, 3000,
             "input (x, κ/2π) -> sin(κx); train κ ~ U[π,2π], test κ = 10π"),
    TaskInfo("mixedfreq", "generalization", "mse", 2, 1, 1000, 1000, 5000,
             "input (x, κ/2π) -> sin(κx) + ½sin(2κx); train κ ~ U[π,2π], test κ = 10π"),
)}
# fmt: on


def digest() -> str:
    """A short hash of every declaration above: part of every job's id, since a notebook's output depends on
    what is registered (v03 tabulates every neuron's width, the summary orders by the registry)."""
    text = repr((BASELINES, CAPACITY_KINDS, list(NEURONS.values()), list(TASKS.values())))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
