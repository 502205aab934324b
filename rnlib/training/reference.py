"""The naive reference: protocol §2's equations written out with stock PyTorch, one model per seed.

Not used by the study. ``EQUATIONS`` are the protocol's table applied to one replica's weights with plain
torch ops
(LayerNorm by hand, stock ``torch.tanh``/``torch.sigmoid``); tests check every rnlib layer against them in
float64. ``naive_train`` trains one ``NaiveNet`` (those equations, ``addmm`` as ``nn.Linear`` computes it)
with stock ``torch.optim.Adam`` and ``CosineAnnealingLR``, one seed after another: the way a study without
rnlib trains. Tests check the batched trainer against it, and ``benchmarks/train_throughput.py`` measures the
trainer's speed-up over it. It shares only the initial weights with rnlib (copied from rnlib's initialiser
for the same seed, which tests check on its own: PyTorch's default bounds, SIREN's, one generator per seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

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


# neuron -> hidden layer (weights of one replica, input (N, in), ω) -> (N, width)
EQUATIONS: dict[str, Callable[[Params, Tensor, float], Tensor]] = {
    "vanilla": ref_vanilla,
    "singlu": ref_singlu,
    "v1_rich": ref_v1_rich,
    "siren": ref_siren,
    "bilinear": ref_bilinear,
    "v1_no_residual": ref_v1_no_residual,
    "v1_no_norm": ref_v1_no_norm,
    "v4_lowrank": ref_v4_lowrank,
    "v4_shared": ref_v4_shared,
    "v6_routing": ref_v6_routing,
    "v7_learned_freq": ref_v7_learned_freq,
    "v8_phase_gate": ref_v8_phase_gate,
    "v9_controlled": ref_v9_controlled,
    "v10_free_phase": ref_v10_free_phase,
    "v11_scaled_phase": ref_v11_scaled_phase,
    "v12_fm": ref_v12_fm,
    "v13_aligned_phase": ref_v13_aligned_phase,
    "v15_dual_phase": ref_v15_dual_phase,
}


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
