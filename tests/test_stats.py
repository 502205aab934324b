"""The comparison rule (protocol §5, rnlib.analysis.stats) against cases computed by hand.

The t quantiles are the textbook table's (t_{0.975, 2} = 4.303, t_{0.975, 4} = 2.776), so the tests do not
lean on the library that the code uses.
"""

import math

import numpy as np
import pandas as pd
import pytest

from rnlib.analysis import stats

T975 = {2: 4.302653, 4: 2.776445}  # Student t 97.5% quantiles from a printed table, df 2 and 4


def seeds(values: list[float]) -> pd.Series:
    return pd.Series(values, index=range(len(values)), dtype=float)


def mse_pair(diffs: list[float], base: float = 1e-2) -> tuple[pd.Series, pd.Series]:
    """A and B whose log10 MSE differ by ``diffs`` seed by seed."""
    b = seeds([base * (1 + 0.1 * i) for i in range(len(diffs))])
    return b * 10 ** np.asarray(diffs), b


def test_a_small_consistent_effect_over_five_seeds_is_decided() -> None:
    diffs = [-0.05, -0.04, -0.06, -0.05, -0.045]
    c = stats.paired(*mse_pair(diffs), "mse")
    mean, sd = np.mean(diffs), np.std(diffs, ddof=1)
    half = T975[4] * sd / math.sqrt(5)
    assert c.outcome == "better" and c.seeds == 5 and c.excluded == 0
    assert (c.diff, c.low, c.high) == pytest.approx((mean, mean - half, mean + half), abs=1e-6)
    assert c.p < 0.05
    assert stats.paired(*reversed(mse_pair(diffs)), "mse").outcome == "worse"


def test_the_same_mean_with_one_contrary_seed_of_three_is_undecided() -> None:
    steady = stats.paired(*mse_pair([-0.15, -0.15, -0.15]), "mse")
    assert steady.outcome == "better" and (steady.low, steady.high) == pytest.approx((-0.15, -0.15))
    c = stats.paired(*mse_pair([-0.25, -0.25, 0.05]), "mse")  # the same mean, -0.15, one seed against
    half = T975[2] * np.std([-0.25, -0.25, 0.05], ddof=1) / math.sqrt(3)
    assert c.outcome == "undecided" and c.diff == pytest.approx(-0.15)
    assert (c.low, c.high) == pytest.approx((-0.15 - half, -0.15 + half), abs=1e-6)


def test_accuracy_is_compared_in_points() -> None:
    c = stats.paired(seeds([0.90, 0.92, 0.91]), seeds([0.80, 0.81, 0.79]), "accuracy")
    half = T975[2] * 1.0 / math.sqrt(3)  # differences 10, 11, 12 points: sd 1
    assert c.outcome == "better" and (c.low, c.high) == pytest.approx((11 - half, 11 + half))
    assert stats.paired(seeds([0.8, 0.8]), seeds([0.8, 0.8]), "accuracy").outcome == "tie"  # identical


def test_two_mses_under_the_float_floor_tie() -> None:
    c = stats.paired(seeds([1e-12, 3e-13, 2e-11]), seeds([4e-10, 1e-14, 5e-9]), "mse")
    assert c.outcome == "tie" and c.diff == 0
    # one side above the floor is a real difference, decided as usual
    assert stats.paired(seeds([1e-12, 3e-13, 2e-11]), seeds([1e-3, 2e-3, 3e-3]), "mse").outcome == "better"


def test_diverged_seeds_are_left_out_and_counted() -> None:
    a = seeds([1e-3, np.nan, 1.1e-3, np.inf, 0.9e-3])
    b = seeds([1e-2, 1e-2, 1.1e-2, 1e-2, 0.9e-2])
    c = stats.paired(a, b, "mse")
    assert c.seeds == 3 and c.excluded == 2 and c.outcome == "better" and "2 diverged" in c.text("mse")
    alone = stats.paired(seeds([1e-3, np.nan]), seeds([1e-2, 1e-2]), "mse")
    assert alone.outcome == "undecided" and alone.seeds == 1  # one pair gives no interval


def test_only_shared_seeds_are_paired() -> None:
    a = pd.Series([1e-3, 1e-3, 1e-3], index=[0, 1, 2])
    b = pd.Series([1e-2, 1e-2], index=[1, 2])
    assert stats.paired(a, b, "mse").seeds == 2


def test_holm_step_down() -> None:
    # sorted p 0.01, 0.03, 0.04, 0.5 against 0.05/4, 0.05/3, ...: only the first passes, and it stops there
    assert stats.holm([0.01, 0.04, 0.03, 0.5]).tolist() == [True, False, False, False]
    assert stats.holm([0.001, 0.012, 0.02, np.nan]).tolist() == [True, True, True, False]
    assert stats.holm([]).tolist() == []


def test_holm_takes_back_a_lone_nominal_win_in_a_large_family() -> None:
    outcomes = pd.Series(["better"] + ["undecided"] * 9)
    p = pd.Series([0.02] + [0.5] * 9)
    assert stats.paired is not None and stats.holm_outcomes(outcomes, p).tolist() == ["undecided"] * 10
    t = stats.tally(outcomes, p)
    assert t.verdict == "undecided" and t.agree == 0 and t.undecided == 10


