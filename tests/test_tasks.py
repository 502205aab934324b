"""Tests for rnlib.core.tasks: every task against protocol §4, with references written out independently."""

import dataclasses
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from rnlib.core import tasks
from rnlib.core.tasks import TASKS, Task, make_task, task_names

# protocol §4 table, copied by hand: name -> (kind, metric, in_dim, out_dim, n_train, n_test, default budget)
PROTOCOL_TABLE = {
    "complex4d": ("regression", "mse", 4, 1, 1000, 1000, 8000),
    "nested2d": ("regression", "mse", 2, 1, 1000, 1000, 3000),
    "hifreq": ("regression", "mse", 1, 1, 1000, 1000, 5000),
    "memorize": ("regression", "mse", 8, 4, 200, 200, 5000),
    "spiral": ("classification", "accuracy", 2, 2, 1000, 1000, 3000),
    "checkerboard": ("classification", "accuracy", 2, 2, 2000, 2000, 5000),
    "ood": ("generalization", "mse", 1, 1, 1000, 1000, 3000),
    "freqgen": ("generalization", "mse", 2, 1, 1000, 1000, 3000),
    "mixedfreq": ("generalization", "mse", 2, 1, 1000, 1000, 5000),
}
NAMES = list(PROTOCOL_TABLE)
TENSOR_FIELDS = ("x_train", "y_train", "x_test", "y_test", "x_id_test", "y_id_test")
PI = np.pi


def tensors(task: Task) -> dict[str, torch.Tensor]:
    return {f: getattr(task, f) for f in TENSOR_FIELDS if getattr(task, f) is not None}


def np64(t: torch.Tensor) -> np.ndarray:
    return t.numpy().astype(np.float64)


# Independent float64 references for the regression targets, from the stored float32 inputs.
def ref_complex4d(x):
    return np.exp(
        0.5 * (np.sin(PI * (x[:, 0] ** 2 + x[:, 1] ** 2)) + np.sin(PI * (x[:, 2] ** 2 + x[:, 3] ** 2)))
    )


def ref_nested2d(x):
    return np.sin(PI * x[:, 1] * np.sin(PI * x[:, 0]))


def ref_hifreq(x):
    x = x[:, 0]
    return np.sin(2 * PI * 8 * x) + np.sin(2 * PI * 20 * x) + np.sin(2 * PI * 45 * x)


def ref_ood(x):
    return np.sin(3 * x[:, 0]) + 0.5 * x[:, 0] ** 2


def ref_freqgen(x):
    kappa = 2 * PI * x[:, 1]
    return np.sin(kappa * x[:, 0])


def ref_mixedfreq(x):
    kappa = 2 * PI * x[:, 1]
    return np.sin(kappa * x[:, 0]) + 0.5 * np.sin(2 * kappa * x[:, 0])


REFERENCES = {
    "complex4d": ref_complex4d,
    "nested2d": ref_nested2d,
    "hifreq": ref_hifreq,
    "ood": ref_ood,
    "freqgen": ref_freqgen,
    "mixedfreq": ref_mixedfreq,
}


def test_registry_is_spec_table_in_order():
    assert task_names() == NAMES
    for name, spec in TASKS.items():
        assert spec.name == name
        assert spec.description and "\n" not in spec.description


@pytest.mark.parametrize("name", NAMES)
def test_metadata_shapes_and_dtypes(name):
    kind, metric, in_dim, out_dim, n_train, n_test, budget = PROTOCOL_TABLE[name]
    spec = TASKS[name]
    assert (spec.kind, spec.metric, spec.in_dim, spec.out_dim) == (kind, metric, in_dim, out_dim)
    assert (spec.n_train, spec.n_test, spec.default_budget) == (n_train, n_test, budget)
    task = make_task(name, 0)
    assert (task.name, task.kind, task.metric, task.in_dim, task.out_dim) == (
        name,
        kind,
        metric,
        in_dim,
        out_dim,
    )
    assert (task.n_train, task.n_test, task.default_budget) == (n_train, n_test, budget)
    assert task.x_train.shape == (n_train, in_dim) and task.x_test.shape == (n_test, in_dim)
    assert task.x_train.dtype == task.x_test.dtype == torch.float32
    if kind == "classification":
        assert task.n_classes == 2
        assert task.y_train.shape == (n_train,) and task.y_test.shape == (n_test,)
        assert task.y_train.dtype == task.y_test.dtype == torch.int64
        assert set(task.y_train.tolist()) == set(task.y_test.tolist()) == {0, 1}
    else:
        assert task.n_classes == 0
        assert task.y_train.shape == (n_train, out_dim) and task.y_test.shape == (n_test, out_dim)
        assert task.y_train.dtype == task.y_test.dtype == torch.float32
    if name == "ood":
        assert task.x_id_test.shape == (1000, 1) and task.y_id_test.shape == (1000, 1)
        assert task.x_id_test.dtype == task.y_id_test.dtype == torch.float32
    else:
        assert task.x_id_test is None and task.y_id_test is None
    for t in tensors(task).values():
        assert t.device.type == "cpu"
        if t.is_floating_point():
            assert torch.isfinite(t).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_bit_identical_other_seed_differs(name):
    a, b, c = make_task(name, 0), make_task(name, 0), make_task(name, 1)
    for field, t in tensors(a).items():
        assert torch.equal(t, getattr(b, field)), field
        assert t is not getattr(b, field), "a fresh task must not share tensors with an earlier call"
    assert not torch.equal(a.x_train, c.x_train)
    assert not torch.equal(a.x_test, c.x_test) and not torch.equal(a.y_train, c.y_train)


