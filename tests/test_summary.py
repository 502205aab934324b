"""Tests for rnlib.analysis.summary and notebooks/summary.ipynb on hand-made records whose right answers
are known."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import papermill
import pytest

from rnlib.analysis import report, summary
from rnlib.core.tasks import TASKS
from rnlib.paths import NOTEBOOKS_DIR
from rnlib.records import COLUMNS, write_records

# Widths that fall with the matrices per layer, as budget matching gives them (protocol §3, v03).
WIDTH = {"vanilla": 40, "bilinear": 28, "singlu": 28, "v7_learned_freq": 22, "v10_free_phase": 22,
         "v9_controlled": 17, "reglu": 28, "geglu": 28, "swiglu": 28, "siren": 40}  # fmt: skip
ADAPTIVE = ("v7_learned_freq", "v10_free_phase", "v9_controlled")
DESIGNED = ("vanilla", "bilinear", "singlu", *ADAPTIVE)  # the designed study's neurons
SEEDS = (0, 1, 2)


def rec(neuron: str, task: str, seed: int, value: float, **kw: object) -> dict:
    """One protocol §7 record, budget-matched at the task's default budget unless told otherwise."""
    budget = kw.pop("budget", TASKS[task].default_budget)
    row = {"version": "v01", "neuron": neuron, "task": task, "seed": seed, "budget": budget, "params": budget,
           "width": WIDTH[neuron] * budget // TASKS[task].default_budget, "metric": TASKS[task].metric,
           "value": value, "train_value": value, "steps": 3000, "diverged": False, "seconds": 1.0,
           "id_value": np.nan, "model": neuron, "kind": TASKS[task].kind, "omega": 1.0, "init": "default",
           "depth": 2, "lr": 1e-3, "total_steps": 3000, "diverged_step": np.nan,
           "trivial_value": 0.5 if TASKS[task].metric == "accuracy" else 1.0}  # fmt: skip
    return {**row, **kw}


def value_for(neuron: str, task: str) -> float:
    """Designed: singlu best but on checkerboard (vanilla), adaptive neurons worst, memorize at 1e-12."""
    if task == "memorize":
        return 1e-12 * (2 if neuron == "vanilla" else 1)
    if task == "spiral":
        return {"singlu": 0.95, "vanilla": 0.80}.get(neuron, 0.85)
    if task == "checkerboard":
        return {"singlu": 0.90, "vanilla": 0.97}.get(neuron, 0.85)
    return {"singlu": 1e-3, "vanilla": 1e-2, "bilinear": 2e-2}.get(neuron, 5e-2)


def study_records(neurons: tuple[str, ...] = DESIGNED) -> list[dict]:
    """Every neuron on every task and seed; on ood, periodic neurons degrade 1e4× vanilla's factor."""
    rows = []
    for task in TASKS:
        for neuron in neurons:
            for seed in SEEDS:
                v = value_for(neuron, task) * (1 + 0.01 * seed)
                if task == "ood":
                    periodic = summary.neuron_info(neuron)["periodic"]
                    rows.append(
                        rec(
                            neuron, task, seed, 20.0 if periodic else 0.2, id_value=1e-4 if periodic else 1e-2
                        )
                    )
                else:
                    rows.append(rec(neuron, task, seed, v))
    return rows


def write_notebook_records(run_dir: Path, stem: str, rows: list[dict]) -> None:
    """A records CSV as a version notebook writes it."""
    write_records(pd.DataFrame(rows, columns=COLUMNS), run_dir / f"{stem}.records.csv")


