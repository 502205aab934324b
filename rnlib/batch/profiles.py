"""Run profiles: a YAML file -> a validated Profile -> one papermill Job per notebook and grid combination.

A profile (``parameters/<name>.run.yaml``) may hold only these keys::

    name: smoke  # output folder executed/<name>; default: the file's stem, less `.run`
    notebooks: [v01, v10]  # prefixes (v10) or stems (v10_free_phase); default: every v[0-9][0-9]_*.ipynb
    notebooks_dir: notebooks  # where they live, relative to the repo root (tests use tests/fixtures)
    parameters: smoke.yaml  # shared by every notebook: a file beside this one, or inline ({steps: 300})
    grid: {budget: [3000, 8000]}  # one job per combination; varying keys name the outputs
    overrides: {v14: {budgets: [3000, 8000, 32000]}}  # per notebook (prefix or stem); win over parameters
    summary: true  # afterwards run summary.ipynb with run_dir=<out>
    timeout: 3600  # seconds per cell; default: no limit
    step: auto  # how training steps are computed: auto (fused where possible), fused or autograd

Every value is checked against the parameters its notebook declares (``papermill.inspect_notebook``). The
shipped profiles keep their shared parameters in a file of their own (``parameters/smoke.yaml``), a flat
mapping that plain papermill reads too: ``papermill NB OUT -f parameters/smoke.yaml``.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import papermill
import yaml

from rnlib.batch.parameters import name_problem, type_problem
from rnlib.core import catalog
from rnlib.paths import NOTEBOOKS_DIR, REPO_ROOT, SUMMARY_STEM, VERSION_GLOB
from rnlib.provenance import STEP_KINDS, job_version

RUNNER_SET = ("records", "run_dir")  # parameters only the runner sets: each job's records path, the run dir
KEYS = ("name", "notebooks", "notebooks_dir", "parameters", "grid", "overrides", "summary", "timeout", "step")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ProfileError(ValueError):
    """A profile problem, as one line naming the file, the key and what is valid."""


@dataclass(frozen=True)
class Profile:
    """A validated run profile; ``overrides`` is keyed by notebook stem; ``parameters_file`` is the file its
    shared ``parameters`` came from (None when inline)."""

    path: Path
    name: str
    notebooks: tuple[Path, ...]
    notebooks_dir: Path
    parameters: dict[str, Any] = field(hash=False)
    grid: dict[str, list[Any]] = field(hash=False)
    overrides: dict[str, dict[str, Any]] = field(hash=False)
    summary: bool = True
    timeout: float | None = None
    step: str = "auto"
    parameters_file: Path | None = None


@dataclass(frozen=True)
class Job:
    """One papermill execution: a notebook, the parameters the profile gives it and its output stem."""

    notebook: Path
    stem: str
    parameters: dict[str, Any] = field(hash=False)
    id: str
    records: bool = True  # the notebook declares `records`, so the runner passes it a records path
    step: str = "auto"  # the profile's `step`: the kernel runs with RNLIB_STEP set to it

    @property
    def name(self) -> str:
        """The notebook's stem, e.g. ``v10_free_phase``."""
        return self.notebook.stem


def profile_version(profile: Profile) -> str:
    """What decides every job's outputs besides its notebook and parameters: the declared numerics and
    analysis versions, torch, the profile's step (``rnlib.provenance.job_version``) and the registry."""
    return f"{job_version(profile.step)}-registry{catalog.digest()}"


def job_id(notebook: Path, parameters: dict[str, Any], version: str) -> str:
    """Stable id of a job: sha256 of the notebook's content, its parameters and ``version``, which is
    ``profile_version``: what else decides the outputs (never the source text)."""
    digest = hashlib.sha256(notebook.read_bytes())
    digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    digest.update(version.encode())
    return digest.hexdigest()


@cache
def _declared(notebook: Path, mtime: float) -> dict[str, dict[str, Any]]:
    """``papermill.inspect_notebook`` cached per file version."""
    return papermill.inspect_notebook(str(notebook))


def declared_parameters(notebook: Path) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares in its ``parameters`` cell, as papermill reads them."""
    return _declared(notebook, notebook.stat().st_mtime)


def _undeclared(notebook: Path, key: str, declared: dict[str, Any]) -> str:
    """Why ``key`` is not a parameter of ``notebook``, with a hint when papermill skipped its line."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        return f"{notebook.name} has no cell tagged 'parameters'"
    source = "".join(tagged[0]["source"])
    line = re.search(rf"^{re.escape(key)}\s*(:[^=]*)?=.*$", source, re.MULTILINE)
    if line and line.group(0).count("=") > 1:
        return f"papermill cannot parse {notebook.name}'s line {line.group(0)!r} ('=' in its help comment)"
    return f"not a parameter of {notebook.name}; it declares {', '.join(declared) or 'none'}"


def resolve_notebook(name: str, available: list[Path]) -> Path | None:
    """The notebook whose stem is ``name`` or starts with ``name_`` (``v10`` -> ``v10_free_phase``)."""
    exact = [nb for nb in available if nb.stem == name]
    prefixed = [nb for nb in available if nb.stem.startswith(f"{name}_")]
    matches = exact or prefixed
    return matches[0] if len(matches) == 1 else None


