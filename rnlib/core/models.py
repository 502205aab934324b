"""Networks of one neuron type at a matched parameter budget: ``depth`` hidden layers, then a linear head."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rnlib.core.catalog import BUDGET_TOLERANCE
from rnlib.core.neurons import NeuronLayer, batched_linear, neuron_class, uniform_

MAX_WIDTH = 1 << 16  # search ceiling; far above any budget this study uses
DEFAULT_DEPTH = 2  # protocol §2


class RichNet(nn.Module):
    """``depth`` hidden layers of one neuron followed by a linear head, for ``M`` independent replicas.

    Replica ``m`` is initialised from ``seeds[m]`` alone, so it equals ``build_model(..., seed=seeds[m])``.
    """

    def __init__(
        self,
        neuron: str,
        in_dim: int,
        out_dim: int,
        width: int,
        depth: int = DEFAULT_DEPTH,
        *,
        seeds: Sequence[int] = (0,),
        omega: float = 1.0,
        init: str = "default",
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
        layer_cls = neuron_class(neuron)
        self.neuron, self.in_dim, self.out_dim, self.width, self.depth = neuron, in_dim, out_dim, width, depth
        self.seeds = tuple(int(s) for s in seeds)
        self.replicas = len(self.seeds)
        self.layers = nn.ModuleList(
            layer_cls(d, width, replicas=self.replicas, omega=omega, init=init)
            for d in [in_dim] + [width] * (depth - 1)
        )
        self.head_W = nn.Parameter(torch.empty(self.replicas, width, out_dim))
        self.head_b = nn.Parameter(torch.empty(self.replicas, 1, out_dim))
        for m, seed in enumerate(self.seeds):
            self.init_replica(m, seed)

    def init_replica(self, m: int, seed: int) -> None:
        """Draw replica ``m``'s initial weights from its own generator, layer by layer, then the head."""
        gen = torch.Generator().manual_seed(seed)
        for i, layer in enumerate(self.layers):
            layer.init_replica(m, gen, first=i == 0)
        bound = 1.0 / math.sqrt(self.width)  # nn.Linear default
        with torch.no_grad():
            uniform_(self.head_W[m], bound, gen)
            uniform_(self.head_b[m], bound, gen)

    def forward(self, x: Tensor) -> Tensor:
        """(N, in) -> (N, out) for one replica, or (M, N, in) / shared (N, in) -> (M, N, out)."""
        single = x.dim() == 2
        h = x.expand(self.replicas, *x.shape) if single else x  # (M, N, in)
        for layer in self.layers:
            h = layer(h)  # (M, N, width)
        out = batched_linear(h, self.head_W, self.head_b)  # (M, N, out)
        return out[0] if single and self.replicas == 1 else out

    def param_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Parameters by role: ``direct`` (Wg, Wv, …), ``meta`` (Wφ, Wa, Wω, α β γ), ``norm``, ``head``."""
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {}
        for i, layer in enumerate(self.layers):
            roles = layer.roles()
            for name, p in layer.named_parameters():
                groups.setdefault(roles[name], []).append((f"layers.{i}.{name}", p))
        groups.setdefault("head", []).extend([("head_W", self.head_W), ("head_b", self.head_b)])
        return groups

    def set_recording(self, on: bool) -> None:
        """Make every hidden layer keep (or stop keeping) its named intermediates in ``layer.probes``."""
        for layer in self.layers:
            layer.recording = on
            layer.probes = {}

    def extra_repr(self) -> str:
        return f"neuron={self.neuron}, params/replica={count_params(self)}, seeds={list(self.seeds)}"


def count_params(model: nn.Module) -> int:
    """Trainable parameters of one model (weights, biases, LayerNorm, per-unit vectors), per replica."""
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total // getattr(model, "replicas", 1)


def param_count(neuron: str, in_dim: int, out_dim: int, width: int, depth: int = DEFAULT_DEPTH) -> int:
    """What ``count_params`` reports for this architecture, computed from the layer's declared shapes."""
    layer_cls: type[NeuronLayer] = neuron_class(neuron)
    hidden = layer_cls.count(in_dim, width) + (depth - 1) * layer_cls.count(width, width)
    return hidden + width * out_dim + out_dim


def width_for_budget(
    neuron: str, in_dim: int, out_dim: int, budget: int, depth: int = DEFAULT_DEPTH, **options: object
) -> int:
    """The width whose parameter count is nearest to ``budget`` (ties go to the smaller, cheaper width).

    Nearest rather than largest-below: neurons with 4-5 matrices per layer step by ~8% of a 3K budget per
    unit of width, and only the nearest count is guaranteed within half a step of the budget.
    """
    neuron_class(neuron)  # unknown names fail here, with the list of valid ones
    if not isinstance(budget, numbers.Integral) or budget <= 0:
        smallest = param_count(neuron, in_dim, out_dim, 1, depth)
        raise ValueError(
            f"neuron {neuron!r} cannot meet budget {budget!r}: budgets are positive integers; "
            f"nearest count is {smallest} (width 1)"
        )
    budget = int(budget)
    lo, hi = 1, MAX_WIDTH  # invariant: count(lo) <= budget < count(hi), unless count(1) > budget
    if param_count(neuron, in_dim, out_dim, lo, depth) > budget:
        hi = lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if param_count(neuron, in_dim, out_dim, mid, depth) <= budget:
            lo = mid
        else:
            hi = mid
    below, above = (param_count(neuron, in_dim, out_dim, w, depth) for w in (lo, hi))
    width = lo if budget - below <= above - budget or below > budget else hi
    nearest = param_count(neuron, in_dim, out_dim, width, depth)
    if abs(nearest - budget) > BUDGET_TOLERANCE * budget:
        raise ValueError(
            f"neuron {neuron!r} cannot meet budget {budget} within {BUDGET_TOLERANCE:.0%}: nearest count is "
            f"{nearest} (width {width}, in={in_dim}, out={out_dim}, depth={depth})"
        )
    return width


def build_model(
    neuron: str,
    in_dim: int,
    out_dim: int,
    *,
    budget: int | None = None,
    width: int | None = None,
    depth: int = DEFAULT_DEPTH,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    **options: object,
) -> RichNet:
    """A network of ``neuron`` sized by exactly one of ``budget`` (matched width) or ``width``.

    ``options`` are ``omega`` and ``init`` ("default" or "siren"); ``seeds`` builds one replica per seed.
    """
    if (budget is None) == (width is None):
        raise ValueError(f"give exactly one of budget or width for neuron {neuron!r}")
    unknown = set(options) - {"omega", "init"}
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))} for {neuron!r}; valid: omega, init")
    if budget is not None:
        width = width_for_budget(neuron, in_dim, out_dim, budget, depth)
    return RichNet(
        neuron, in_dim, out_dim, width, depth, seeds=(seed,) if seeds is None else seeds, **options
    )
