"""Tests for rnlib.core.neurons and RichNet: every neuron against protocol §2's equations, written out anew.

The references (``rnlib.training.reference.REFERENCES``, which share no code with rnlib's layers) read a
replica's weights out of the module and apply the protocol's table with plain torch ops in float64
(LayerNorm by hand), so a changed equation, a swapped matrix or a lost term fails a test.
"""

import math

import pytest
import torch

from rnlib.core.models import build_model
from rnlib.core.neurons import NEURONS, SingleOutputLinear, Tanh, V4LowRank, batched_linear
from rnlib.training.reference import EQUATIONS, REFERENCES, NaiveNet, lin

M = 2  # replicas per test model, each from its own seed
SEEDS = (0, 1)
IN, OUT, WIDTH, N = 3, 2, 6, 32
TOL = {"rtol": 1e-5, "atol": 1e-5}
PI = math.pi
NAMES = sorted(NEURONS)


VECTOR_INIT = {"ln_weight": 1.0, "ln_bias": 0.0, "alpha": 0.1, "beta": 1.0, "gamma": 1.0}


# ----- helpers ----------------------------------------------------------------------------------------------
def replica(module, m):
    """Replica ``m``'s parameters of ``module`` as float64 slices, by local name."""
    return {name: t[m].detach().double() for name, t in module.named_parameters(recurse=False)}