def format_value(value: Any) -> str:
    """A grid value as it appears in an output name: ``8000``, ``0_1_2`` for ``[0, 1, 2]``."""
    if isinstance(value, list):
        return "_".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(value))


def _fail(path: Path, key: str, problem: str) -> ProfileError:
    """One-line error: ``file: key: problem``."""
    return ProfileError(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


def _load_yaml(path: Path, what: str = "profile") -> Any:
    """A YAML file's content; a missing file or malformed YAML is a one-line ProfileError."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(path, "", f"cannot read {what} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _fail(path, "", f"malformed YAML{where}: {problem}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    """The profile's top-level mapping."""
    data = _load_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _fail(path, "", f"expected a mapping of {', '.join(KEYS)}; got {type(data).__name__}")
    run_file = path.with_name(f"{path.stem}.run{path.suffix}")
    if run_file.exists() and not set(data) & set(KEYS):
        keys = ", ".join(map(str, data))
        raise _fail(path, "", f"holds notebook parameters ({keys}), not a run profile; run {run_file}")
    for key in data:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _fail(path, "", f"unknown key {key!r}{hint}; valid keys: {', '.join(KEYS)}")
    return data


def _mapping(path: Path, key: str, value: Any) -> dict[str, Any]:
    """``value`` checked to be a mapping with string keys (``key`` empty: the whole file ``path``)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _fail(path, key, f"expected a mapping of parameter names to values, got {value!r}")
    for name in value:
        if name in RUNNER_SET:
            at = f"{key}.{name}" if key else name
            raise _fail(path, at, f"set by the runner for every job; remove it ({RUNNER_SET})")
    return value


def _shared(path: Path, data: dict[str, Any]) -> tuple[dict[str, Any], Path | None]:
    """The profile's shared parameters and the file they came from: ``parameters`` inline, or naming a flat
    YAML file of them (relative to the profile's folder) that plain papermill reads with ``-f``."""
    value = data.get("parameters", {})
    if not isinstance(value, str):
        return _mapping(path, "parameters", value), None
    file = Path(value) if Path(value).is_absolute() else path.parent / value
    if not file.is_file():
        raise _fail(path, "parameters", f"{file} is not a file; name a YAML file of notebook parameters")
    return _mapping(file, "", _load_yaml(file, "parameters file") or {}), file


def _notebooks(path: Path, data: dict[str, Any], folder: Path) -> tuple[Path, ...]:
    """The notebooks the profile names (or every version notebook), resolved to files."""
    available = sorted(nb for nb in folder.glob("*.ipynb") if nb.stem != SUMMARY_STEM)
    valid = f"valid: {', '.join(nb.stem for nb in available)} (or their vNN prefixes)"
    if "notebooks" not in data:
        found = tuple(sorted(folder.glob(VERSION_GLOB)))
        if not found:
            raise _fail(path, "notebooks", f"not given and no {VERSION_GLOB} in {folder}; {valid}")
        return found
    names = data["notebooks"]
    if not isinstance(names, list) or not names:
        raise _fail(path, "notebooks", f"expected a non-empty list of notebook names; {valid}")
    chosen: list[Path] = []
    for i, name in enumerate(names):
        notebook = resolve_notebook(name, available) if isinstance(name, str) else None
        if notebook is None:
            note = " (it runs via `summary: true`)" if name == SUMMARY_STEM else f" in {folder}"
            raise _fail(path, f"notebooks[{i}]", f"no single notebook matches {name!r}{note}; {valid}")
        if notebook in chosen:
            raise _fail(path, f"notebooks[{i}]", f"{notebook.stem} is listed twice")
        chosen.append(notebook)
    return tuple(chosen)


def _check_parameters(path: Path, notebook: Path, where: str, values: dict[str, Any]) -> None:
    """Raise unless every value is a declared parameter of ``notebook`` of the declared type (``where``
    empty: ``path`` is a parameters file and its keys are named alone)."""
    declared = declared_parameters(notebook)
    for key, value in values.items():
        name = f"{where}.{key}" if where else key
        if key not in declared:
            raise _fail(path, name, _undeclared(notebook, key, declared))
        type_name = declared[key]["inferred_type_name"]
        for i, item in enumerate(value if where == "grid" else [value]):
            at = f"{name}[{i}]" if where == "grid" else name
            problem = type_problem(item, type_name)
            if problem:
                raise _fail(path, at, f"{problem} ({notebook.name} declares `{key}: {type_name}`)")
            problem = name_problem(key, item)
            if problem:
                raise _fail(path, at, problem)


def _grid(path: Path, data: dict[str, Any], parameters: dict[str, Any]) -> dict[str, list[Any]]:
    """The profile's grid: each key a non-empty list of values, none also in ``parameters``."""
    grid = _mapping(path, "grid", data.get("grid", {}))
    if "grid" in data and not grid:
        raise _fail(path, "grid", "empty mapping; give each varied parameter a non-empty list, or drop it")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise _fail(path, f"grid.{key}", f"expected a non-empty list of values, got {values!r}")
        if key in parameters:
            raise _fail(path, f"grid.{key}", "also set under `parameters`; set it in one place")
    return grid


def _overrides(
    path: Path, data: dict[str, Any], notebooks: tuple[Path, ...], grid: dict[str, list[Any]]
) -> dict[str, dict[str, Any]]:
    """The per-notebook overrides, keyed by notebook stem; none may set a key the grid varies."""
    overrides: dict[str, dict[str, Any]] = {}
    for target, values in _mapping(path, "overrides", data.get("overrides", {})).items():
        notebook = resolve_notebook(target, list(notebooks))
        if notebook is None:
            valid = ", ".join(nb.stem for nb in notebooks)
            raise _fail(path, f"overrides.{target}", f"not one of the profile's notebooks; valid: {valid}")
        values = _mapping(path, f"overrides.{target}", values)
        for key in values.keys() & grid.keys():
            raise _fail(path, f"overrides.{target}.{key}", f"also varied by grid.{key}; set it in one place")
        overrides[notebook.stem] = values
    return overrides


def load_profile(path: Path | str, notebooks_dir: Path | str | None = None) -> Profile:
    """Read and validate a profile; ``notebooks_dir`` overrides the profile's own."""
    path = Path(path)
    data = _read_yaml(path)
    name = data.get("name", path.stem.removesuffix(".run"))
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise _fail(path, "name", f"expected a folder name of letters, digits, '_', '.', '-'; got {name!r}")
    folder = Path(notebooks_dir or data.get("notebooks_dir") or NOTEBOOKS_DIR)
    folder = folder if folder.is_absolute() else REPO_ROOT / folder
    if not folder.is_dir():
        raise _fail(path, "notebooks_dir", f"{folder} is not a directory")
    notebooks = _notebooks(path, data, folder)
    parameters, parameters_file = _shared(path, data)
    grid = _grid(path, data, parameters)
    overrides = _overrides(path, data, notebooks, grid)
    summary, timeout = data.get("summary", True), data.get("timeout")
    if not isinstance(summary, bool):
        raise _fail(path, "summary", f"expected true or false, got {summary!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise _fail(path, "timeout", f"expected a positive number of seconds per cell, got {timeout!r}")
    step = data.get("step", "auto")
    if step not in STEP_KINDS:
        raise _fail(path, "step", f"expected one of {', '.join(STEP_KINDS)}, got {step!r}")
    for notebook in notebooks:
        if parameters_file:
            _check_parameters(parameters_file, notebook, "", parameters)
        else:
            _check_parameters(path, notebook, "parameters", parameters)
        _check_parameters(path, notebook, "grid", grid)
        _check_parameters(path, notebook, f"overrides.{notebook.stem}", overrides.get(notebook.stem, {}))
    summary_notebook = folder / f"{SUMMARY_STEM}.ipynb"
    if summary and summary_notebook.exists() and "run_dir" not in declared_parameters(summary_notebook):
        raise _fail(path, "summary", f"{summary_notebook} declares no `run_dir: str` parameter")
    return Profile(
        path, name, notebooks, folder, parameters, grid, overrides, summary, timeout, step, parameters_file
    )


def expand_jobs(profile: Profile) -> list[Job]:
    """One job per notebook and grid combination, named after the grid keys that vary."""
    version = profile_version(profile)
    varying = [key for key, values in profile.grid.items() if len(values) > 1]
    jobs: list[Job] = []
    for notebook in profile.notebooks:
        for combo in itertools.product(*profile.grid.values()):
            chosen = dict(zip(profile.grid, combo, strict=True))
            suffix = "__".join(f"{key}-{format_value(chosen[key])}" for key in varying)
            stem = f"{notebook.stem}__{suffix}" if suffix else notebook.stem
            parameters = {**profile.parameters, **chosen, **profile.overrides.get(notebook.stem, {})}
            records = "records" in declared_parameters(notebook)
            job = Job(
                notebook, stem, parameters, job_id(notebook, parameters, version), records, profile.step
            )
            jobs.append(job)
    stems = [job.stem for job in jobs]
    for stem in stems:
        if stems.count(stem) > 1:
            raise _fail(profile.path, "grid", f"two combinations give the same output name {stem!r}")
    return jobs


def select_jobs(jobs: list[Job], only: list[str]) -> list[Job]:
    """The jobs whose notebook (prefix or stem) or output stem is named in ``only``; all when empty."""
    if not only:
        return jobs
    notebooks = sorted({job.notebook for job in jobs})
    stems = {job.stem for job in jobs}
    chosen: set[Path] = set()
    for token in only:
        notebook = resolve_notebook(token, notebooks)
        if notebook is None and token not in stems:
            valid = ", ".join(nb.stem for nb in notebooks)
            raise ProfileError(f"--only: {token!r} matches none of the profile's notebooks; valid: {valid}")
        if notebook is not None:
            chosen.add(notebook)
    return [job for job in jobs if job.notebook in chosen or job.stem in only]