def test_tasks_do_not_share_random_streams():
    # hifreq and ood both start by drawing 1000 points uniform on [-1, 1]: identical streams would show here
    assert not torch.equal(make_task("hifreq", 0).x_train, make_task("ood", 0).x_train)
    assert not torch.equal(make_task("nested2d", 3).x_train, make_task("checkerboard", 3).x_train[:1000])
    # the CPU generator keeps only 32 bits of its seed: mixing the name in must not depend on high bits
    seeds = {tasks.generator_seed(n, s) for n in NAMES for s in range(5)}
    assert len(seeds) == len(NAMES) * 5 and max(seeds) < 2**32


_HASH_SCRIPT = """
import hashlib
from rnlib.core.tasks import TASKS, make_task
h = hashlib.sha256()
for name in TASKS:
    task = make_task(name, 7)
    for f in ("x_train", "y_train", "x_test", "y_test", "x_id_test", "y_id_test"):
        t = getattr(task, f)
        if t is not None:
            h.update(t.numpy().tobytes())
print(h.hexdigest())
"""


def test_bit_identical_across_cpu_instruction_sets():
    # torch's scalar and AVX2 kernels differ in the last bits for float32 randn: ATEN_CPU_CAPABILITY=default
    # forces the scalar path, which a CPU without AVX2 would take
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", _HASH_SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    h = hashlib.sha256()
    for name in TASKS:
        for t in tensors(make_task(name, 7)).values():
            h.update(t.numpy().tobytes())
    assert out.stdout.strip() == h.hexdigest()


@pytest.mark.parametrize("name", list(REFERENCES))
@pytest.mark.parametrize("seed", [0, 5])
def test_regression_targets_match_formula(name, seed):
    task = make_task(name, seed)
    for x, y in [(task.x_train, task.y_train), (task.x_test, task.y_test), (task.x_id_test, task.y_id_test)]:
        if x is None:
            continue
        want = REFERENCES[name](np64(x))
        np.testing.assert_allclose(np64(y[:, 0]), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["complex4d", "nested2d", "hifreq", "checkerboard", "ood", "freqgen", "mixedfreq"]
)
def test_uniform_inputs_in_unit_box(name):
    task = make_task(name, 0)
    xs = [task.x_train, task.x_test] if name not in ("ood", "freqgen", "mixedfreq") else [task.x_train]
    if name == "ood":
        xs.append(task.x_id_test)
    if name in ("freqgen", "mixedfreq"):
        xs = [task.x_train[:, :1], task.x_test[:, :1]]
    for x in xs:
        assert x.min() >= -1 and x.max() <= 1
        # uniform, not clustered: every quarter of [-1, 1] holds 25% ± 5% of the values
        counts = np.histogram(x.numpy().ravel(), bins=4, range=(-1, 1))[0] / x.numel()
        assert np.all(np.abs(counts - 0.25) < 0.05), counts


def test_memorize_test_set_is_training_set_and_gaussian():
    task = make_task("memorize", 0)
    assert task.x_test is task.x_train and task.y_test is task.y_train
    for t in (task.x_train, task.y_train):
        assert abs(t.mean().item()) < 0.1 and 0.9 < t.std().item() < 1.1  # N(0, 1), not U[-1, 1] (std 0.58)
        assert t.abs().max() > 2.5  # Gaussian tails


