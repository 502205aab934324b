"""The tuning track (docs/protocol.md §9): equal trials, selection on validation only, grid edges, the
validation metric of a trained replica, a variant's own learning rate, the notebook under the smoke profile,
and the summary's verdicts before and after tuning."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest
import torch

from rnlib.analysis import report, summary, tuning
from rnlib.analysis.stats import VERDICTS
from rnlib.batch.profiles import expand_jobs, load_profile
from rnlib.core.catalog import NEURONS, TASKS
from rnlib.core.tasks import make_task
from rnlib.paths import NOTEBOOKS_DIR, PARAMETERS_DIR
from rnlib.records import COLUMNS, TUNING_COLUMNS, read_records, write_records
from rnlib.training.cache import ResultCache, cache_key
from rnlib.training.study import Study, Variant
from rnlib.training.trainer import TrainConfig, train_models
from rnlib.training.tuning_jobs import chosen_jobs, search, trial_variants, tunable_tasks

LRS, OMEGAS = [1e-3, 3e-3, 1e-2], [1.0, 3.0, 10.0]
PLAIN = [3.2e-4, 5.6e-4, 1e-3, 1.8e-3, 3.2e-3, 5.6e-3, 1e-2, 1.8e-2, 3.2e-2]


def trial(neuron: str, task: str, lr: float, omega: float, val: float, test: float, seed: int = 100) -> dict:
    """One trial record as notebooks/tuned writes it (only the columns the tuning analysis reads matter)."""
    return {"version": "tuned", "neuron": neuron, "model": f"{neuron} lr={lr:g} ω={omega:g}", "task": task,
            "seed": seed, "metric": TASKS[task].metric, "value": test, "train_value": test, "val_value": val,
            "lr": lr, "omega": omega, "role": "trial"}  # fmt: skip


# ------------------------------------------------------------------------------------------ the plan
def test_every_core_neuron_gets_the_same_number_of_trials() -> None:
    grids = tuning.plan(tuning.CORE, LRS, OMEGAS, PLAIN)
    assert {n: len(g) for n, g in grids.items()} == dict.fromkeys(tuning.CORE, 9)
    # the registry decides who tunes ω: every neuron with one, not vanilla or swiglu
    assert [n for n in tuning.CORE if not tuning.tunes_omega(n)] == ["vanilla", "swiglu"]
    assert grids["singlu"][:2] == [tuning.Setting(1e-3, 1.0), tuning.Setting(1e-3, 3.0)]  # lr major
    assert all(s.omega is None for s in grids["vanilla"])
    trials = trial_variants(grids)
    assert len(trials) == 63 and len({v.name for v in trials}) == 63


def test_unequal_grids_raise_one_line_naming_the_neurons() -> None:
    with pytest.raises(ValueError, match="unequal trial counts") as err:
        tuning.plan(["vanilla", "singlu"], LRS, OMEGAS, PLAIN[:8])
    assert "\n" not in str(err.value) and "vanilla 8" in str(err.value) and "singlu 9" in str(err.value)
    with pytest.raises(ValueError, match="positive"):
        tuning.trial_grid("vanilla", LRS, OMEGAS, [0.0])
    with pytest.raises(ValueError, match="disjoint"):
        tuning.check_seeds([0], [0, 1])
    with pytest.raises(ValueError, match="memorize"):
        tunable_tasks(["nested2d", "memorize"])
    assert "memorize" not in tunable_tasks() and len(tunable_tasks()) == len(TASKS) - 1


# ------------------------------------------------------------------------------------- the selection
def test_selection_reads_validation_never_test() -> None:
    rows = []
    for seed in (100, 101):  # two tuning seeds: the mean (geometric for MSE) over both decides
        rows += [trial("singlu", "nested2d", 1e-3, 1.0, 1e-2, 1e-5, seed),  # the test-best
                 trial("singlu", "nested2d", 1e-3, 3.0, 1e-3 * (1 + seed - 100), 1e-1, seed),  # the val-best
                 trial("singlu", "nested2d", 1e-2, 1.0, 5e-3, 1e-4, seed),
                 trial("singlu", "nested2d", 1e-2, 3.0, math.nan, math.nan, seed),  # diverged: never chosen
                 trial("vanilla", "spiral", 1e-3, 1.0, 0.90, 0.99, seed),  # accuracy: higher is better
                 trial("vanilla", "spiral", 3e-3, 1.0, 0.95, 0.80, seed),
                 trial("vanilla", "spiral", 1e-2, 1.0, 0.95, 0.70, seed),  # a tie: the first tried
                 trial("vanilla", "spiral", 3e-2, 1.0, 0.50, 0.99, seed)]  # fmt: skip
    trials = pd.DataFrame(rows)
    chosen = tuning.select(trials).set_index("neuron")
    assert chosen.loc["singlu", "setting"] == "lr 0.001, ω 3"
    assert chosen.loc["vanilla", "setting"] == "lr 0.003"
    assert math.isclose(chosen.loc["singlu", "val"], 10 ** np.log10([1e-3, 2e-3]).mean())
    # any test values at all give the same choice
    shuffled = trials.assign(value=np.random.default_rng(0).permutation(trials["value"].to_numpy()))
    pd.testing.assert_frame_equal(tuning.select(shuffled), tuning.select(trials))
    assert set(chosen["trials"]) == {4}
    # the agreement check reads test afterwards: validation's choice is not the test-best here
    agree = tuning.agreement(trials).set_index("neuron")
    assert not agree["same_best"].any()
    assert agree.loc["singlu", "test_best"] == "lr 0.001, ω 1" and agree.loc["singlu", "regret"] == 4.0
    jobs = chosen_jobs(chosen.reset_index())
    assert [(v.name, v.lr, v.omega, t) for v, t in jobs] == [
        ("singlu", 1e-3, 3.0, "nested2d"),
        ("vanilla", 3e-3, None, "spiral"),
    ]


def planted(neuron: str, task: str, setting: tuning.Setting, seed: int = 100) -> dict:
    """A trial whose validation MSE is a bowl in log lr (and log ω) with its bottom at lr 0.2, ω 4: beyond the
    top of the starting grids' learning rates. Its test value ranks the settings the other way round."""
    omega = 1.0 if setting.omega is None else setting.omega
    bowl = math.log10(setting.lr / 0.2) ** 2 + (0.0 if setting.omega is None else math.log10(omega / 4) ** 2)
    return trial(neuron, task, setting.lr, omega, 10**bowl * 1e-3, 10**-bowl, seed)


