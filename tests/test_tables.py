"""Tests for rnlib.analysis.tables: the version notebooks' comparisons and their one verdict rule."""

import pandas as pd
from test_summary import rec

from rnlib.analysis import tables


def planted(wins_against: dict[str, int], tasks: list[str]) -> pd.DataFrame:
    """``MODEL`` beats each baseline on the first ``wins_against[baseline]`` tasks (lower MSE, every seed)."""
    rows = []
    for i, task in enumerate(tasks):
        for seed in (0, 1, 2):
            rows.append(rec(MODEL, task, seed, 0.5))
            for baseline, won in wins_against.items():
                rows.append(rec(baseline, task, seed, 1.0 if i < won else 0.25))
    return pd.DataFrame(rows)


MODEL = "v10_free_phase"
TASKS5 = ["complex4d", "nested2d", "hifreq", "ood", "freqgen"]  # all MSE tasks


def test_beats_baselines_holds_only_with_a_majority_against_each() -> None:
    held = tables.beats_baselines(planted({"vanilla": 3, "singlu": 3}, TASKS5), MODEL)
    assert f"**Verdict: the hypothesis held.** {MODEL} beats vanilla on 3 of 5 tasks and singlu on 3" in held
    assert f"- {MODEL} beats vanilla on 3 of 5 tasks (complex4d, nested2d, hifreq), in every seed" in held
    half = tables.beats_baselines(planted({"vanilla": 5, "singlu": 2}, TASKS5), MODEL, note=" Note.")
    assert "**Verdict: the hypothesis did not hold.**" in half
    assert half.endswith("against each baseline, on the mean over seeds). Note.")


def test_majority_is_strictly_more_than_half() -> None:
    assert tables.majority(pd.Series([True, True, False]))
    assert not tables.majority(pd.Series([True, False]))
    assert not tables.majority(pd.Series([], dtype=bool))


def test_verdict_lists_its_comparisons_then_one_verdict_sentence() -> None:
    text = tables.verdict(False, "x beats y on 1 of 9 tasks", "a rule", ["x beats y", "x beats z"], " More.")
    assert text == (
        "- x beats y.\n- x beats z.\n\n**Verdict: the hypothesis did not hold.** x beats y on 1 of 9 tasks "
        "(criterion: a rule). More."
    )