def build_run_dir(run_dir: Path, capacity: bool = True) -> Path:
    """A run directory: records of several notebooks sharing baselines, one executed notebook, job files."""
    run_dir.mkdir(parents=True, exist_ok=True)
    base = [r for r in study_records() if r["neuron"] in ("vanilla", "singlu")]
    write_notebook_records(run_dir, "v01_rich", [{**r, "version": "v01"} for r in study_records()])
    write_notebook_records(run_dir, "v10_free_phase", [{**r, "version": "v10"} for r in base])
    variants = [{**r, "version": "v05", "model": f"singlu ω={w:g}", "omega": w}
                for r in base if r["neuron"] == "singlu" for w in (1.0, 30.0)]  # fmt: skip
    short = [{**r, "version": "v05", "model": "vanilla short", "total_steps": 100} for r in base[:1]]
    write_notebook_records(run_dir, "v05_reevaluation", variants + short)
    sweep = [rec(n, "nested2d", s, (1e-3 if n == "singlu" else 5e-2) / b * 3000, budget=b, version="v14")
             for n in ("singlu", "v10_free_phase") for s in SEEDS for b in (3000, 8000, 32000)]  # fmt: skip
    write_notebook_records(run_dir, "v14_budget_sweep", sweep)
    wide = [{**r, "version": "v03", "model": "singlu @ vanilla width", "width": 40, "params": 2 * r["params"],
             "value": r["value"] / 2} for r in study_records() if r["neuron"] == "singlu"
            and r["task"] in ("complex4d", "nested2d", "hifreq", "freqgen")]  # fmt: skip
    write_notebook_records(run_dir, "v03_width_penalty", wide)
    if capacity:
        bits = {"singlu": 2.5, "vanilla": 2.0}
        cap = [
            {
                "version": "capacity",
                "task": f"capacity_{kind}",
                "neuron": n,
                "budget": b,
                "seed": s,
                "metric": "points",
                "bits_per_param": v * scale + 0.01 * s,
            }
            for kind, scale in (("binary", 1.0), ("real", -1.0))
            for n, v in bits.items()
            for b in (1000, 2000)
            for s in SEEDS
        ]  # fmt: skip  (real targets reversed: must not count)
        pd.DataFrame(cap).to_csv(run_dir / "capacity.records.csv", index=False)
    papermill_meta = {"parameters": {"seeds": list(SEEDS), "device": "cpu"}, "exception": None,
                      "start_time": "2026-01-01T00:00:00", "end_time": "2026-01-01T00:01:40",
                      "duration": 100.0, "version": "2.7.0"}  # fmt: skip
    meta = {"papermill": papermill_meta, "language_info": {"version": "3.11.9"}}
    nb = {"cells": [], "metadata": meta, "nbformat": 4, "nbformat_minor": 5}
    (run_dir / "v01_rich.ipynb").write_text(json.dumps(nb))
    (run_dir / ".jobs").mkdir(exist_ok=True)
    (run_dir / ".jobs" / "v10_free_phase.json").write_text(json.dumps({"status": "done", "seconds": 50.0}))
    failed = {"status": "failed", "seconds": 5.0, "error": "cell 3: ValueError: boom"}
    (run_dir / ".jobs" / "v07_learned_freq.json").write_text(json.dumps(failed))
    return run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> summary.Summary:
    return report.load_run(build_run_dir(tmp_path_factory.mktemp("run") / "default"))


def frame(rows: list[dict]) -> pd.DataFrame:
    return summary.deduplicate(pd.DataFrame(rows).assign(notebook="v01_rich"))


def test_deduplication_keeps_one_row_per_key_and_names_every_source(run: summary.Summary) -> None:
    df = run.records[run.records["version"] != "capacity"]
    assert not df.duplicated(summary.DEDUP_KEY).any()
    row = df[(df["neuron"] == "singlu") & (df["task"] == "spiral") & (df["seed"] == 0) & (df["omega"] == 1.0)]
    assert len(row) == 1 and row["model"].item() == "singlu"  # the neuron-labelled row, not "singlu ω=1"
    assert row["notebooks"].item() == "v01_rich;v05_reevaluation;v10_free_phase"
    van = df[(df["neuron"] == "vanilla") & (df["task"] == "complex4d") & (df["seed"] == 0)]
    assert van["total_steps"].tolist() == [3000]  # the standard protocol wins over the 100-step duplicate


def test_main_table_models_as_rows_marks_and_trivial_reference(run: summary.Summary) -> None:
    t = run.main_table
    assert t.index[0] == "trivial reference" and t.loc["trivial reference", "spiral"] == "50.0%"
    # singlu and its ω=30 variant (the same numbers) cannot be told apart: both ≈, neither ★
    assert t.loc["singlu", "complex4d"].startswith("≈ 0.00101 ×/÷ 1 (n=3)")  # geometric mean of 1e-3·(1…1.02)
    assert t.loc["singlu ω=30", "complex4d"].startswith("≈")
    assert t.loc["vanilla", "complex4d"][0] not in "★≈"
    assert t.loc["vanilla", "checkerboard"].startswith("★")
    assert t.loc["singlu", "memorize"].startswith("≈ < 1e-08")  # every model ties at float precision
    assert (
        "singlu ω=30" in t.index
        and "singlu ω=1" not in t.index
        and list(t.columns[:2]) == ["complex4d", "nested2d"]
    )


