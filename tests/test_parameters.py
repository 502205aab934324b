"""Tests for rnlib.batch.parameters: a notebook's parameters parsed from papermill's strings, or refused in
one line before any training."""

from pathlib import Path

import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

from rnlib.batch.parameters import ParameterError, check_parameters
from rnlib.paths import NOTEBOOKS_DIR
from rnlib.records import read_records

DECLARED = {"seeds": list, "budget": int, "tasks": list, "lr": float, "device": str, "cuda": bool}


def namespace(**values: object) -> dict:
    """A kernel's globals after the parameters cell and papermill's injected cell."""
    defaults = {"seeds": [0, 1, 2], "budget": 0, "tasks": [], "lr": 0.001, "device": "cpu", "cuda": False}
    return {"__annotations__": dict(DECLARED), **defaults, **values}


def test_strings_from_papermill_p_are_read_as_yaml_of_the_declared_type() -> None:
    ns = namespace(seeds="[0, 1]", tasks="[nested2d, spiral]", budget=3000, lr="0.01", cuda="true")
    check_parameters(ns)
    assert ns["seeds"] == [0, 1] and ns["tasks"] == ["nested2d", "spiral"] and ns["cuda"] is True
    assert ns["lr"] == 0.01 and ns["device"] == "cpu"  # a str parameter stays as given


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"seeds": "[0"}, "parameter seeds: expected list, got str '[0'"),
        ({"tasks": "[nested2d, bogus]"}, "parameter tasks: unknown task 'bogus'; valid: checkerboard"),
        ({"seeds": "[]"}, "parameter seeds: is empty"),
        ({"budget": "3k"}, "parameter budget: expected int, got str '3k'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_parameter_and_how_to_pass_it(values: dict, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        check_parameters(namespace(**values))
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text
    name = next(iter(values))
    assert f'pass it as papermill ... -y "{name}: ' in text


def test_a_run_profile_passed_as_parameters_stops_in_one_line() -> None:
    """``papermill ... -f parameters/smoke.run.yaml`` only warns and injects the runner's settings; the
    notebook stops before training instead of running the protocol with none of the profile's values."""
    ns = namespace(name="smoke", parameters="smoke.yaml", overrides={"v05": {"omegas": [1.0]}}, timeout=600)
    with pytest.raises(ParameterError) as info:
        check_parameters(ns)
    text = str(info.value)
    assert text.startswith("parameters overrides, timeout are a run profile's settings") and "\n" not in text
    assert "-f parameters/smoke.yaml" in text


@pytest.mark.slow
def test_plain_papermill_with_p_list_strings_runs_a_version_notebook(tmp_path: Path) -> None:
    """``papermill v10 out -p seeds "[0]" -p tasks "[nested2d]" -p steps 2``, as the command line passes."""
    records = tmp_path / "v10.records.csv"
    params = {"seeds": "[0]", "tasks": "[nested2d]", "steps": 2, "records": str(records)}
    papermill.execute_notebook(
        str(NOTEBOOKS_DIR / "v10_free_phase.ipynb"), str(tmp_path / "out.ipynb"), parameters=params,
        kernel_name="python3", execution_timeout=600, progress_bar=False,
    )  # fmt: skip
    done = read_records(records)
    assert set(done["seed"]) == {0} and set(done["task"]) == {"nested2d"}
    with pytest.raises(PapermillExecutionError, match="parameter tasks: unknown task 'nested'"):
        papermill.execute_notebook(
            str(NOTEBOOKS_DIR / "v10_free_phase.ipynb"), str(tmp_path / "bad.ipynb"),
            parameters={**params, "tasks": "[nested]"}, kernel_name="python3", execution_timeout=600,
            progress_bar=False,
        )  # fmt: skip