class PlantedStudy:
    """What ``tuning_jobs.search`` asks of a ``Study``, answered by ``planted`` instead of training."""

    tasks = ("nested2d",)

    def __init__(self) -> None:
        self.rounds: list[int] = []

    def records_of(self, jobs: list, seeds: list[int]) -> SimpleNamespace:
        self.rounds.append(len(jobs))
        rows = [planted(v.neuron, task, tuning.trial_setting(v.neuron, v.lr, v.omega or 1.0), seed)
                for v, task in jobs for seed in seeds]  # fmt: skip
        return SimpleNamespace(records=pd.DataFrame(rows))

    def run(self, variants: list, *, seeds: list[int], tags: dict) -> SimpleNamespace:
        assert tags == {"role": "trial"}
        return self.records_of([(v, t) for v in variants for t in self.tasks], seeds)

    def run_jobs(self, jobs: list, *, seeds: list[int], tags: dict) -> SimpleNamespace:
        assert tags == {"role": "trial"}
        return self.records_of(list(jobs), seeds)


def test_the_search_goes_beyond_a_grid_edge_toward_a_planted_optimum() -> None:
    grids = tuning.plan(["singlu", "vanilla"], LRS, OMEGAS, PLAIN)
    study = PlantedStudy()
    trials = search(study, grids, [100], 8, place=tuning.extension)
    assert study.rounds == [18] + [2] * 8  # the grid, then one trial per (neuron, task) per round
    assert trials.groupby("neuron")["model"].nunique().to_dict() == {"singlu": 17, "vanilla": 17}  # equal
    start = tuning.select(tuning.on_grid(trials, grids))
    assert start["setting"].tolist() == ["lr 0.01, ω 3", "lr 0.032"]  # the grids' best: on their lr top
    assert tuning.edge_hits(start, trials.iloc[:18])["edge"].tolist() == ["lr high", "lr high"]
    scores = tuning.trial_scores(trials).set_index("neuron")["setting"]
    # lr walks out by the grid's top spacing until the bowl is bracketed, then ω, then halfway steps
    vanilla = ["lr 0.057", "lr 0.1", "lr 0.18", "lr 0.32", "lr 0.24", "lr 0.21", "lr 0.19", "lr 0.2"]
    singlu = ["lr 0.033, ω 3", "lr 0.11, ω 3", "lr 0.37, ω 3", "lr 0.11, ω 10", "lr 0.11, ω 1", "lr 0.2, ω 3",
              "lr 0.2, ω 10", "lr 0.2, ω 1"]  # fmt: skip
    assert scores["vanilla"].tolist()[9:] == vanilla and scores["singlu"].tolist()[9:] == singlu
    chosen = tuning.select(trials)
    assert chosen["setting"].tolist() == ["lr 0.2, ω 3", "lr 0.2"]  # the planted optimum, to the grid's ω
    assert tuning.edge_hits(chosen, trials)["edge"].tolist() == ["", ""]  # inside what was tried
    early = search(PlantedStudy(), grids, [100], 4, place=tuning.extension)
    # after 4, singlu's best (0.11, 3) has ω 1 untried along its line: on the ω edge of what was tried
    assert tuning.edge_hits(tuning.select(early), early)["edge"].tolist() == ["ω low", ""]