def test_regime_map_names_decided_winners_only(run: summary.Summary) -> None:
    regime = run.regime.set_index("task")
    assert regime.loc["complex4d", "winner"] == "singlu" and regime.loc["complex4d", "outcome"] == "better"
    assert regime.loc["checkerboard", "winner"] == "vanilla"
    assert regime.loc["memorize", "outcome"] == "tie" and regime.loc["memorize", "winner"] == ""
    kinds = run.regime_by_kind.set_index("kind")
    assert kinds.loc["regression", "winner"] == "singlu" and kinds.loc["regression", "decided"] == "3 of 4"
    assert kinds.loc["classification", "winner"] == "singlu / vanilla"
    assert (
        "memorize: " in kinds.loc["regression", "tasks"]
        and "tie at float precision" in kinds.loc["regression", "tasks"]
    )


def test_regime_map_says_who_cannot_be_told_apart() -> None:
    rows = duel("singlu", "vanilla", "nested2d", "undecided")
    rows += [rec("v10_free_phase", "nested2d", s, 1.0) for s in SEEDS]  # 100× worse: decided
    r = summary.regime_map(frame(rows)).set_index("task").loc["nested2d"]
    assert r["winner"] == "" and r["outcome"] == "undecided"
    assert set(r["indistinguishable"].split(", ")) == {"singlu", "vanilla"}


def test_findings_on_the_designed_study(run: summary.Summary) -> None:
    f = {x.number: x for x in run.findings}
    assert [x.number for x in run.findings] == [1, 2, 3, 4, 5, 6]
    assert [x.verdict for x in run.findings] == ["supported"] * 6
    assert (
        "ratio ×1.25 [" in f[1].evidence
        and "168,327× ratio of two such MSEs is not a measurement" in f[1].evidence
    )
    assert "not checked for convergence" in f[1].evidence  # these records predate the checks
    assert (
        "needs 4 decided wins of 5 learned, untied tasks" in f[2].evidence
        and "checkerboard: vanilla" in f[2].evidence
    )
    assert "21 agree, 0 against, 0 undecided, 6 ties" in f[3].evidence and "budget sweep" in f[3].evidence
    assert "2 matrices 30%" in f[4].evidence and "4 agree, 0 against" in f[4].evidence
    assert "6 agree, 0 against" in f[5].evidence
    assert "4 agree, 0 against" in f[6].evidence and "degradation factor 20×" in f[6].evidence
    assert run.control.verdict == "undecided"  # no GLU control in the designed study


# -------------------------------------------------- one hand-built case per verdict value of each finding
EFFECT = {"better": (0.5, 0.5, 0.5), "worse": (2.0, 2.0, 2.0), "undecided": (0.5, 2.0, 0.8)}


def duel(a: str, b: str, task: str, outcome: str, base: float = 1e-2, **kw: object) -> list[dict]:
    """Records where ``a`` is ``outcome`` against ``b`` on ``task`` by the paired rule (MSE or accuracy).
    ``a``'s values do not depend on ``outcome``: duels of one ``a`` against several ``b`` share its rows."""
    rows, acc = [], TASKS[task].metric == "accuracy"
    for s, f in zip(SEEDS, EFFECT[outcome], strict=True):
        a_value = 0.8 + 0.01 * s if acc else base * (1 + 0.01 * s)
        b_value = a_value - 0.1 * (1 if f < 1 else -1) * (0.2 if f == 0.8 else 1) if acc else a_value / f
        rows += [rec(a, task, s, a_value, **kw), rec(b, task, s, b_value, **kw)]
    return rows


def split(n: int, verdict: str) -> list[str]:
    """Outcomes of ``n`` comparisons that give ``verdict`` for the claim "better"."""
    half = n // 2
    mixed = ["better"] * half + ["worse"] * (n - half)
    return {"supported": ["better"] * n, "contradicted": ["worse"] * n, "mixed": mixed,
            "undecided": ["undecided"] * n}[verdict]  # fmt: skip


VERDICTS = ("supported", "contradicted", "mixed", "undecided")
PERIODIC = ("singlu", "v10_free_phase", "v7_learned_freq", "siren")


@pytest.mark.parametrize("verdict", VERDICTS)
def test_finding_1_verdicts(verdict: str) -> None:
    budgets = (500, 1000, 2000, 4000)
    cap = []
    for b, outcome in zip(budgets, split(4, verdict), strict=True):
        for s, f in zip(SEEDS, EFFECT[outcome], strict=True):
            base = 1.0 + 0.01 * s
            row = {
                "version": "capacity",
                "task": "capacity_binary",
                "budget": b,
                "seed": s,
                "metric": "points",
            }
            cap += [{**row, "neuron": "vanilla", "bits_per_param": base},
                    {**row, "neuron": "singlu", "bits_per_param": base / f}]  # fmt: skip
    study = [rec(n, "memorize", s, 1e-12) for n in ("singlu", "vanilla") for s in SEEDS]
    f = summary.finding_capacity(frame(study + cap))
    assert f.verdict == verdict and "not checked for convergence" in f.evidence
    checked = [{**r, "lower_bound": r["neuron"] == "vanilla" and r["budget"] == 4000} for r in cap]
    f = summary.finding_capacity(frame(study + checked))
    assert f.verdict == verdict and "lower bounds (a convergence check" in f.evidence
    assert "vanilla at 4000" in f.evidence and "singlu at" not in f.evidence
    f = summary.finding_capacity(frame(study + [{**r, "lower_bound": False} for r in cap]))
    assert "every singlu and vanilla capacity passed the convergence checks" in f.evidence


