"""The fifteen version notebooks: their parameters, their thinness, and a smoke execution of each.

The smoke test runs every notebook under papermill with parameters/smoke.run.yaml (one seed, 30 steps) and
checks the records it writes against protocol §3's table of neurons, copied here by hand as an independent
reference.
"""

import math
import os
import re
from pathlib import Path

import nbformat
import papermill
import pytest

from rnlib.analysis.stats import VERDICTS
from rnlib.batch.profiles import declared_parameters, expand_jobs, load_profile
from rnlib.core.tasks import TASKS
from rnlib.paths import NOTEBOOKS_DIR, PARAMETERS_DIR
from rnlib.records import read_records

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("v[0-9][0-9]_*.ipynb"))
PROFILES = sorted(PARAMETERS_DIR.glob("*.run.yaml"))  # each names its papermill parameters file
BASELINES = {"vanilla", "singlu"}
# protocol §3: the neurons each version trains besides the baselines (v03 also tabulates every neuron's width)
PROTOCOL_NEURONS = {
    "v01": {"v1_rich"},
    "v02": {"siren", "bilinear", "v1_no_residual", "v1_no_norm", "v1_rich", "reglu", "geglu", "swiglu"},
    "v03": {"v1_rich"},
    "v04": {"v4_lowrank", "v4_shared", "v1_rich"},
    "v05": {"v1_rich", "v4_lowrank", "v4_shared"},
    "v06": {"v6_routing"},
    "v07": {"v7_learned_freq"},
    "v08": {"v8_phase_gate"},
    "v09": {"v9_controlled"},
    "v10": {"v10_free_phase"},
    "v11": {"v11_scaled_phase", "v10_free_phase"},
    "v12": {"v12_fm"},
    "v13": {"v13_aligned_phase"},
    "v14": {"v10_free_phase", "v15_dual_phase"},
    "v15": {"v15_dual_phase", "v10_free_phase"},
}
CONTRACT = {  # the notebook contract's parameters and their declared types
    "seeds": "list",
    "budget": "int",
    "tasks": "list",
    "steps": "int",
    "lr": "float",
    "omega": "float",
    "device": "str",
    "records": "str",
}
EXTRA = {"v05": {"omegas": "list"}, "v14": {"budgets": "list", "sweep_tasks": "list"}}
FORBIDDEN = ("class ", "def ", ".backward(", "optim.", "for step in")  # thin notebooks: no models, no loops
CELL_TIMEOUT = 600  # seconds per cell under the smoke profile; a hang fails instead of blocking CI


def version(notebook: Path) -> str:
    """``v10`` for ``v10_free_phase.ipynb``."""
    return notebook.stem.split("_")[0]


def read(notebook: Path) -> nbformat.NotebookNode:
    """The notebook as stored, validated against the nbformat schema."""
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    return nb


def test_fifteen_version_notebooks():
    assert [version(nb) for nb in NOTEBOOKS] == sorted(PROTOCOL_NEURONS)


# ----------------------------------------------------------------------------------- (a) parameters
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_declares_contract_parameters(notebook):
    declared = papermill.inspect_notebook(str(notebook))
    expected = {**CONTRACT, **EXTRA.get(version(notebook), {})}
    assert {k: v["inferred_type_name"] for k, v in declared.items()} == expected
    assert all(v["help"] for v in declared.values()), "every parameter carries a help comment"


WHOLE_STUDY = ("default", "smoke")  # profiles that run every version notebook; others pick a few


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_profile_keys_are_declared(profile):
    jobs = expand_jobs(load_profile(profile))  # the loader itself refuses undeclared keys and wrong types
    name = profile.name.removesuffix(".run.yaml")
    if name in WHOLE_STUDY:
        assert {job.notebook for job in jobs} >= set(NOTEBOOKS)
    if name == "default":
        assert "capacity" in {job.notebook.stem for job in jobs}, "the default run measures capacity too"
    for job in jobs:
        undeclared = set(job.parameters) - set(declared_parameters(job.notebook))
        assert not undeclared, f"{profile.name} gives {job.notebook.name} undeclared {undeclared}"


