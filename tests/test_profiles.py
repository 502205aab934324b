"""Tests for rnlib.batch.profiles: every validation error with its message, grid expansion, names and job
ids."""

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nbformat
import papermill
import pytest
from papermill.iorw import read_yaml_file

from rnlib.batch.profiles import (
    ProfileError,
    expand_jobs,
    format_value,
    job_id,
    load_profile,
    resolve_notebook,
    select_jobs,
)
from rnlib.core import catalog
from rnlib.core.neurons import NEURONS
from rnlib.core.tasks import TASKS
from rnlib.paths import PARAMETERS_DIR, REPO_ROOT
from rnlib.provenance import ANALYSIS_VERSION, NUMERICS_VERSION, STEP_ENV, job_version

FIXTURES = Path(__file__).parent / "fixtures"
HEAD = f"notebooks: [ok]\nnotebooks_dir: {FIXTURES}\n"


def write(tmp_path: Path, text: str, name: str = "profile.yaml") -> Path:
    """A profile file with ``text`` in ``tmp_path``."""
    path = tmp_path / name
    path.write_text(text)
    return path


# (profile text, the key the message names, a fragment saying what is wrong or valid)
ERRORS = {
    "malformed": (HEAD + "grid: {budget: [1, 2}\n", "", "malformed YAML at line 3"),
    "not a mapping": ("- ok\n- raises\n", "", "expected a mapping of name, notebooks"),
    "unknown key": (
        HEAD + "grd: {budget: [1]}\n",
        "",
        "unknown key 'grd' (did you mean 'grid'?); valid keys: name",
    ),
    "bad name": (HEAD + "name: a/b\n", "name", "expected a folder name"),
    "bad step": (HEAD + "step: c\n", "step", "expected one of auto, fused, autograd, got 'c'"),
    "no dir": (
        "notebooks_dir: /nonexistent/rnlib\n",
        "notebooks_dir",
        "/nonexistent/rnlib is not a directory",
    ),
    "no versions": (f"notebooks_dir: {FIXTURES}\n", "notebooks", "no v[0-9][0-9]_*.ipynb in"),
    "notebooks not list": (
        f"notebooks: ok\nnotebooks_dir: {FIXTURES}\n",
        "notebooks",
        "expected a non-empty list",
    ),
    "unknown notebook": (
        f"notebooks: [ok, v99]\nnotebooks_dir: {FIXTURES}\n",
        "notebooks[1]",
        "no single notebook matches 'v99' in",
    ),
    "summary as notebook": (
        f"notebooks: [summary]\nnotebooks_dir: {FIXTURES}\n",
        "notebooks[0]",
        "summary: true",
    ),
    "listed twice": (
        f"notebooks: [ok, ok]\nnotebooks_dir: {FIXTURES}\n",
        "notebooks[1]",
        "ok is listed twice",
    ),
    "parameters not mapping": (
        HEAD + "parameters: [1]\n",
        "parameters",
        "expected a mapping of parameter names",
    ),
    "undeclared": (
        HEAD + "parameters: {budgets: [1]}\n",
        "parameters.budgets",
        "not a parameter of ok.ipynb; it",
    ),
    "runner sets records": (
        HEAD + "parameters: {records: x.csv}\n",
        "parameters.records",
        "set by the runner",
    ),
    "str for int": (
        HEAD + "parameters: {steps: ten}\n",
        "parameters.steps",
        "expected int, got str 'ten' (ok.ipynb declares `steps: int`)",
    ),
    "bool for int": (HEAD + "parameters: {steps: true}\n", "parameters.steps", "expected int, got bool True"),
    "float for int": (
        HEAD + "parameters: {budget: 1.5}\n",
        "parameters.budget",
        "expected int, got float 1.5",
    ),
    "yaml 1e-3": (HEAD + "parameters: {lr: 1e-3}\n", "parameters.lr", "YAML reads 1e-3 as a string"),
    "str for list": (HEAD + "parameters: {seeds: 0}\n", "parameters.seeds", "expected list, got int 0"),
    "unknown task": (
        HEAD + "parameters: {tasks: [spiral, nope]}\n",
        "parameters.tasks",
        "unknown task 'nope'",
    ),
    "unknown neuron": (
        HEAD + "parameters: {neurons: [relu]}\n",
        "parameters.neurons",
        "unknown neuron 'relu'",
    ),
    "grid unknown task": (
        HEAD + "grid: {tasks: [[spiral], [nope]]}\n",
        "grid.tasks[1]",
        "unknown task 'nope'",
    ),
    "grid wrong type": (HEAD + "grid: {budget: [1, two]}\n", "grid.budget[1]", "expected int, got str 'two'"),
    "empty grid list": (HEAD + "grid: {budget: []}\n", "grid.budget", "expected a non-empty list of values"),
    "grid scalar": (HEAD + "grid: {budget: 3000}\n", "grid.budget", "expected a non-empty list of values"),
    "empty grid": (HEAD + "grid: {}\n", "grid", "empty mapping"),
    "grid and parameters": (
        HEAD + "parameters: {budget: 1}\ngrid: {budget: [1, 2]}\n",
        "grid.budget",
        "also set under `parameters`",
    ),
    "override unknown": (HEAD + "overrides: {raises: {steps: 1}}\n", "overrides.raises", "valid: ok"),
    "override undeclared": (
        HEAD + "overrides: {ok: {run_dir: x}}\n",
        "overrides.ok.run_dir",
        "set by the runner",
    ),
    "override wrong type": (HEAD + "overrides: {ok: {steps: 1.5}}\n", "overrides.ok.steps", "expected int"),
    "override vs grid": (
        HEAD + "grid: {budget: [1, 2]}\noverrides: {ok: {budget: 3}}\n",
        "overrides.ok.budget",
        "also varied by grid.budget",
    ),
    "summary not bool": (HEAD + "summary: yes please\n", "summary", "expected true or false"),
    "timeout negative": (HEAD + "timeout: -1\n", "timeout", "expected a positive number of seconds"),
    "same stem": (HEAD + "grid: {device: ['a b', 'a_b']}\n", "grid", "same output name 'ok__device-a_b'"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_validation_error_names_file_key_and_problem(tmp_path: Path, case: str) -> None:
    text, key, fragment = ERRORS[case]
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        expand_jobs(load_profile(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: " if key else f"{path}: ")
    assert fragment in message


def test_unknown_names_list_the_registry(tmp_path: Path) -> None:
    for key, registry in (("tasks", TASKS), ("neurons", NEURONS)):
        path = write(tmp_path, HEAD + f"parameters: {{{key}: [nope]}}\n")
        with pytest.raises(ProfileError, match=f"valid: {', '.join(sorted(registry))}$"):
            load_profile(path)


def test_missing_file_is_a_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"missing\.yaml: cannot read profile"):
        load_profile(tmp_path / "missing.yaml")


def test_parameter_line_papermill_cannot_parse_is_explained(tmp_path: Path) -> None:
    notebook = json.loads((FIXTURES / "ok.ipynb").read_text())
    cell = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    source = "".join(cell["source"]).replace("# parameter budget;", "# parameter budget; 0 = default;")
    cell["source"] = source
    (tmp_path / "ok.ipynb").write_text(json.dumps(notebook))
    path = write(tmp_path, f"notebooks: [ok]\nnotebooks_dir: {tmp_path}\nparameters: {{budget: 1}}\n")
    with pytest.raises(ProfileError, match=r"parameters\.budget: papermill cannot parse ok\.ipynb's line"):
        load_profile(path)


def test_valid_profile_accepts_int_for_float_and_known_names(tmp_path: Path) -> None:
    text = HEAD + "parameters: {lr: 1, omega: 2.5, tasks: [spiral], neurons: [vanilla, singlu]}\n"
    profile = load_profile(write(tmp_path, text, "smoke.yaml"))
    assert profile.name == "smoke"
    assert [job.stem for job in expand_jobs(profile)] == ["ok"]


def test_grid_expands_to_one_job_per_combination_named_by_what_varies(tmp_path: Path) -> None:
    text = (
        f"notebooks: [ok, raises]\nnotebooks_dir: {FIXTURES}\nparameters: {{steps: 5}}\n"
        "grid: {budget: [1, 2], seeds: [[0, 1], [2]], device: [cpu]}\n"
        "overrides: {raises: {steps: 7}}\n"
    )
    jobs = expand_jobs(load_profile(write(tmp_path, text)))
    assert [job.stem for job in jobs[:4]] == [
        "ok__budget-1__seeds-0_1",
        "ok__budget-1__seeds-2",
        "ok__budget-2__seeds-0_1",
        "ok__budget-2__seeds-2",
    ]
    assert len(jobs) == 8 and jobs[4].stem == "raises__budget-1__seeds-0_1"
    assert jobs[3].parameters == {"steps": 5, "budget": 2, "seeds": [2], "device": "cpu"}
    assert jobs[4].parameters["steps"] == 7  # the override wins over `parameters`
    assert all(job.records for job in jobs)


def test_job_ids_are_stable_and_change_with_notebook_parameters_and_version(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "grid: {budget: [1, 2]}\n")
    first, second = (expand_jobs(load_profile(path)) for _ in range(2))
    assert [j.id for j in first] == [j.id for j in second]
    assert first[0].id != first[1].id
    notebook = tmp_path / "ok.ipynb"
    shutil.copy(FIXTURES / "ok.ipynb", notebook)
    params = first[0].parameters
    assert job_id(notebook, params, "v1") == job_id(notebook, dict(params), "v1")
    assert job_id(notebook, params, "v1") != job_id(notebook, params, "v2")
    assert job_id(notebook, params, "v1") != job_id(notebook, {**params, "budget": 3}, "v1")
    notebook.write_text(notebook.read_text().replace("Fixture", "fixture"))
    assert job_id(notebook, params, "v1") != job_id(FIXTURES / "ok.ipynb", params, "v1")


def test_job_version_is_declared_not_hashed_from_source(monkeypatch) -> None:
    """A job's version names the declared numerics and analysis versions, torch and the step, nothing else."""
    monkeypatch.delenv(STEP_ENV, raising=False)
    version = job_version()
    assert f"numerics{NUMERICS_VERSION}-" in version and version.endswith(f"-analysis{ANALYSIS_VERSION}")
    assert job_version("autograd") != job_version("fused")  # they agree to float32 rounding only
    monkeypatch.setenv(STEP_ENV, "autograd")
    assert job_version() == job_version("autograd")  # how a profile's `step: autograd` reaches its kernels


def test_registering_a_neuron_changes_every_job_id(monkeypatch) -> None:
    """What is registered decides outputs (v03 tabulates every neuron's width), so it is in every job id."""
    profile = load_profile(PARAMETERS_DIR / "smoke.run.yaml")
    before = [job.id for job in expand_jobs(profile)]
    extra = replace(catalog.NEURONS["singlu"], name="singlu_copy")
    monkeypatch.setitem(catalog.NEURONS, "singlu_copy", extra)
    after = [job.id for job in expand_jobs(profile)]
    assert not set(before) & set(after)


def test_a_profile_step_is_in_every_job_and_its_id(tmp_path: Path) -> None:
    auto = expand_jobs(load_profile(write(tmp_path, HEAD)))
    slow = expand_jobs(load_profile(write(tmp_path, HEAD + "step: autograd\n", "slow.yaml")))
    assert [j.step for j in auto] == ["auto"] and [j.step for j in slow] == ["autograd"]
    assert auto[0].id != slow[0].id or "autograd" in job_version()  # same only where auto means autograd


@pytest.mark.slow
def test_a_pure_refactor_keeps_every_job_id(tmp_path: Path) -> None:
    """On a copy of the tree, a renamed helper and an edited docstring leave every job id as it was."""
    tree = tmp_path / "tree"
    skip = shutil.ignore_patterns(".venv", ".git", ".cache", "executed", "*.pyc")
    shutil.copytree(REPO_ROOT, tree, ignore=skip)
    script = "from rnlib.batch.profiles import expand_jobs, load_profile; import json, sys; " + (
        "print(json.dumps([j.id for j in expand_jobs(load_profile(sys.argv[1]))]))"
    )

    def ids() -> list[str]:
        run = [sys.executable, "-c", script, str(tree / "parameters" / "default.run.yaml")]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        return json.loads(subprocess.run(run, capture_output=True, text=True, env=env, check=True).stdout)

    before = ids()
    trainer = tree / "rnlib" / "training" / "trainer.py"
    text = trainer.read_text().replace("def first_nonfinite(", "def _first_bad_step(")
    text = text.replace("first_nonfinite(losses)", "_first_bad_step(losses)")
    trainer.write_text(text.replace('"""One batched trainer:', '"""The one batched trainer:', 1))
    assert "_first_bad_step" in trainer.read_text()
    assert ids() == before


def test_resolve_notebook_by_prefix_or_stem() -> None:
    available = [Path(f"{stem}.ipynb") for stem in ("v01_rich", "v10_free_phase", "v10_other", "capacity")]
    assert resolve_notebook("v01", available) == available[0]
    assert resolve_notebook("v10_free_phase", available) == available[1]
    assert resolve_notebook("capacity", available) == available[3]
    assert resolve_notebook("v10", available) is None  # ambiguous
    assert resolve_notebook("v1", available) is None


def test_select_jobs_by_notebook_or_stem(tmp_path: Path) -> None:
    text = f"notebooks: [ok, raises]\nnotebooks_dir: {FIXTURES}\ngrid: {{budget: [1, 2]}}\n"
    jobs = expand_jobs(load_profile(write(tmp_path, text)))
    assert [j.stem for j in select_jobs(jobs, ["raises"])] == ["raises__budget-1", "raises__budget-2"]
    assert [j.stem for j in select_jobs(jobs, ["ok__budget-2"])] == ["ok__budget-2"]
    assert select_jobs(jobs, []) == jobs
    with pytest.raises(ProfileError) as info:
        select_jobs(jobs, ["v99"])
    assert str(info.value) == "--only: 'v99' matches none of the profile's notebooks; valid: ok, raises"


def test_format_value() -> None:
    assert format_value(8000) == "8000"
    assert format_value([0, 1, 2]) == "0_1_2"
    assert format_value(0.001) == "0.001"
    assert format_value(True) == "true"
    assert format_value("cuda:0") == "cuda_0"


# ------------------------------------------------------------ a profile's parameters as a papermill file
RUN_PROFILES = sorted(PARAMETERS_DIR.glob("*.run.yaml"))


@pytest.mark.parametrize("profile", RUN_PROFILES, ids=lambda p: p.name.removesuffix(".run.yaml"))
def test_a_shipped_profiles_parameters_file_runs_with_plain_papermill(
    profile: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``papermill NB OUT -f parameters/<name>.yaml`` gives every notebook of the profile its shared values,
    with no unknown-parameter warning (papermill reads the file itself, as its ``-f`` does)."""
    loaded = load_profile(profile)
    assert loaded.parameters_file == profile.with_name(profile.name.replace(".run.yaml", ".yaml"))
    values = read_yaml_file(str(loaded.parameters_file))
    assert values and values == loaded.parameters
    for notebook in loaded.notebooks:
        caplog.clear()
        out = tmp_path / notebook.name
        with caplog.at_level(logging.WARNING, logger="papermill"):
            papermill.execute_notebook(str(notebook), str(out), parameters=values, prepare_only=True)
        assert "unknown parameter" not in caplog.text, f"{notebook.name}: {caplog.text}"
        executed = nbformat.read(out, as_version=4)
        assert executed.metadata.papermill.parameters == values
        injected = [c.source for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and all(f"{key} = " in injected[0] for key in values)


def test_papermill_command_line_takes_the_smoke_parameters_file(tmp_path: Path) -> None:
    out = tmp_path / "v10.ipynb"
    command = [str(Path(sys.executable).parent / "papermill"), "notebooks/v10_free_phase.ipynb", str(out),
               "-f", "parameters/smoke.yaml", "--prepare-only"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "unknown parameter" not in result.stderr
    parameters = nbformat.read(out, as_version=4).metadata.papermill.parameters
    assert parameters == {"seeds": [0], "steps": 30, "tasks": []}


def test_a_parameters_file_gives_the_same_jobs_and_ids_as_inline_parameters(tmp_path: Path) -> None:
    write(tmp_path, "seeds: [0, 1]  # shared\nsteps: 5\n", "shared.yaml")
    inline = load_profile(write(tmp_path, HEAD + "parameters: {seeds: [0, 1], steps: 5}\n", "a.yaml"))
    named = load_profile(write(tmp_path, HEAD + "parameters: shared.yaml\n", "a.run.yaml"))
    assert named.name == "a" and named.parameters_file == tmp_path / "shared.yaml"
    assert [(j.stem, j.id, j.parameters) for j in expand_jobs(named)] == [
        (j.stem, j.id, j.parameters) for j in expand_jobs(inline)
    ]


@pytest.mark.parametrize(
    ("text", "where", "fragment"),
    [
        (
            "steps: ten\n",
            "shared.yaml: steps: ",
            "expected int, got str 'ten' (ok.ipynb declares `steps: int`)",
        ),
        ("records: x.csv\n", "shared.yaml: records: ", "set by the runner for every job"),
        ("budgets: [1]\n", "shared.yaml: budgets: ", "not a parameter of ok.ipynb"),
        ("- 1\n", "shared.yaml: ", "expected a mapping of parameter names to values"),
    ],
)
def test_a_bad_parameters_file_is_named_with_its_key(tmp_path: Path, text: str, where: str, fragment: str):
    write(tmp_path, text, "shared.yaml")
    with pytest.raises(ProfileError) as info:
        load_profile(write(tmp_path, HEAD + "parameters: shared.yaml\n", "p.run.yaml"))
    assert str(info.value).startswith(f"{tmp_path / where}") and fragment in str(info.value)


def test_a_missing_parameters_file_and_a_parameters_file_run_as_a_profile_are_one_line(tmp_path: Path):
    with pytest.raises(ProfileError, match=r"p\.run\.yaml: parameters: .*nope\.yaml is not a file"):
        load_profile(write(tmp_path, HEAD + "parameters: nope.yaml\n", "p.run.yaml"))
    with pytest.raises(ProfileError) as info:
        load_profile(PARAMETERS_DIR / "smoke.yaml")
    assert str(info.value) == (
        f"{PARAMETERS_DIR / 'smoke.yaml'}: holds notebook parameters (seeds, steps, tasks), not a run "
        f"profile; run {PARAMETERS_DIR / 'smoke.run.yaml'}"
    )