@pytest.mark.parametrize(("singlu_wins", "noisy", "verdict"),
                         [(5, False, "supported"), (2, False, "contradicted"),
                          (5, True, "undecided")])  # fmt: skip
def test_finding_2_verdicts(singlu_wins: int, noisy: bool, verdict: str) -> None:
    # "mixed" cannot arise: each half is supported, contradicted or undecided, and combine() keeps those
    rows = []
    for i, task in enumerate(summary.STANDARD_TASKS):
        rows += duel(
            "singlu", "vanilla", task, "undecided" if noisy else "better" if i < singlu_wins else "worse"
        )
    f = summary.finding_standard_wins(frame(rows))
    assert f.verdict == verdict, f.evidence
    if verdict == "supported":
        assert "**supported**. (b)" in f.evidence and "no neuron wins everything: **supported**" in f.evidence


def test_finding_2b_contradicted_when_one_neuron_is_decided_best_everywhere() -> None:
    rows = [r for task in summary.STANDARD_TASKS for r in duel("singlu", "vanilla", task, "better")]
    f = summary.finding_standard_wins(frame(rows))
    assert f.verdict == "contradicted" and "no neuron wins everything: **contradicted**" in f.evidence


@pytest.mark.parametrize("verdict", VERDICTS)
def test_finding_3_verdicts(verdict: str) -> None:
    pairs = [(n, t) for n in ADAPTIVE for t in ("complex4d", "hifreq")]
    rows = [
        r
        for (n, t), o in zip(pairs, split(len(pairs), verdict), strict=True)
        for r in duel("singlu", n, t, o)
    ]
    assert summary.finding_adaptive(frame(rows)).verdict == verdict


@pytest.mark.parametrize("verdict", VERDICTS)
def test_finding_5_verdicts(verdict: str) -> None:
    pairs = [(n, t) for n in ADAPTIVE for t in summary.FREQ_TASKS]
    rows = [
        r
        for (n, t), o in zip(pairs, split(len(pairs), verdict), strict=True)
        for r in duel("singlu", n, t, o)
    ]
    assert summary.finding_frequency(frame(rows)).verdict == verdict


def test_finding_5_on_tasks_where_every_model_is_at_the_trivial_reference() -> None:
    rows = [r for n in ADAPTIVE for t in summary.FREQ_TASKS for r in duel("singlu", n, t, "better")]
    rows = [{**r, "trivial_value": 1e-4} for r in rows]  # predicting 0 beats every model
    f = summary.finding_frequency(frame(rows))
    assert f.verdict == "undecided" and "6 on nothing-learned tasks" in f.evidence
    assert "nothing learned on freqgen, mixedfreq" in f.evidence
    assert any(n.startswith("freqgen: nothing learned") for n in summary.precision_notes(frame(rows)))


@pytest.mark.parametrize("verdict", VERDICTS)
def test_finding_6_verdicts(verdict: str) -> None:
    # the claim is "periodic neurons degrade more": vanilla better than each periodic neuron on OOD MSE
    rows = [r for n, o in zip(PERIODIC, split(4, verdict), strict=True)
            for r in duel("vanilla", n, "ood", o, base=0.3, id_value=1e-3)]  # fmt: skip
    f = summary.finding_ood(frame(rows))
    assert f.verdict == verdict and "degradation factor" in f.evidence


@pytest.mark.parametrize(("singlu_width", "cost", "verdict"),
                         [(26, "supported", "supported"), (38, "supported", "contradicted"),
                          (26, "undecided", "undecided"), (26, "mixed", "mixed")])  # fmt: skip