# ------------------------------------------------------------------------------ (b) stored notebooks
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_and_with_stable_ids(notebook):
    nb = read(notebook)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    assert [c.id for c in nb.cells] == [f"{notebook.stem}-{i:02d}" for i in range(len(nb.cells))]
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.cells[0].cell_type == "markdown" and "Hypothesis" in nb.cells[0].source


# ------------------------------------------------------------------------------ (c) thin notebooks
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin(notebook):
    for cell in read(notebook).cells:
        if cell.cell_type == "code":
            found = [f for f in FORBIDDEN if f in cell.source]
            assert not found, f"{notebook.name} cell {cell.id} contains {found}: move it into rnlib"


# ------------------------------------------------------------------------------ (d) smoke execution
@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One result cache for the whole session, so a baseline trained by one notebook serves the next."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNLIB_CACHE", str(tmp_path_factory.mktemp("rnlib-cache")))
        mp.setenv("RNLIB_THREADS", "1")  # tiny models: one thread per kernel is fastest on a shared CI box
        yield Path(os.environ["RNLIB_CACHE"])


@pytest.fixture(scope="session")
def smoke_jobs():
    """parameters/smoke.run.yaml expanded, by notebook stem."""
    return {job.notebook.stem: job for job in expand_jobs(load_profile(PARAMETERS_DIR / "smoke.run.yaml"))}


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_executes_under_smoke_profile(notebook, smoke_jobs, shared_cache, tmp_path):
    job = smoke_jobs[notebook.stem]
    records = tmp_path / f"{notebook.stem}.records.csv"
    out = tmp_path / notebook.name
    papermill.execute_notebook(
        str(notebook), str(out), parameters={**job.parameters, "records": str(records)},
        kernel_name="python3", execution_timeout=CELL_TIMEOUT, progress_bar=False,
    )  # fmt: skip
    executed = nbformat.read(out, as_version=4)
    # Study.run's progress line keeps its final state in the executed notebook: every program done
    bars = [o["data"]["text/plain"] for c in executed.cells for o in c.get("outputs", [])
            if "program" in o.get("data", {}).get("text/plain", "")]  # fmt: skip
    assert bars and all(re.search(r"\b(\d+)/\1 \[", bar) for bar in bars), bars
    images = [o for c in executed.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the notebook drew no figure"
    verdict = "".join(o.get("data", {}).get("text/markdown", "") for o in executed.cells[-1].outputs)
    assert any(f"**Verdict: {v}.**" in verdict for v in VERDICTS), verdict  # one of the rule's four verdicts

    df = read_records(records)
    seeds = sorted(job.parameters.get("seeds", [0, 1, 2]))
    tasks = job.parameters.get("tasks") or list(TASKS)
    assert (df["version"] == version(notebook)).all()
    for neuron in PROTOCOL_NEURONS[version(notebook)] | BASELINES:
        for task in tasks:
            rows = df[
                (df["model"] == neuron) & (df["task"] == task) & (df["budget"] == TASKS[task].default_budget)
            ]
            assert sorted(rows["seed"]) == seeds, f"{neuron} on {task}: seeds {sorted(rows['seed'])}"
    ok = df[~df["diverged"].astype(bool)]
    assert ok["value"].map(math.isfinite).all()
    assert ok.loc[ok["task"] == "ood", "id_value"].map(math.isfinite).all()
    assert (abs(df["params"] - df["budget"]) <= 0.05 * df["budget"])[df["model"] == df["neuron"]].all()


@pytest.mark.slow
def test_figures_are_drawn_even_when_mplbackend_says_agg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headless servers and CI often set MPLBACKEND=Agg; a figure a cell returns still comes out as PNG."""
    nb = nbformat.v4.new_notebook()
    code = "from rnlib.analysis import plots\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nfig"
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, tmp_path / "in.ipynb")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    papermill.execute_notebook(
        str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
        execution_timeout=300, progress_bar=False,
    )  # fmt: skip
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs
    assert any("image/png" in o.get("data", {}) for o in outputs), outputs