def test_ood_ranges():
    task = make_task("ood", 0)
    assert task.x_test.min() >= 1 and task.x_test.max() <= 2
    assert task.x_id_test.min() >= -1 and task.x_id_test.max() <= 1
    assert not torch.equal(task.x_id_test, task.x_train)  # a fresh split, not the training points


@pytest.mark.parametrize("name", ["freqgen", "mixedfreq"])
def test_frequency_tasks(name):
    task = make_task(name, 0)
    c_train = task.x_train[:, 1]
    assert c_train.min() >= 0.5 and c_train.max() <= 1  # κ/2π for κ ∈ [π, 2π]
    assert c_train.std() > 0.1  # κ drawn per point, not one κ for all
    assert torch.all(task.x_test[:, 1] == 5)  # κ = 10π
    x = np64(task.x_test[:, 0])
    want = np.sin(10 * PI * x) + (0.5 * np.sin(20 * PI * x) if name == "mixedfreq" else 0)
    np.testing.assert_allclose(np64(task.y_test[:, 0]), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_checkerboard_labels_are_parity(seed):
    task = make_task("checkerboard", seed)
    for x, y in [(task.x_train, task.y_train), (task.x_test, task.y_test)]:
        x = np64(x)
        want = (np.floor(4 * (x[:, 0] + 1)) + np.floor(4 * (x[:, 1] + 1))) % 2
        np.testing.assert_array_equal(y.numpy(), want.astype(np.int64))
        assert 0.45 < y.float().mean() < 0.55


def spiral_curves(n: int = 5001) -> list[torch.Tensor]:
    r = torch.linspace(0, 1, n, dtype=torch.float64)
    return [
        r[:, None] * torch.stack([torch.cos(10 * PI * r + PI * c), torch.sin(10 * PI * r + PI * c)], 1)
        for c in (0, 1)
    ]


@pytest.mark.parametrize("seed", [0, 1])
def test_spiral_balanced_and_near_own_curve(seed):
    task = make_task("spiral", seed)
    curves = spiral_curves()
    for x, y in [(task.x_train, task.y_train), (task.x_test, task.y_test)]:
        assert (y == 1).sum() == (y == 0).sum() == len(y) // 2
        x = x.double()
        radius = x.norm(dim=1)
        assert radius.max() <= 1 + 6 * 0.02
        keep = radius > 0.1
        dist = torch.stack([torch.cdist(x[keep], c).min(dim=1).values for c in curves], 1)  # (points, class)
        own = dist.gather(1, y[keep, None])[:, 0]
        other = dist.gather(1, 1 - y[keep, None])[:, 0]
        assert (own < other).double().mean() > 0.95
        assert 0.008 < own.median() < 0.02  # noise σ = 0.02: median |N(0, σ²)| ≈ 0.0135


def test_spiral_noiseless_points_lie_on_their_arm(monkeypatch):
    monkeypatch.setattr(tasks, "SPIRAL_NOISE", 0.0)
    task = make_task("spiral", 0)
    x, y = np64(task.x_train), task.y_train.numpy()
    r = np.hypot(x[:, 0], x[:, 1])
    assert r.min() >= 0 and r.max() <= 1 and 0.4 < r.mean() < 0.6  # r ~ U[0, 1]
    keep = r > 0.1
    delta = np.arctan2(x[keep, 1], x[keep, 0]) - (5 * 2 * PI * r[keep] + PI * y[keep])
    wrapped = np.angle(np.exp(1j * delta))  # angle difference in (-π, π]
    assert np.abs(wrapped).max() < 1e-4


@pytest.mark.parametrize("bad", ["foo", "", "Spiral"])
def test_unknown_task_lists_valid_names(bad):
    listing = ", ".join(sorted(NAMES))
    with pytest.raises(KeyError, match=f"unknown task '{bad}'; valid tasks: {listing}"):
        make_task(bad, 0)


@pytest.mark.parametrize("seed", [-1, 1.0, True, "0", 2**32, None])
def test_bad_seed_rejected(seed):
    with pytest.raises(ValueError, match="seed"):
        make_task("spiral", seed)


def test_task_validates_and_has_short_repr():
    task = make_task("spiral", 0)
    with pytest.raises(ValueError, match="spiral"):
        dataclasses.replace(task, y_train=task.y_train.float())
    with pytest.raises(ValueError, match="spiral"):
        dataclasses.replace(task, x_test=task.x_test[:, :1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.name = "other"
    text = repr(make_task("ood", 0))
    assert "ood" in text and "1000x1" in text and "tensor(" not in text and len(text) < 200
    assert len(repr(task).splitlines()) == 1


@pytest.mark.parametrize("name", task_names())
def test_trivial_value_is_the_better_constant_predictor(name):
    # protocol §4: the better of 0 and the training mean (MSE), the training majority class (accuracy),
    # written out in numpy from the tensors, independently of Task.trivial_value
    t = make_task(name, 3)
    y_train, y_test = t.y_train.numpy().astype(np.float64), t.y_test.numpy().astype(np.float64)
    if t.metric == "accuracy":
        majority = 1 if (y_train == 1).sum() > (y_train == 0).sum() else 0
        want = float(np.mean(y_test == majority))
    else:
        zero = float(np.mean(y_test**2))
        mean = float(np.mean((y_test - y_train.mean(axis=0, keepdims=True)) ** 2))
        want = min(zero, mean)
    assert t.trivial_value() == pytest.approx(want, rel=1e-12)


def test_trivial_value_planted():
    # a planted case: the training mean (3) beats 0 on targets near 3; majority class 1 on a 2:1 train split
    x = torch.zeros(3, 1)
    reg = Task("p", "regression", "mse", 1, 1, 10, 3, x, torch.tensor([[2.0], [3.0], [4.0]]), x,
               torch.tensor([[3.0], [3.0], [5.0]]))  # fmt: skip
    assert reg.trivial_value() == pytest.approx(4 / 3)  # (0 + 0 + 4) / 3, against 0's (9 + 9 + 25) / 3
    cls = Task("c", "classification", "accuracy", 1, 2, 10, 3, x, torch.tensor([1, 1, 0]), x,
               torch.tensor([0, 1, 0]))  # fmt: skip
    assert cls.trivial_value() == pytest.approx(1 / 3)


# sha256 (first 16 hex) of seed 0's train/test/id tensors before the validation split existed: drawing it
# after them must leave every one of these bits as it was
TRAIN_TEST_DIGESTS = {
    "complex4d": "a934431314668a4f", "nested2d": "fee217282df773b1", "hifreq": "05e85d007f2699ce",
    "memorize": "6ecfa3945066b352", "spiral": "e1e8891517cc1a6a", "checkerboard": "ae7326386e3103db",
    "ood": "fd3a207e6c797f19", "freqgen": "639a05bdb77d6b7e", "mixedfreq": "dff3ca3574343fe3",
}  # fmt: skip


@pytest.mark.parametrize("name", task_names())
def test_validation_split_leaves_train_and_test_bits_unchanged(name):
    h = hashlib.sha256()
    for t in tensors(make_task(name, 0)).values():
        h.update(t.numpy().tobytes())
    assert h.hexdigest()[:16] == TRAIN_TEST_DIGESTS[name]


@pytest.mark.parametrize("name", [n for n in task_names() if n != "memorize"])
def test_validation_split_is_fresh_points_of_the_training_distribution(name):
    t, again, other = make_task(name, 4), make_task(name, 4), make_task(name, 5)
    assert torch.equal(t.x_val, again.x_val) and torch.equal(t.y_val, again.y_val)  # deterministic per seed
    assert not torch.equal(t.x_val, other.x_val)
    assert t.x_val.shape == t.x_test.shape and t.y_val.dtype == t.y_train.dtype  # the test set's size
    val = {tuple(r) for r in t.x_val.tolist()}
    assert not val & {tuple(r) for r in t.x_train.tolist()} and not val & {
        tuple(r) for r in t.x_test.tolist()
    }
    x = np64(t.x_val)
    if name in REFERENCES:  # targets by the independent float64 formula
        np.testing.assert_allclose(np64(t.y_val)[:, 0], REFERENCES[name](x), atol=1e-6)
    if name == "ood":
        assert x.min() >= -1 and x.max() <= 1  # the training range, not the OOD test range [1, 2]
    if name in ("freqgen", "mixedfreq"):
        kappa = 2 * PI * x[:, 1]
        assert kappa.min() >= PI and kappa.max() <= 2 * PI  # training κ, not the test's 10π
    if name == "checkerboard":
        cells = np.floor(4 * (x + 1)).astype(int)
        assert (t.y_val.numpy() == cells.sum(1) % 2).all()
    if t.metric == "accuracy":
        assert 0.4 < t.y_val.double().mean() < 0.6  # both classes, near balanced like train


def test_memorize_has_no_validation_split():
    t = make_task("memorize", 0)
    assert t.x_val is None and t.y_val is None