def test_finding_4_verdicts(singlu_width: int, cost: str, verdict: str) -> None:
    tasks = ("complex4d", "nested2d", "hifreq", "ood")
    rows = [
        rec(n, t, s, 1e-2, width=w)
        for t in tasks
        for s in SEEDS
        for n, w in (("vanilla", 40), ("singlu", singlu_width))
    ]
    wide = "singlu @ vanilla width"
    for t, o in zip(tasks, split(4, cost), strict=True):  # the claim: at its budget singlu is worse
        worse = {"better": "worse", "worse": "better", "undecided": "undecided"}[o]
        rows += [{**r, "neuron": "singlu", "model": wide, "width": 40, "params": 2 * r["params"]}
                 if r["model"] == "vanilla" else r
                 for r in duel("singlu", "vanilla", t, worse, width=singlu_width) if True]  # fmt: skip
    f = summary.finding_width(frame(rows))
    assert f.verdict == verdict, f.evidence
    assert ("35%" in f.evidence) and ("v03" in f.evidence)


def test_glu_control_against_the_best_control_per_task() -> None:
    rows = duel("singlu", "swiglu", "nested2d", "better") + duel("singlu", "swiglu", "hifreq", "better")
    rows += [rec("reglu", t, s, 1.0) for t in ("nested2d", "hifreq") for s in SEEDS]  # worse than swiglu
    f = summary.glu_control(frame(rows))
    assert f.verdict == "supported" and set(f.table["baseline"]) == {"swiglu"}


def test_float_precision_caveat_without_capacity_records() -> None:
    df = frame([r for r in study_records() if r["task"] in ("memorize", "complex4d")])
    f1 = summary.finding_capacity(df)
    assert (
        f1.verdict == "undecided"
        and "float precision" in f1.evidence
        and "no capacity records" in f1.evidence
    )
    assert any(n.startswith("memorize: 6 of 6 neurons") for n in summary.precision_notes(df))
    rel = summary.relative_to_vanilla(df)
    assert rel.loc["vanilla", "memorize"] == 0 and rel["memorize"].drop(["vanilla", "trivial"]).isna().all()
    assert rel.loc["singlu", "complex4d"] == pytest.approx(-1, abs=1e-3)
    assert rel.loc["trivial", "complex4d"] == pytest.approx(-np.log10(1.01e-2), abs=1e-2)


def test_widths_ood_and_provenance(run: summary.Summary) -> None:
    pivot = summary.width_pivot(run.records)
    assert pivot.loc["vanilla", "complex4d"] == 40 and pivot.loc["v9_controlled", "matrices"] == 5
    ood = summary.ood_factors(run.records).set_index("neuron")
    assert ood.loc["vanilla", "factor"] == pytest.approx(20) and not ood.loc["bilinear", "periodic"]
    assert set(summary.budget_sweep(run.records)["budget"]) == {3000, 8000, 32000}
    p = run.provenance
    assert p["total_seconds"] == 155 and p["wall_seconds"] == 100 and p["devices"] == ["cpu"]
    assert p["failed"] == ["v07_learned_freq: cell 3: ValueError: boom"] and p["summary"]["git_commit"]


@pytest.mark.slow
def test_summary_notebook_executes_and_exports(tmp_path: Path) -> None:
    run_dir = build_run_dir(tmp_path / "run")
    papermill.execute_notebook(
        str(NOTEBOOKS_DIR / "summary.ipynb"),
        str(tmp_path / "summary.ipynb"),
        parameters={"run_dir": str(run_dir)},
        kernel_name="python3",
        execution_timeout=300,
        progress_bar=False,
    )
    data = json.loads((run_dir / "summary.json").read_text())
    expected = report.load_run(run_dir)
    assert [f["verdict"] for f in data["findings"]] == [f.verdict for f in expected.findings]
    assert {r["kind"]: r["winner"] for r in data["regime_by_kind"]}["regression"] == "singlu"
    results = pd.read_csv(run_dir / "results.csv")
    assert len(results) == len(expected.records) and "notebooks" in results.columns
    # every notebook that reported a record is findable, though a shared training is kept once (issue 19)
    v10 = results[results["notebooks"].fillna("").str.split(";").map(lambda n: "v10_free_phase" in n)]
    assert len(v10) == len(pd.read_csv(run_dir / "v10_free_phase.records.csv"))
    # the main table as the reader sees it: every model a row, every task a column, nothing elided
    executed = json.loads((tmp_path / "summary.ipynb").read_text())
    cell = next(c for c in executed["cells"] if "".join(c["source"]) == "s.main_table")
    html = next("".join(o["data"]["text/html"]) for o in cell["outputs"] if "text/html" in o.get("data", {}))
    assert "…" not in html and "..." not in html
    for model in [*expected.main_table.index, *expected.main_table.columns]:
        assert f">{model}<" in html
    names = ("heatmap", "seeds", "widths", "budget_sweep", "ood", "capacity")
    for name in names:
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 1000
    assert data["figures"] == [f"figures/{n}.png" for n in names]