def test_each_next_trial_steps_out_of_an_edge_or_halves_toward_the_better_neighbour() -> None:
    grid = tuning.trial_grid("singlu", [3e-3, 1e-2, 3e-2], [1.0, 3.0, 10.0], [])

    def scores(best: tuning.Setting) -> pd.DataFrame:
        """The grid's trials, all at validation MSE 1e-2 but ``best`` at 1e-4."""
        rows = [trial("singlu", "nested2d", s.lr, s.omega, 1e-4 if s == best else 1e-2, 1.0) for s in grid]
        return tuning.trial_scores(pd.DataFrame(rows))

    def nxt(best: tuning.Setting) -> str:
        return tuning.next_setting(grid, scores(best)).text()

    S = tuning.Setting
    assert nxt(S(3e-2, 3.0)) == "lr 0.09, ω 3"  # one step (×3, the grid's top spacing) beyond lr's top
    assert nxt(S(3e-3, 3.0)) == "lr 0.0009, ω 3"  # below lr's bottom: ÷ (0.01 / 0.003)
    assert nxt(S(1e-2, 1.0)) == "lr 0.01, ω 0.33"  # lr inside: ω beyond its bottom
    assert nxt(S(3e-2, 10.0)) == "lr 0.09, ω 10"  # a corner: lr first
    # inside on both axes: halfway (geometric) toward the better lr neighbour
    rows = scores(S(1e-2, 3.0))
    rows.loc[(rows["lr"] == 3e-2) & (rows["omega"] == 3.0), "val"] = 1e-3
    assert tuning.next_setting(grid, rows).text() == "lr 0.017, ω 3"
    rows.loc[(rows["lr"] == 3e-3) & (rows["omega"] == 3.0), "val"] = 1e-3 / 2
    assert tuning.next_setting(grid, rows).text() == "lr 0.0055, ω 3"
    # a plain neuron searches lr only, by its own grid's spacing
    plain = tuning.trial_grid("vanilla", [], [], PLAIN)
    rising = [trial("vanilla", "spiral", lr, 1.0, 0.9 + 0.001 * i, 0.5) for i, lr in enumerate(PLAIN)]
    top = tuning.trial_scores(pd.DataFrame(rising))
    assert tuning.next_setting(plain, top).text() == "lr 0.057"  # 0.032 × (0.032 / 0.018), two digits


def test_the_search_never_reads_test_values() -> None:
    grids = tuning.plan(["singlu", "vanilla"], LRS, OMEGAS, PLAIN)
    trials = search(PlantedStudy(), grids, [100], 2, place=tuning.extension)
    shuffled = trials.assign(value=np.random.default_rng(1).permutation(trials["value"].to_numpy()))
    pd.testing.assert_frame_equal(tuning.extension(shuffled, grids), tuning.extension(trials, grids))
    with pytest.raises(ValueError, match="extend"):
        search(PlantedStudy(), grids, [100], -1, place=tuning.extension)


def test_edge_hits_count_choices_on_an_edge_of_what_was_tried() -> None:
    grids = tuning.plan(["singlu", "vanilla"], LRS, OMEGAS, PLAIN)
    rows = [trial(n, task, s.lr, s.omega or 1.0, 1e-2, 1e-2) for n, g in grids.items()
            for task in ("nested2d", "hifreq", "spiral") for s in g]  # fmt: skip
    trials = pd.DataFrame(rows)
    chosen = pd.DataFrame(
        [("singlu", "nested2d", 3e-3, 3.0), ("singlu", "hifreq", 1e-2, 1.0),
         ("vanilla", "spiral", 3.2e-2, 1.0), ("vanilla", "nested2d", 1e-3, 1.0)],
        columns=["neuron", "task", "lr", "omega"],
    )  # fmt: skip
    edges = tuning.edge_hits(chosen, trials)
    assert list(edges["edge"]) == ["", "lr high, ω low", "lr high", ""]
    assert tuning.edge_text(edges).startswith("2 of 4 (neuron, task) choices sit on an edge")
    # one more trial beyond the top along singlu's line at ω 1 puts lr 0.01 inside on lr
    beyond = pd.DataFrame([*rows, trial("singlu", "hifreq", 3e-2, 1.0, 1e-2, 1e-2)])
    assert list(tuning.edge_hits(chosen, beyond)["edge"]) == ["", "ω low", "lr high", ""]


