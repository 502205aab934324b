"""The naive reference: protocol §2's equations written out with stock PyTorch, one model per seed.

Not used by the study. ``REFERENCES`` hold, per neuron, what the tests expect of it: its equation
(``EQUATIONS``: the protocol's table applied to one replica's weights with plain torch ops, LayerNorm by
hand, stock ``torch.tanh``/``torch.sigmoid``; tests check every rnlib layer against them in float64), its
parameters by role, its periodic and zero-initialised matrices. ``naive_train`` trains one ``NaiveNet``
(those equations, ``addmm`` as ``nn.Linear`` computes it) with stock ``torch.optim.Adam`` and
``CosineAnnealingLR``, one seed after another: the way a study without rnlib trains. Tests check the batched
trainer against it, and ``benchmarks/train_throughput.py`` measures the trainer's speed-up over it. It shares
only the initial weights with rnlib (copied from rnlib's initialiser for the same seed, which tests check on
its own: PyTorch's default bounds, SIREN's, one generator per seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from rnlib.core.models import RichNet, build_model
from rnlib.core.tasks import make_task

LN_EPS = 1e-5  # protocol: LayerNorm as torch.nn.LayerNorm's default
PI = math.pi
# one replica's layer weights: matrices [in, width], biases and vectors [1, width]
Params = Mapping[str, Tensor]


def lin(p: Params, x: Tensor, k: str) -> Tensor:
    """``W_k·x + b_k`` in the stored-transposed layout, one ``addmm`` as ``nn.Linear`` computes it."""
    return torch.addmm(p[f"b{k}"], x, p[f"W{k}"])


def layer_norm(h: Tensor, p: Params) -> Tensor:
    """LayerNorm over the units, written out: biased variance and ε as ``nn.LayerNorm``."""
    mean = h.mean(dim=-1, keepdim=True)
    var = ((h - mean) ** 2).mean(dim=-1, keepdim=True)
    return (h - mean) / torch.sqrt(var + LN_EPS) * p["ln_weight"] + p["ln_bias"]


def ref_vanilla(p, x, w):
    return torch.relu(lin(p, x, ""))


def ref_singlu(p, x, w):
    return torch.sin(w * lin(p, x, "g")) * lin(p, x, "v")


def ref_siren(p, x, w):
    return torch.sin(w * lin(p, x, ""))


def ref_bilinear(p, x, w):
    return lin(p, x, "1") * lin(p, x, "2")


def ref_reglu(p, x, w):
    return torch.clamp(lin(p, x, "g"), min=0) * lin(p, x, "v")


def ref_geglu(p, x, w):
    g = lin(p, x, "g")
    return 0.5 * g * (1 + torch.erf(g / math.sqrt(2))) * lin(p, x, "v")


def ref_swiglu(p, x, w):
    g = lin(p, x, "g")
    return g / (1 + torch.exp(-g)) * lin(p, x, "v")


def ref_v1_rich(p, x, w):
    u = lin(p, x, "1")
    return layer_norm(u * torch.sin(w * lin(p, x, "2")) + u, p)


def ref_v1_no_residual(p, x, w):
    return layer_norm(lin(p, x, "1") * torch.sin(w * lin(p, x, "2")), p)


def ref_v1_no_norm(p, x, w):
    u = lin(p, x, "1")
    return u * torch.sin(w * lin(p, x, "2")) + u


def ref_v4_lowrank(p, x, w):
    u = x @ (p["A1"] @ p["B1"]) + p["b1"]  # W1 = A1·B1, multiplied out first on purpose
    s = x @ (p["A2"] @ p["B2"]) + p["b2"]
    return layer_norm(u * torch.sin(w * s) + u, p)


def ref_v4_shared(p, x, w):
    u = lin(p, x, "")
    return u * torch.sin(w * u) + u


def ref_v6_routing(p, x, w):
    a = torch.sigmoid(lin(p, x, "a"))
    v = lin(p, x, "v")
    return a * (torch.sin(w * lin(p, x, "g")) * v) + (1 - a) * v


def ref_v7_learned_freq(p, x, w):
    w_x = w * torch.log1p(torch.exp(lin(p, x, "omega"))) / math.log(2.0)  # softplus written out; = ω at init
    return torch.sin(w_x * lin(p, x, "g")) * lin(p, x, "v")


def ref_v8_phase_gate(p, x, w):
    gate = torch.sigmoid(lin(p, x, "a"))
    return gate * torch.sin(w * lin(p, x, "g") + lin(p, x, "phi")) * lin(p, x, "v")


def ref_v9_controlled(p, x, w):
    a = torch.sigmoid(lin(p, x, "a"))
    w_x = w * (1 + 0.5 * torch.tanh(x @ p["Womega"]))  # no bias on Wω
    v = lin(p, x, "v")
    return a * torch.sin(w_x * lin(p, x, "g") + PI * torch.tanh(lin(p, x, "phi"))) * v + (1 - a) * v


def ref_v10_free_phase(p, x, w):
    return torch.sin(w * lin(p, x, "g") + PI * torch.tanh(lin(p, x, "phi"))) * lin(p, x, "v")


def ref_v11_scaled_phase(p, x, w):
    return torch.sin(w * (lin(p, x, "g") + 0.1 * torch.tanh(lin(p, x, "phi")))) * lin(p, x, "v")


def ref_v12_fm(p, x, w):
    return torch.sin(w * lin(p, x, "g") * (1 + 0.2 * torch.tanh(lin(p, x, "phi")))) * lin(p, x, "v")


def ref_v13_aligned_phase(p, x, w):
    g = lin(p, x, "g")
    return torch.sin(w * g + 0.1 * g * torch.tanh(lin(p, x, "phi"))) * lin(p, x, "v")


def ref_v15_dual_phase(p, x, w):
    g, phi = lin(p, x, "g"), lin(p, x, "phi")
    first = torch.sin(w * g + p["beta"] * phi)
    second = 1 + p["alpha"] * torch.sin(2 * w * g + p["gamma"] * phi)
    return first * second * lin(p, x, "v")


# Parameter names of one hidden layer, by role (protocol §2: meta = Wφ, Wa, Wω, their biases, α β γ).
GLU = frozenset({"Wg", "bg", "Wv", "bv"})
TWO = frozenset({"W1", "b1", "W2", "b2"})
ONE = frozenset({"W", "b"})
LN = frozenset({"ln_weight", "ln_bias"})
PHI = frozenset({"Wphi", "bphi"})


def full(i: int, n: int) -> int:
    """Parameters of one ``Linear`` i -> n with bias."""
    return i * n + n


def low_rank(i: int, n: int) -> int:
    """v4: ``A·B`` with rank r = min(i, max(1, n // 4)), plus the bias."""
    r = min(i, max(1, n // 4))
    return r * (i + n) + n


@dataclass(frozen=True)
class Reference:
    """What the tests expect of one neuron, written out apart from rnlib's layers and declarations."""

    equation: Callable[[Params, Tensor, float], Tensor]  # weights of one replica, (N, in), ω -> (N, width)
    count: Callable[[int, int], int]  # closed-form parameters of one layer with i inputs and width n
    direct: frozenset[str]  # parameter names by role
    meta: frozenset[str] = frozenset()
    norm: frozenset[str] = frozenset()
    # matrices inside sin(ω·…) that init="siren" re-initialises (v4_lowrank's sine branch is factorised, and
    # keeps the default init: SIREN's bounds are for a full matrix)
    periodic: tuple[str, ...] = ()
    zero_init: frozenset[str] = frozenset()  # parameters that start at 0


def matrices(k: int, extra: int = 0) -> Callable[[int, int], int]:
    """A layer of ``k`` full ``Linear`` i -> n plus ``extra`` per-unit vectors of n."""
    return lambda i, n: k * full(i, n) + extra * n


V4 = frozenset({"A1", "B1", "b1", "A2", "B2", "b2"})
SINE = ("Wg",)  # the GLU neurons' sine branch
# fmt: off
REFERENCES: dict[str, Reference] = {
    "vanilla": Reference(ref_vanilla, matrices(1), ONE),
    "singlu": Reference(ref_singlu, matrices(2), GLU, periodic=SINE),
    "v1_rich": Reference(ref_v1_rich, matrices(2, 2), TWO, norm=LN, periodic=("W2",)),  # + LayerNorm
    "siren": Reference(ref_siren, matrices(1), ONE, periodic=("W",)),
    "bilinear": Reference(ref_bilinear, matrices(2), TWO),
    "v1_no_residual": Reference(ref_v1_no_residual, matrices(2, 2), TWO, norm=LN, periodic=("W2",)),
    "v1_no_norm": Reference(ref_v1_no_norm, matrices(2), TWO, periodic=("W2",)),
    "reglu": Reference(ref_reglu, matrices(2), GLU),
    "geglu": Reference(ref_geglu, matrices(2), GLU),
    "swiglu": Reference(ref_swiglu, matrices(2), GLU),
    "v4_lowrank": Reference(ref_v4_lowrank, lambda i, n: 2 * low_rank(i, n) + 2 * n, V4, norm=LN),
    "v4_shared": Reference(ref_v4_shared, matrices(1), ONE, periodic=("W",)),
    "v6_routing": Reference(ref_v6_routing, matrices(3), GLU, frozenset({"Wa", "ba"}), periodic=SINE),
    "v7_learned_freq": Reference(ref_v7_learned_freq, matrices(3), GLU, frozenset({"Womega", "bomega"}),
                                 periodic=SINE, zero_init=frozenset({"Womega", "bomega"})),
    "v8_phase_gate": Reference(ref_v8_phase_gate, matrices(4), GLU, frozenset({"Wa", "ba"}) | PHI,
                               periodic=SINE),
    "v9_controlled": Reference(ref_v9_controlled, lambda i, n: 5 * i * n + 4 * n,  # Wω has no bias
                               GLU, frozenset({"Wa", "ba", "Womega"}) | PHI, periodic=SINE),
    "v10_free_phase": Reference(ref_v10_free_phase, matrices(3), GLU, PHI, periodic=SINE),
    "v11_scaled_phase": Reference(ref_v11_scaled_phase, matrices(3), GLU, PHI, periodic=SINE),
    "v12_fm": Reference(ref_v12_fm, matrices(3), GLU, PHI, periodic=SINE),
    "v13_aligned_phase": Reference(ref_v13_aligned_phase, matrices(3), GLU, PHI, periodic=SINE),
    "v15_dual_phase": Reference(ref_v15_dual_phase, matrices(3, 3), GLU, PHI | {"alpha", "beta", "gamma"},
                                periodic=SINE),  # + α, β, γ
}
# fmt: on
EQUATIONS = {name: ref.equation for name, ref in REFERENCES.items()}  # neuron -> hidden layer


class NaiveNet(nn.Module):
    """One model: ``depth`` hidden layers applying ``EQUATIONS[neuron]``, then a linear head.

    Its parameters are replica ``m`` of ``init`` (a rnlib model), copied, in the same order and shapes
    without the replica axis.
    """

    def __init__(self, neuron: str, init: RichNet, m: int = 0) -> None:
        super().__init__()
        self.omega, self.equation = init.layers[0].omega, EQUATIONS[neuron]

        def copy(t: Tensor) -> nn.Parameter:
            return nn.Parameter(t[m].detach().clone())

        self.hidden = nn.ModuleList(  # (name, tensor) pairs keep rnlib's order; a dict would be sorted
            nn.ParameterDict([(name, copy(t)) for name, t in layer.named_parameters()])
            for layer in init.layers
        )
        self.head_W, self.head_b = copy(init.head_W), copy(init.head_b)

    def forward(self, x: Tensor) -> Tensor:
        """(N, in) -> (N, out)."""
        for p in self.hidden:
            x = self.equation(p, x, self.omega)
        return torch.addmm(self.head_b, x, self.head_W)


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
) -> tuple[NaiveNet, list[float]]:
    """Train one model the textbook way; return it and its per-step training loss."""
    t = make_task(task, seed)
    if budget is None and width is None:
        budget = t.default_budget
    init = build_model(neuron, t.in_dim, t.out_dim, budget=budget, width=width, seed=seed, **options)
    model = NaiveNet(neuron, init)
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
