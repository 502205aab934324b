"""Tests for rnlib.analysis.tables: the version notebooks' tables and verdicts, by the one comparison rule."""

import pandas as pd
from test_summary import rec

from rnlib.analysis import tables

MODEL = "v10_free_phase"
TASKS5 = ["complex4d", "nested2d", "hifreq", "ood", "freqgen"]  # all MSE tasks
SEEDS5 = (0, 1, 2, 3, 4)


def planted(wins_against: dict[str, int], tasks: list[str], noisy: tuple[str, ...] = ()) -> pd.DataFrame:
    """``MODEL`` beats each baseline on the first ``wins_against[baseline]`` tasks (a 2× lower MSE in every
    seed) and loses on the rest; on ``noisy`` tasks it wins in 3 seeds and loses in 2 (undecided)."""
    rows = []
    for i, task in enumerate(tasks):
        for seed in SEEDS5:
            scale = 1 + 0.05 * seed
            rows.append(rec(MODEL, task, seed, 0.01 * scale))
            for baseline, won in wins_against.items():
                factor = (2.0 if seed < 3 else 0.3) if task in noisy else 2.0 if i < won else 0.5
                rows.append(rec(baseline, task, seed, 0.01 * scale * factor))
    return pd.DataFrame(rows)


def test_compare_decides_each_task_by_the_paired_interval() -> None:
    c = tables.compare(planted({"vanilla": 3}, TASKS5, noisy=("ood",)), MODEL, "vanilla").set_index("task")
    assert c["outcome"].to_dict() == {"complex4d": "better", "nested2d": "better", "hifreq": "better",
                                      "ood": "undecided", "freqgen": "worse"}  # fmt: skip
    assert c.loc["complex4d", "diff"] == -0.30103 or abs(c.loc["complex4d", "diff"] + 0.30103) < 1e-5
    assert c["wins"].sum() == 3 and (c["seeds"] == 5).all()


def test_beats_baselines_supported_contradicted_mixed_undecided() -> None:
    held = tables.beats_baselines(planted({"vanilla": 5, "singlu": 4}, TASKS5), MODEL)
    assert (
        held.splitlines()[0]
        == f"- {MODEL} vs vanilla, of 5 tasks (each by its own 95% interval): better on 5 (complex4d, "
        "nested2d, hifreq, ood, freqgen)."
    )
    assert "**Verdict: supported.** against vanilla: supported, 5 agree, 0 against" in held
    lost = tables.beats_baselines(planted({"vanilla": 0, "singlu": 5}, TASKS5), MODEL, note=" Note.")
    assert "**Verdict: contradicted.**" in lost and lost.endswith("across the tasks). Note.")
    assert "**Verdict: mixed.**" in tables.beats_baselines(
        planted({"vanilla": 2, "singlu": 2}, TASKS5[:4]), MODEL
    )
    noisy = tables.beats_baselines(planted({"vanilla": 5, "singlu": 5}, TASKS5, noisy=tuple(TASKS5)), MODEL)
    assert "**Verdict: undecided.**" in noisy and "0 agree, 0 against, 5 undecided" in noisy


def test_a_task_nobody_learns_is_shown_but_never_counted() -> None:
    df = planted({"vanilla": 5}, TASKS5)
    df.loc[df["task"] == "freqgen", "trivial_value"] = 1e-4  # every model is worse than predicting 0 there
    c = tables.compare(df, MODEL, "vanilla").set_index("task")
    assert c.loc["freqgen", "outcome"] == "nothing learned" and not c.loc["freqgen", "learned"]
    assert tables.claim(c).agree == 4 and tables.claim(c).nothing_learned == 1
    assert (
        "freqgen: 0.0001 (nothing learned)"
        in "freqgen: " + tables.summary_table(df).loc["trivial reference", "freqgen"]
    )


def test_summary_table_models_as_rows_with_marks_and_the_trivial_reference() -> None:
    df = planted({"vanilla": 3, "singlu": 3}, TASKS5, noisy=("hifreq",))
    t = tables.summary_table(df)
    assert list(t.index) == ["trivial reference", MODEL, "vanilla", "singlu"] and list(t.columns) == TASKS5
    assert t.loc[MODEL, "complex4d"].startswith("★ 0.011 ×/÷ 1.1 (n=5)")  # geometric mean of 0.01·(1…1.2)
    assert t.loc["vanilla", "freqgen"].startswith("≈ ")  # vanilla and singlu tie for the best there
    assert t.loc["vanilla", "hifreq"].startswith("≈ ") or t.loc[MODEL, "hifreq"].startswith("≈ ")
    assert t.loc["trivial reference", "complex4d"] == "1"


def test_compare_best_picks_the_best_candidate_per_task() -> None:
    rows = [rec(m, "nested2d", s, v) for s in (0, 1, 2) for m, v in (("singlu", 1e-3), ("reglu", 1e-2),
            ("geglu", 5e-3), ("swiglu", 2e-2))]  # fmt: skip
    c = tables.compare_best(pd.DataFrame(rows), "singlu", ["reglu", "geglu", "swiglu"])
    assert c["baseline"].tolist() == ["geglu"] and c["outcome"].tolist() == ["better"]


def test_skill_is_one_minus_the_ratio_to_the_trivial_reference() -> None:
    rows = [rec("vanilla", "nested2d", s, 0.1, trivial_value=0.4) for s in (0, 1, 2)]
    assert tables.skill_table(pd.DataFrame(rows)).loc["vanilla", "nested2d"] == 0.75


def test_verdict_lists_its_comparisons_then_one_verdict_sentence() -> None:
    text = tables.verdict("undecided", "x against y: …", "x beats y", ["x vs y", "x vs z"], " More.")
    assert text == "- x vs y.\n- x vs z.\n\n**Verdict: undecided.** x against y: … (claim: x beats y). More."
