"""A notebook's parameters, checked where they enter: by the runner (a profile's values) and by the notebook's
first cell (``check_parameters(globals())``), with the same one-line errors.

``papermill -p NAME VALUE`` passes lists, mappings and booleans as strings (``-p seeds "[0, 1]"`` arrives as
``"[0, 1]"``); the notebook parses them as YAML against the type its ``parameters`` cell declares
(``seeds: list = [0, 1, 2]``, which leaves ``seeds: list`` in the kernel's ``__annotations__``), or stops
before any training with one line naming the parameter, what it got and how to pass it. A run profile's own
settings passed as parameters (``papermill ... -f parameters/smoke.run.yaml``, which papermill only warns
about) stop it too: the notebook would otherwise run the full protocol silently.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import yaml

from rnlib.core.catalog import NEURONS, TASKS

PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),  # an int is a valid float
    "str": (str,),
    "list": (list,),
    "bool": (bool,),
    "dict": (dict,),
}
NON_EMPTY = ("seeds", "budgets", "omegas", "neurons", "kinds", "sweep_tasks")  # an empty one trains nothing
EXAMPLES = {"list": "[0, 1]", "dict": "{complex4d: 8000}", "bool": "true", "int": "3000", "float": "0.001"}
# a run profile's keys (rnlib.batch.profiles.KEYS) that no notebook uses as a name: seen in a kernel, they
# were injected by `papermill -f` given a profile instead of its parameters file
PROFILE_ONLY = ("notebooks", "notebooks_dir", "grid", "overrides", "timeout")


class ParameterError(ValueError):
    """A notebook parameter of the wrong type, an unknown name, or an empty list: one line."""


def type_problem(value: Any, type_name: str) -> str | None:
    """What is wrong with ``value`` for a parameter declared ``: type_name``, or None."""
    expected = PYTHON_TYPES.get(type_name)
    if not expected or (isinstance(value, expected) and (bool in expected or not isinstance(value, bool))):
        return None
    hint = (
        " (YAML reads 1e-3 as a string; write 1.0e-3)"
        if type_name == "float" and isinstance(value, str)
        else ""
    )
    return f"expected {type_name}, got {type(value).__name__} {value!r}{hint}"


def name_problem(key: str, value: Any) -> str | None:
    """For a ``tasks``/``task``/``neurons``/``neuron``/``sweep_tasks`` parameter, the first unknown name."""
    kind = {"tasks": "task", "task": "task", "sweep_tasks": "task", "neurons": "neuron", "neuron": "neuron"}
    registry = TASKS if kind.get(key) == "task" else NEURONS
    for name in (value if isinstance(value, list) else [value]) if key in kind else []:
        if not isinstance(name, str) or name not in registry:
            return f"unknown {kind[key]} {name!r}; valid: {', '.join(sorted(registry))}"
    return None


def parsed(value: Any, type_name: str) -> Any:
    """A string from ``papermill -p`` read as YAML when its parameter is not a string (else ``value``)."""
    if not isinstance(value, str) or type_name == "str" or type_name not in PYTHON_TYPES:
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value  # reported by type_problem, with what was given


def check_parameters(namespace: MutableMapping[str, Any]) -> None:
    """Parse and check, in place, every parameter the notebook's ``parameters`` cell declares with a type."""
    annotations = namespace.get("__annotations__", {})
    profile = [key for key in PROFILE_ONLY if key in namespace and key not in annotations]
    if profile:
        raise ParameterError(
            f"parameters {', '.join(profile)} are a run profile's settings, not this notebook's: pass the "
            "profile's parameters file (papermill ... -f parameters/smoke.yaml), or run the profile "
            "(python -m rnlib run parameters/smoke.run.yaml)"
        )
    for name, annotation in dict(namespace.get("__annotations__", {})).items():
        type_name = getattr(annotation, "__name__", str(annotation))
        if name not in namespace or type_name not in PYTHON_TYPES:
            continue
        value = parsed(namespace[name], type_name)
        problem = type_problem(value, type_name) or name_problem(name, value)
        if problem is None and name in NON_EMPTY and not value:
            problem = "is empty; it needs at least one value"
        if problem:
            how = f'papermill ... -y "{name}: {EXAMPLES.get(type_name, "...")}"'
            raise ParameterError(
                f"parameter {name}: {problem} (declared `{name}: {type_name}`; pass it as {how})"
            )
        namespace[name] = value
