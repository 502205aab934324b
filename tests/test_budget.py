"""Tests for budget matching (protocol §2): closed-form parameter counts, nearest width, 5% tolerance."""

import re

import pytest

from rnlib.core.models import build_model, count_params, width_for_budget
from rnlib.core.neurons import NEURONS
from rnlib.training.reference import REFERENCES

# protocol §4 table, copied by hand: task -> (in_dim, out_dim, default budget)
TASK_TABLE = {
    "complex4d": (4, 1, 8000),
    "nested2d": (2, 1, 3000),
    "hifreq": (1, 1, 5000),
    "memorize": (8, 4, 5000),
    "spiral": (2, 2, 3000),
    "checkerboard": (2, 2, 5000),
    "ood": (1, 1, 3000),
    "freqgen": (2, 1, 3000),
    "mixedfreq": (2, 1, 5000),
}
NAMES = sorted(NEURONS)
TOLERANCE = 0.05  # protocol §2: every built model within 5% of its budget


def closed_form(neuron, in_dim, out_dim, n, depth=2):
    """Parameters of ``depth`` hidden layers of width ``n`` and the linear head."""
    layers = REFERENCES[neuron].count  # closed form, per layer (rnlib.training.reference)
    return layers(in_dim, n) + (depth - 1) * layers(n, n) + n * out_dim + out_dim


@pytest.mark.parametrize("name", NAMES)
def test_count_params_equals_closed_form_at_many_widths(name):
    for in_dim, out_dim in ((1, 1), (8, 4)):
        for width in (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 33):
            for depth in (1, 2, 3):
                model = build_model(name, in_dim, out_dim, width=width, depth=depth, seeds=[0, 1])
                assert count_params(model) == closed_form(name, in_dim, out_dim, width, depth), (
                    in_dim,
                    width,
                    depth,
                )


def check_nearest(name, in_dim, out_dim, budget, depth):
    width = width_for_budget(name, in_dim, out_dim, budget, depth)
    model = build_model(name, in_dim, out_dim, budget=budget, depth=depth)
    count = count_params(model)
    assert model.width == width
    assert count == closed_form(name, in_dim, out_dim, width, depth)
    assert abs(count - budget) <= TOLERANCE * budget, (width, count)
    gap = abs(count - budget)
    assert abs(closed_form(name, in_dim, out_dim, width + 1, depth) - budget) >= gap
    if width > 1:  # ties go to the smaller width, so the narrower one must be strictly farther
        assert abs(closed_form(name, in_dim, out_dim, width - 1, depth) - budget) > gap


@pytest.mark.parametrize("task", list(TASK_TABLE))
@pytest.mark.parametrize("name", NAMES)
def test_default_budget_gives_nearest_count_within_tolerance(name, task):
    in_dim, out_dim, budget = TASK_TABLE[task]
    check_nearest(name, in_dim, out_dim, budget, depth=2)


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("name", ["vanilla", "v1_rich", "v4_lowrank", "v9_controlled", "v15_dual_phase"])
@pytest.mark.parametrize("task", ["complex4d", "hifreq", "memorize", "spiral"])
def test_other_depths(name, task, depth):
    in_dim, out_dim, budget = TASK_TABLE[task]
    check_nearest(name, in_dim, out_dim, budget, depth)


def test_nearest_may_lie_above_budget_and_ties_go_to_the_smaller_width():
    # vanilla, in 2, out 1, depth 1: (2n + n) + (n + 1) = 4n + 1
    assert width_for_budget("vanilla", 2, 1, 404, depth=1) == 101  # 405 is nearer than 401
    assert width_for_budget("vanilla", 2, 1, 402, depth=1) == 100
    assert width_for_budget("vanilla", 2, 1, 403, depth=1) == 100  # 401 and 405 tie


def test_tolerance_is_five_percent_inclusive():
    # vanilla, in 2, out 1, depth 1: counts 4n + 1
    assert width_for_budget("vanilla", 2, 1, 20, depth=1) == 5  # 21 is exactly 5% above 20
    for budget, nearest in ((39, 37), (18, 17)):  # 5.1% and 5.6% off
        with pytest.raises(ValueError) as err:
            width_for_budget("vanilla", 2, 1, budget, depth=1)
        assert mentions(str(err.value), nearest)


@pytest.mark.parametrize("name", ["vanilla", "singlu", "v4_lowrank", "v9_controlled", "v15_dual_phase"])
def test_width_is_monotone_in_budget(name):
    widths = []
    for budget in range(200, 20001, 50):
        try:
            widths.append(width_for_budget(name, 2, 1, budget))
        except ValueError:
            continue  # a budget between two widths' counts, beyond 5% of both
    assert len(widths) > 300
    assert widths == sorted(widths)


# ----- errors -----------------------------------------------------------------------------------------------
def mentions(message, number):
    """``number`` appears in ``message`` as a whole number (not as part of a longer one)."""
    return re.search(rf"(?<![\d.]){re.escape(str(number))}(?![\d.])", message) is not None


@pytest.mark.parametrize(("name", "budget"), [("v9_controlled", 20), ("vanilla", 3), ("v15_dual_phase", 40)])
def test_impossible_budget_names_neuron_budget_and_nearest_count(name, budget):
    in_dim, out_dim = 2, 1
    counts = [closed_form(name, in_dim, out_dim, w) for w in range(1, 50)]
    nearest = min(counts, key=lambda c: abs(c - budget))
    assert abs(nearest - budget) > TOLERANCE * budget  # the budget really is impossible
    for call in (
        lambda: width_for_budget(name, in_dim, out_dim, budget),
        lambda: build_model(name, in_dim, out_dim, budget=budget),
    ):
        with pytest.raises(ValueError) as err:
            call()
        message = str(err.value)
        assert name in message and mentions(message, budget) and mentions(message, nearest), message


@pytest.mark.parametrize("budget", [0, -1, -3000])
def test_non_positive_budget_names_neuron_budget_and_nearest_count(budget):
    """protocol §2: a budget no width meets within 5% is an error naming neuron, budget and nearest count."""
    nearest = closed_form("singlu", 2, 1, 1)  # width 1 is the closest any width gets to a budget <= 0
    with pytest.raises(ValueError) as err:
        build_model("singlu", 2, 1, budget=budget)
    message = str(err.value)
    assert "singlu" in message and mentions(message, budget), message
    assert mentions(message, nearest), message


def test_budget_and_width_together_or_neither_is_an_error():
    with pytest.raises(ValueError, match="singlu"):
        build_model("singlu", 2, 1, budget=3000, width=10)
    with pytest.raises(ValueError, match="singlu"):
        build_model("singlu", 2, 1)


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="omgea"):
        build_model("singlu", 2, 1, width=10, omgea=3.0)


def test_unknown_neuron_in_budget_search_lists_valid_names():
    with pytest.raises(KeyError) as err:
        width_for_budget("v99_magic", 2, 1, 3000)
    assert all(name in str(err.value) for name in NEURONS)