@pytest.mark.parametrize(
    ("agree", "against", "verdict"),
    [(4, 0, "supported"), (3, 1, "supported"), (1, 3, "contradicted"), (2, 2, "mixed"), (1, 0, "undecided"),
     (0, 0, "undecided")],
)  # fmt: skip
def test_tally_verdicts(agree: int, against: int, verdict: str) -> None:
    outcomes = pd.Series(
        ["better"] * agree + ["worse"] * against + ["undecided", "tie", stats.NOTHING_LEARNED]
    )
    t = stats.tally(outcomes, pd.Series([1e-6] * (agree + against) + [0.5, np.nan, np.nan]))
    assert (t.verdict, t.agree, t.against, t.undecided, t.ties, t.nothing_learned) == (
        verdict, agree, against, 1, 1, 1
    )  # fmt: skip
    assert stats.tally(outcomes.replace({"better": "worse", "worse": "better"}), pd.Series(
        [1e-6] * (agree + against) + [0.5, np.nan, np.nan]), agree="worse").verdict == verdict  # fmt: skip


def test_a_single_decided_comparison_decides_a_one_comparison_claim() -> None:
    assert stats.tally(pd.Series(["better"]), pd.Series([0.001])).verdict == "supported"


def test_combine_and_either() -> None:
    assert stats.combine("supported", "supported") == "supported"
    assert stats.combine("supported", "undecided") == "undecided"
    assert stats.combine("undecided", "contradicted") == "contradicted"
    assert stats.combine("supported", "mixed") == "mixed"
    assert stats.either("contradicted", "supported") == "supported"
    assert stats.either("contradicted", "contradicted") == "contradicted"
    assert stats.either("contradicted", "undecided") == "undecided"


def test_geometric_centre_and_spread() -> None:
    v = [0.66, 12.3, 6.46]  # issue 17's SinGLU freqgen seeds: the arithmetic mean 6.47 ranks by one seed
    assert stats.centre(v, "mse") == pytest.approx((0.66 * 12.3 * 6.46) ** (1 / 3))
    logs = np.log10(v)
    assert stats.spread(v, "mse") == pytest.approx(10 ** np.std(logs, ddof=1))
    assert stats.centre([0.9, 0.8, np.nan], "accuracy") == pytest.approx(0.85)
    assert stats.centre([1e-14, 1e-12], "mse") == stats.FLOAT_FLOOR  # floored: float precision is one value


def test_learned_needs_a_model_beating_the_reference_in_a_majority_of_seeds() -> None:
    def rows(task: str, metric: str, values: dict[str, list[float]], ref: float) -> list[dict]:
        return [{"task": task, "metric": metric, "model": m, "seed": s, "value": v, "trivial_value": ref}
                for m, vs in values.items() for s, v in enumerate(vs)]  # fmt: skip

    df = pd.DataFrame(
        rows("freqgen", "mse", {"a": [0.6, 0.4, 0.7], "b": [0.9, 0.8, 0.45]}, 0.5)  # 1 of 3 each: no
        + rows("ood", "mse", {"a": [0.2, 0.3, 0.9]}, 0.5)  # 2 of 3: yes
        + rows("spiral", "accuracy", {"a": [0.5, 0.5, 0.9]}, 0.5)  # equal is not better
        + rows("hifreq", "mse", {"a": [np.nan, 0.1, 0.9]}, 0.5)  # a diverged seed does not beat it
    )
    assert stats.learned(df) == {"freqgen": False, "ood": True, "spiral": False, "hifreq": False}
    assert stats.learned(df.drop(columns="trivial_value")) == dict.fromkeys(
        ["freqgen", "ood", "spiral", "hifreq"], True
    )


@pytest.mark.parametrize(
    ("agree", "undecided", "verdict"), [(2, 3, "undecided"), (3, 3, "supported"), (2, 2, "supported")]
)
def test_a_claim_needs_half_of_its_testable_comparisons_decided(
    agree: int, undecided: int, verdict: str
) -> None:
    # v10 against singlu in the fused run: 2 decided of 5 testable; the autograd run decided none of them
    outcomes = pd.Series(
        ["better"] * agree + ["undecided"] * undecided + ["tie"] * 3
    )  # ties are not testable
    assert (
        stats.tally(outcomes, pd.Series([1e-9] * agree + [0.5] * undecided + [np.nan] * 3)).verdict == verdict
    )


def test_holm_outcomes_work_by_position_on_a_repeated_index() -> None:
    # pooled comparisons are concatenated frames whose indexes repeat (v05's ω claim failed on this)
    outcomes = pd.Series(["better", "worse", "undecided", "tie"], index=[0, 1, 0, 1])
    held = stats.holm_outcomes(outcomes, pd.Series([1e-6, 0.03, 0.5, np.nan], index=[0, 1, 0, 1]))
    assert held.tolist() == ["better", "undecided", "undecided", "tie"] and list(held.index) == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("small", "large", "verdict"),
    [("contradicted", "supported", "supported"), ("mixed", "supported", "supported"),
     ("supported", "supported", "contradicted"), ("undecided", "contradicted", "contradicted"),
     ("undecided", "supported", "undecided"), ("contradicted", "undecided", "undecided")],
)  # fmt: skip
def test_overtakes_is_a_budget_effect(small: str, large: str, verdict: str) -> None:
    assert stats.overtakes(small, large) == verdict