# ------------------------------------------------------------------------ the trainer and the Study
@pytest.mark.parametrize("task", ["nested2d", "spiral", "memorize"])
def test_val_value_is_the_trained_models_metric_on_the_validation_split(task: str) -> None:
    net, (result,) = train_models("vanilla", task, [0], width=8, config=TrainConfig(steps=5))
    data = make_task(task, 0)
    if data.x_val is None:
        assert result.val_value is None
        return
    with torch.no_grad():
        out = net(data.x_val[None])[0].double()  # (N, out)
    if TASKS[task].metric == "mse":
        by_hand = float((out - data.y_val.double()).square().mean())
    else:
        by_hand = float((out.argmax(-1) == data.y_val).double().mean())
    assert result.val_value == pytest.approx(by_hand, rel=1e-6)
    if TASKS[task].metric == "mse":  # (5 steps leave a classifier at chance on every split)
        assert result.val_value != result.value  # a split of its own, not the test set


def test_a_variants_learning_rate_trains_and_keys_its_results(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    study = Study("vlr", seeds=[0], tasks=["nested2d"], steps=5, records=tmp_path / "vlr.records.csv",
                  cache=cache, workers=1, progress=False, extra=TUNING_COLUMNS)  # fmt: skip
    res = study.run([Variant("vanilla"), Variant("vanilla", lr=0.01, label="fast")], tags={"role": "trial"})
    records = res.records.set_index("model")
    assert records.loc["vanilla", "lr"] == 1e-3 and records.loc["fast", "lr"] == 0.01
    assert records.loc["fast", "value"] != records.loc["vanilla", "value"]
    assert records["val_value"].map(math.isfinite).all() and (records["role"] == "trial").all()
    sizing = {"budget": TASKS["nested2d"].default_budget, "depth": 2}
    options = {"omega": 1.0, "init": "default"}
    before = cache_key("vanilla", "nested2d", 0, sizing, options, TrainConfig(steps=5))  # lr=None's key
    fast = cache_key("vanilla", "nested2d", 0, sizing, options, TrainConfig(steps=5, lr=0.01))
    assert cache.path(before).exists() and cache.path(fast).exists() and before != fast
    written = read_records(tmp_path / "vlr.records.csv")
    assert list(written.columns) == [*COLUMNS, *TUNING_COLUMNS]
    # an entry cached before val_value existed still loads
    entry = json.loads(cache.path(before).read_text())
    del entry["val_value"]
    cache.path(before).write_text(json.dumps(entry))
    assert cache.get(before).val_value is None
    plain = Study("vp", seeds=[0], tasks=["nested2d"], steps=5, records=tmp_path / "vp.records.csv",
                  cache=cache, workers=1, progress=False)  # fmt: skip
    plain.run(["vanilla"])
    assert (plain.trained, plain.reused) == (0, 1)  # the version notebooks' keys and columns are unchanged
    assert list(read_records(tmp_path / "vp.records.csv").columns) == list(COLUMNS)
    with pytest.raises(ValueError, match="extra"):
        plain.run(["vanilla"], tags={"role": "trial"})


# ----------------------------------------------------------------------------------- the summary
def final(neuron: str, task: str, seed: int, value: float, role: str) -> dict:
    """A final-seed record of notebooks/tuned (or, role None, of a version notebook)."""
    budget = TASKS[task].default_budget
    return {"version": "tuned" if role else "v01", "neuron": neuron, "task": task, "seed": seed,
            "budget": budget, "params": budget, "width": 20, "metric": TASKS[task].metric, "value": value,
            "train_value": value, "steps": 3000, "diverged": False, "seconds": 1.0, "id_value": np.nan,
            "trivial_value": 0.5 if TASKS[task].metric == "accuracy" else 1.0,
            "model": f"{neuron} untuned" if role == "untuned" else neuron,
            "kind": TASKS[task].kind, "omega": 3.0 if role == "tuned" else 1.0, "init": "default", "depth": 2,
            "lr": 3e-3 if role == "tuned" else 1e-3, "total_steps": 3000, "diverged_step": np.nan,
            "val_value": value if role else np.nan, "role": role or np.nan}  # fmt: skip


def test_summary_shows_each_findings_verdict_before_and_after_tuning(tmp_path: Path) -> None:
    """Originally SinGLU beats vanilla on every standard task but checkerboard (finding 2 supported); tuned,
    vanilla beats SinGLU on every one (finding 2 contradicted). Written as a run folder, read as a report."""
    tasks = [t for t in summary.STANDARD_TASKS if t != "memorize"]
    original, tuned = [], []
    for task in tasks:
        good, bad = (0.9, 0.7) if TASKS[task].metric == "accuracy" else (1e-3, 1e-1)
        for seed in range(5):
            hi = good * (1 + 0.01 * seed)
            singlu, vanilla = (bad, hi) if task == "checkerboard" else (hi, bad)
            original += [
                final("singlu", task, seed, singlu, None),
                final("vanilla", task, seed, vanilla, None),
            ]
            tuned += [final("singlu", task, seed, bad, "tuned"), final("vanilla", task, seed, hi, "tuned")]
            tuned += [final(n, task, seed, 0.5, "untuned") for n in ("singlu", "vanilla")]
    tuned += [{**final("singlu", "nested2d", 100, 1.0, "trial"), "model": "singlu lr=0.001 ω=1"}]
    write_records(pd.DataFrame(original), tmp_path / "v01_rich.records.csv")
    write_records(pd.DataFrame(tuned), tmp_path / "tuned.records.csv", extra=TUNING_COLUMNS)
    s = report.load_run(tmp_path)
    assert set(s.records["version"]) == {"v01"} and "role" not in s.records  # tuned rows are read apart
    table = summary.side_by_side(s)
    assert list(table.columns[:3]) == ["claim", "original protocol", "after tuning"]
    assert list(table.index) == [1, 2, 3, 4, 5, 6, "control"]
    assert (table.loc[2, "original protocol"], table.loc[2, "after tuning"]) == ("supported", "contradicted")
    assert table.loc[1, "after tuning"] == table.loc[4, "after tuning"] == summary.NOT_TESTED
    assert set(table["after tuning"]) <= {*VERDICTS, summary.NOT_TESTED}
    # the regime map after tuning reads the tuned rows: vanilla is each task's decided best
    assert set(s.tuned_regime["winner"]) == {"vanilla"} and set(s.regime["winner"]) == {"singlu", "vanilla"}
    report.export(s, tmp_path, {})
    results = report.render_results(tmp_path)
    assert "| number | finding | verdict | after tuning | evidence |" in results
    assert "| **supported** | contradicted |" in results  # finding 2, before and after


# ------------------------------------------------------------------------------- the notebook
@pytest.mark.slow
def test_tuned_notebook_runs_under_the_smoke_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNLIB_CACHE", str(tmp_path / "cache"))
    jobs = {job.notebook.stem: job for job in expand_jobs(load_profile(PARAMETERS_DIR / "smoke.run.yaml"))}
    job = jobs["tuned"]
    records, out = tmp_path / "tuned.records.csv", tmp_path / "tuned.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS_DIR / "tuned.ipynb"), str(out), parameters={**job.parameters, "records": str(records)},
        kernel_name="python3", execution_timeout=600, progress_bar=False,
    )  # fmt: skip
    executed = nbformat.read(out, as_version=4)
    assert any("image/png" in o.get("data", {}) for c in executed.cells for o in c.get("outputs", []))
    text = "".join(o.get("data", {}).get("text/markdown", "") for o in executed.cells[-1].outputs)
    assert any(f"**Verdict: {v}.**" in text for v in VERDICTS), text
    df = read_records(records)
    p = job.parameters
    trials = df[df["role"] == "trial"]
    assert set(trials["seed"]) == {100} and set(trials["task"]) == set(p["tasks"])
    per_neuron = trials.groupby(["neuron", "task"])["model"].nunique()
    assert set(per_neuron) == {len(p["lrs"]) * len(p["omegas"]) + p["extend"]}  # the same for everyone
    assert set(per_neuron.index.get_level_values(0)) == set(tuning.CORE)
    assert trials["val_value"].map(math.isfinite).all()
    for role in ("tuned", "untuned"):
        rows = df[df["role"] == role]
        assert sorted(set(rows["seed"])) == p["seeds"] and len(rows) == len(tuning.CORE) * 2 * len(p["seeds"])
    assert (df.loc[df["role"] == "untuned", "lr"] == 1e-3).all()
    assert set(NEURONS) >= set(df["neuron"])