def perturb(model, seed=123):
    """Overwrite every parameter (zero-inited ones included) with N(0, 1/fan_in) so no term hides.

    Scaling by the fan-in keeps pre-activations O(1), so float32 rounding inside sin(ω·…) stays far below
    the tolerance while every term still moves the output.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-2]))
    return model


@torch.no_grad()
def reference_model(model, name, x, omega):
    """The whole network for every replica in float64: ``NaiveNet`` (hidden layers from EQUATIONS, then the
    linear head) on replica ``m``'s copied weights, at the ω the test asks for rather than the model's own."""
    outs = []
    for m in range(model.replicas):
        net = NaiveNet(name, model, m).double()
        net.omega = omega
        outs.append(net(x[m].double()))
    return torch.stack(outs)  # (M, N, out)


def model(name, **kw):
    kw = {"width": WIDTH, "seeds": SEEDS, **kw}
    return build_model(name, IN, OUT, **kw)


def fan_in(param_name, layer):
    """Fan-in of a layer matrix or bias: rows of a matrix (rank for v4's B), the layer input for a bias."""
    if param_name.startswith(("W", "A", "B")):
        return getattr(layer, param_name).shape[1]
    return layer.in_dim


# ----- registry ---------------------------------------------------------------------------------------------
def test_every_registered_neuron_has_an_independent_reference():
    missing = sorted(set(NEURONS) - set(REFERENCES))
    assert not missing, f"add a Reference for {missing} to rnlib/training/reference.py REFERENCES"
    assert not set(REFERENCES) - set(NEURONS), "a Reference for a neuron that is not registered"


# ----- forward vs the protocol equations
# ------------------------------------------------------------------------
def uniform(*shape, seed):
    """U(-1, 1), protocol §4's input domain."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("omega", [1.0, 3.0])
@pytest.mark.parametrize("name", NAMES)
def test_layer_forward_matches_spec_equation(name, omega):
    net = perturb(model(name, omega=omega))
    for i, layer in enumerate(net.layers):
        x = uniform(M, N, layer.in_dim, seed=7 + i)  # (M, N, in): a different input per replica
        got = layer(x)
        assert got.shape == (M, N, WIDTH) and got.dtype == torch.float32
        for m in range(M):
            want = EQUATIONS[name](replica(layer, m), x[m].double(), omega)
            torch.testing.assert_close(got[m].double(), want, **TOL)


@pytest.mark.parametrize("omega", [1.0, 3.0])
@pytest.mark.parametrize("name", NAMES)
def test_network_forward_matches_reference_with_head(name, omega):
    net = perturb(model(name, omega=omega))
    assert len(net.layers) == 2
    x = uniform(N, IN, seed=8)  # (N, in), shared by the replicas
    xs = uniform(M, N, IN, seed=9)  # (M, N, in): one input per replica
    want_shared = reference_model(net, name, x.expand(M, N, IN), omega)
    want = reference_model(net, name, xs, omega)
    got = net(x)
    assert got.shape == (M, N, OUT)
    assert not torch.allclose(got[0], got[1])  # the replicas really are different models
    # float32: two layers of sin(ω·…) (2ω in v15, a learned ω(x) in v7) amplify rounding to ~1e-5 relative
    torch.testing.assert_close(got.double(), want_shared, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(net(xs).double(), want, rtol=1e-4, atol=1e-4)
    # float64: the same module agrees with the written-out equations to rounding
    net64 = net.double()
    torch.testing.assert_close(net64(x.double()), want_shared, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(net64(xs.double()), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_single_replica_takes_and_returns_two_dimensional_tensors(name):
    net = perturb(build_model(name, IN, OUT, width=WIDTH, seed=4))
    x = uniform(N, IN, seed=10)
    got = net(x)
    assert got.shape == (N, OUT)
    torch.testing.assert_close(got.double(), reference_model(net, name, x[None], 1.0)[0], **TOL)


def test_reference_catches_a_wrong_equation():
    """The comparison is sharp enough to see a small change of one constant (v11's 0.1 -> 0.11)."""
    net = perturb(model("v11_scaled_phase"))
    layer = net.layers[0]
    x = torch.randn(M, N, IN, generator=torch.Generator().manual_seed(1))
    p = replica(layer, 0)
    g, phi, v = lin(p, x[0].double(), "g"), lin(p, x[0].double(), "phi"), lin(p, x[0].double(), "v")
    wrong = torch.sin(g + 0.11 * torch.tanh(phi)) * v
    assert not torch.allclose(layer(x)[0].double(), wrong, **TOL)


# ----- v7 and replicas --------------------------------------------------------------------------------------
@pytest.mark.parametrize("omega", [1.0, 3.0, 30.0])
def test_v7_frequency_equals_omega_at_init(omega):
    net = model("v7_learned_freq", omega=omega)
    net.set_recording(True)
    net(torch.randn(N, IN, generator=torch.Generator().manual_seed(2)) * 5)
    for layer in net.layers:
        w_x = layer.probes["omega"]
        assert w_x.shape == (M, N, WIDTH)
        assert torch.equal(w_x, torch.full_like(w_x, omega)), (w_x.min().item(), w_x.max().item())


def test_v7_at_init_is_singlu_with_the_same_weights():
    layer = model("v7_learned_freq", omega=3.0).layers[0]
    x = torch.randn(M, N, IN, generator=torch.Generator().manual_seed(3))
    for m in range(M):
        torch.testing.assert_close(
            layer(x)[m].double(), EQUATIONS["singlu"](replica(layer, m), x[m].double(), 3.0), **TOL
        )


@pytest.mark.parametrize("init", ["default", "siren"])
@pytest.mark.parametrize("name", NAMES)
def test_replica_m_equals_model_built_from_its_seed(name, init):
    omega = 30.0 if init == "siren" else 1.0
    both = build_model(name, IN, OUT, width=WIDTH, seeds=[3, 5], omega=omega, init=init)
    for m, seed in enumerate((3, 5)):
        alone = build_model(name, IN, OUT, width=WIDTH, seed=seed, omega=omega, init=init)
        params = dict(alone.named_parameters())
        for pname, p in both.named_parameters():
            assert torch.equal(p[m], params[pname][0]), (pname, m)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_weights_different_seed_different_weights(name):
    a, b, c = (dict(build_model(name, IN, OUT, width=WIDTH, seed=s).named_parameters()) for s in (11, 11, 12))
    zero = {f"layers.{i}.{k}" for i in range(2) for k in REFERENCES[name].zero_init}
    for pname in a:
        assert torch.equal(a[pname], b[pname]), pname
        if pname.split(".")[-1] in VECTOR_INIT or pname in zero:
            continue  # constant inits are seed-independent by design
        assert not torch.equal(a[pname], c[pname]), pname


# ----- initialisation ---------------------------------------------------------------------------------------
def check_bound(t, bound, name, tight=True):
    big = t.abs().max().item()
    assert big <= bound + 1e-7, f"{name}: max |w| {big} > bound {bound}"
    if tight and t.numel() >= 8:
        assert big > 0.5 * bound, f"{name}: max |w| {big} suspiciously below bound {bound}"


@pytest.mark.parametrize("name", NAMES)
def test_default_init_is_pytorch_linear(name):
    net = build_model(name, IN, OUT, width=16, seeds=[0, 1])
    for i, layer in enumerate(net.layers):
        for pname, p in layer.named_parameters():
            label = f"layers.{i}.{pname}"
            if pname in VECTOR_INIT:
                assert torch.all(p == VECTOR_INIT[pname]), label
            elif pname in REFERENCES[name].zero_init:
                assert torch.all(p == 0), label
            else:
                check_bound(p, 1 / math.sqrt(fan_in(pname, layer)), label)
    check_bound(net.head_W, 1 / math.sqrt(16), "head_W")
    check_bound(net.head_b, 1 / math.sqrt(16), "head_b", tight=False)


@pytest.mark.parametrize("name", NAMES)
def test_siren_init_bounds(name):
    width, omega = 16, 30.0
    net = build_model(name, IN, OUT, width=width, seeds=[0, 1], omega=omega, init="siren")
    for i, layer in enumerate(net.layers):
        for pname, p in layer.named_parameters():
            label = f"layers.{i}.{pname}"
            if pname in REFERENCES[name].periodic:
                bound = 1 / IN if i == 0 else math.sqrt(6 / width) / omega  # SIREN sec. 3.2
                check_bound(p, bound, label)
            elif pname in VECTOR_INIT:
                assert torch.all(p == VECTOR_INIT[pname]), label
            elif pname in REFERENCES[name].zero_init:
                assert torch.all(p == 0), label
            else:
                check_bound(p, 1 / math.sqrt(fan_in(pname, layer)), label)


def test_siren_init_shrinks_the_sine_branch():
    """At ω = 30 the SIREN bounds are far below PyTorch's default, in the first layer and later ones."""
    a = build_model("singlu", IN, OUT, width=16, seed=0, omega=30.0)
    b = build_model("singlu", IN, OUT, width=16, seed=0, omega=30.0, init="siren")
    for i in range(2):
        assert b.layers[i].Wg.abs().max() < a.layers[i].Wg.abs().max()
    assert (b.layers[1].Wg.abs().max() * 30 * math.sqrt(16 / 6)).item() <= 1 + 1e-6


def test_v4_lowrank_rank_and_shapes():
    for in_dim, width, r in [(1, 8, 1), (8, 3, 1), (8, 16, 4), (3, 40, 3), (40, 40, 10), (9, 1, 1)]:
        assert V4LowRank.rank(in_dim, width) == r
        layer = V4LowRank(in_dim, width, replicas=2)
        assert layer.A1.shape == (2, in_dim, r) and layer.B1.shape == (2, r, width)
        assert layer.b1.shape == (2, 1, width) and layer.ln_weight.shape == (2, 1, width)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_shapes_have_replica_axis(name):
    net = model(name)
    for i, layer in enumerate(net.layers):
        d = IN if i == 0 else WIDTH
        for pname, p in layer.named_parameters():
            if pname.startswith("W"):
                assert p.shape == (M, d, WIDTH), pname
            elif pname[0] in "AB":
                continue  # checked in test_v4_lowrank_rank_and_shapes
            else:
                assert p.shape == (M, 1, WIDTH), pname
    assert net.head_W.shape == (M, WIDTH, OUT) and net.head_b.shape == (M, 1, OUT)


# ----- parameter groups -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_param_groups_follow_spec_roles(name):
    net = model(name, depth=3)
    groups = net.param_groups()
    assert set(groups) <= {"direct", "meta", "norm", "head"}
    ref = REFERENCES[name]
    direct, meta, norm = ref.direct, ref.meta, ref.norm
    for role, expected in (("direct", direct), ("meta", meta), ("norm", norm)):
        got = sorted(n for n, _ in groups.get(role, []))
        assert got == sorted(f"layers.{i}.{k}" for i in range(3) for k in expected), role
    assert sorted(n for n, _ in groups["head"]) == ["head_W", "head_b"]
    # every parameter in exactly one group, and the named tensor is the model's own
    grouped = [(n, p) for members in groups.values() for n, p in members]
    params = dict(net.named_parameters())
    assert sorted(n for n, _ in grouped) == sorted(params)
    assert len({id(p) for _, p in grouped}) == len(params)
    assert all(p is params[n] for n, p in grouped)


# ----- probes -----------------------------------------------------------------------------------------------
def test_probes_v6_alpha_in_unit_interval_and_v10_phase_bounded():
    x = torch.randn(N, IN, generator=torch.Generator().manual_seed(5))
    v6, v10 = perturb(model("v6_routing")), perturb(model("v10_free_phase"))
    v6.set_recording(True)
    v10.set_recording(True)
    v6(x)
    v10(x * 10)
    for layer in v6.layers:
        alpha = layer.probes["alpha"]
        assert alpha.shape == (M, N, WIDTH) and not alpha.requires_grad
        assert torch.all((alpha > 0) & (alpha < 1))
    for layer in v10.layers:
        phase = layer.probes["phase"]
        assert phase.shape == (M, N, WIDTH)
        assert torch.all(phase.abs() <= PI)
        assert phase.abs().max() > 1.0  # the free phase is not confined near zero


@pytest.mark.parametrize("name", NAMES)
def test_recording_off_leaves_probes_empty(name):
    net = model(name)
    x = torch.randn(N, IN, generator=torch.Generator().manual_seed(6))
    net(x)
    assert all(layer.probes == {} for layer in net.layers)
    net.set_recording(True)
    net(x)
    net.set_recording(False)
    assert all(layer.probes == {} for layer in net.layers)
    net(x)
    assert all(layer.probes == {} for layer in net.layers)


# ----- bad input --------------------------------------------------------------------------------------------
def test_unknown_neuron_lists_valid_names():
    with pytest.raises(KeyError) as err:
        build_model("v99_magic", IN, OUT, width=WIDTH)
    message = str(err.value)
    assert "v99_magic" in message
    assert all(name in message for name in NEURONS)


@pytest.mark.parametrize("init", ["xavier", "SIREN", ""])
def test_unknown_init_is_a_value_error(init):
    with pytest.raises(ValueError, match="init"):
        build_model("singlu", IN, OUT, width=WIDTH, init=init)


@pytest.mark.parametrize("requires_grad", [True, False])
def test_single_output_head_matches_the_matmul_in_value_and_gradient(requires_grad):
    """The broadcast form of a 1-output linear (forward and hand-written backward) against ``x @ w + b``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(M, N, WIDTH, generator=gen, dtype=torch.float64, requires_grad=requires_grad)
    w = torch.randn(M, WIDTH, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(M, 1, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    out = batched_linear(x, w, b)
    reference = torch.stack([x[m].detach() @ w[m].detach() + b[m].detach() for m in range(M)])
    torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
    if requires_grad:
        assert torch.autograd.gradcheck(SingleOutputLinear.apply, (x, w, b))


def test_tanh_matches_torch_tanh_in_value_and_gradient():
    """``2·sigmoid(2x) − 1`` against ``torch.tanh`` in float64, within the documented float32 error."""
    x = torch.cat([torch.linspace(-20, 20, 100_001), torch.tensor([0.0, -0.0, math.inf, -math.inf])])
    exact = torch.tanh(x.double())
    error = (Tanh.apply(x).double() - exact).abs()
    assert error.max() <= 2e-7, f"max abs error {error.max():.3g}"
    assert Tanh.apply(torch.tensor([math.nan])).isnan().all()
    x64 = (
        torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        .mul(3)
        .requires_grad_()
    )
    torch.testing.assert_close(Tanh.apply(x64), torch.tanh(x64), rtol=0, atol=1e-15)
    assert torch.autograd.gradcheck(Tanh.apply, (x64,))


def test_adding_a_neuron_takes_a_declaration_a_class_and_a_reference(monkeypatch):
    """The whole path of README's "Adding a neuron", with a throwaway `cosglu`: declared in the catalog, given
    its math by @declared, referenced apart; then the registry's own tests, budget matching and training
    take it as they take every neuron."""
    from rnlib.core import catalog, neurons
    from rnlib.core.models import count_params, width_for_budget
    from rnlib.training import fused
    from rnlib.training.reference import GLU, Reference, matrices
    from rnlib.training.trainer import TrainConfig, train

    decl = catalog.Neuron("cosglu", "v2", (catalog.Matrix("g", periodic=True), catalog.Matrix("v")),
                          r"\cos(\omega g)\odot v")  # fmt: skip
    monkeypatch.setitem(catalog.NEURONS, "cosglu", decl)  # 1. the declaration
    monkeypatch.setattr(neurons, "LAYERS", dict(neurons.LAYERS))

    @neurons.declared("cosglu")  # 2. the math
    class CosGLU(neurons.NeuronLayer):
        def activate(self, z):
            return torch.cos(self.scaled(z["g"])) * z["v"]

    assert neurons._registry()["cosglu"] is CosGLU  # the registry now takes it, in catalog order
    monkeypatch.setitem(NEURONS, "cosglu", CosGLU)

    def ref_cosglu(p, x, w):  # 3. the reference, written out apart
        return torch.cos(w * lin(p, x, "g")) * lin(p, x, "v")

    monkeypatch.setitem(REFERENCES, "cosglu", Reference(ref_cosglu, matrices(2), GLU, periodic=("Wg",)))
    monkeypatch.setitem(EQUATIONS, "cosglu", ref_cosglu)
    test_every_registered_neuron_has_an_independent_reference()
    test_layer_forward_matches_spec_equation("cosglu", 3.0)
    test_param_groups_follow_spec_roles("cosglu")
    test_siren_init_bounds("cosglu")
    width = width_for_budget("cosglu", 2, 1, 3000)
    count = REFERENCES["cosglu"].count
    assert (
        count_params(build_model("cosglu", 2, 1, budget=3000))
        == count(2, width) + count(width, width) + width + 1
    )
    assert fused.step_for("cosglu", "auto") == "autograd"  # no C entry: it trains with autograd
    runs = train("cosglu", "nested2d", [0], config=TrainConfig(steps=5, record_every=0))
    assert runs[0].steps == 5 and not runs[0].diverged
