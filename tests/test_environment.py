"""The environment is pinned in one place and matches what CI, conda users and the README are told."""

import os
import re
import tomllib
from importlib import metadata

import pytest
import yaml

from rnlib.paths import REPO_ROOT

# An exact pin: a bare distribution name, `==`, a version; no extras, markers or ranges.
EXACT_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.!+_-]+)$")
# Installed versions may carry these local suffixes (the CPU-only torch wheel is `2.13.0+cpu`).
ALLOWED_LOCAL_SUFFIX = {"torch": {"cpu"}}
README_HEAD_LINES = 20  # the quick start, after the three-line answer, must be visible without scrolling


def normalise(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(requirements: list[str], source: str) -> dict[str, str]:
    """Map normalised name -> version, failing on any requirement that is not an exact pin."""
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = EXACT_PIN.match(requirement.strip())
        assert match, f"{source}: {requirement!r} is not an exact `name==version` pin"
        name = normalise(match["name"])
        assert name not in pins, f"{source}: {name} is pinned twice"
        pins[name] = match["version"]
    return pins


def pyproject() -> dict:
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def pyproject_requirements() -> list[str]:
    """Requirements of the runtime dependencies plus every optional-dependency group."""
    project = pyproject()["project"]
    requirements = list(project["dependencies"])
    for group in project.get("optional-dependencies", {}).values():
        requirements += group
    return requirements


def pyproject_pins() -> dict[str, str]:
    """Pins of pyproject.toml, failing on any requirement that is not exact."""
    return parse_pins(pyproject_requirements(), "pyproject.toml")


def environment_yml() -> dict:
    with open(REPO_ROOT / "environment.yml") as f:
        return yaml.safe_load(f)


def environment_pins() -> dict[str, str]:
    """Pins of the `pip:` section of environment.yml, skipping pip options such as `-e .`."""
    pip_sections = [d["pip"] for d in environment_yml()["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one `pip:` section"
    requirements = [r for r in pip_sections[0] if not r.startswith("-")]
    return parse_pins(requirements, "environment.yml")


def test_torch_pin_is_exact_release():
    # A looser torch pin resolves to the multi-GB CUDA build on PyPI.
    assert pyproject_pins()["torch"] == "2.13.0"


def test_environment_yml_pins_match_pyproject():
    from_pyproject, from_conda = pyproject_pins(), environment_pins()
    only_pyproject = sorted(from_pyproject.keys() - from_conda.keys())
    only_conda = sorted(from_conda.keys() - from_pyproject.keys())
    assert not only_pyproject and not only_conda, f"pyproject only: {only_pyproject}; yml only: {only_conda}"
    differing = {n: (v, from_conda[n]) for n, v in from_pyproject.items() if from_conda[n] != v}
    assert not differing, f"versions differ (pyproject, environment.yml): {differing}"


def test_environment_yml_python_matches_requires_python():
    requires = pyproject()["project"]["requires-python"]
    assert requires == ">=3.11,<3.12"
    assert "python=3.11" in environment_yml()["dependencies"]


@pytest.mark.parametrize("requirement", pyproject_requirements())
def test_installed_version_matches_pin(requirement: str):
    ((name, pinned),) = parse_pins([requirement], "pyproject.toml").items()
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{name}=={pinned} is pinned but not installed; run `make setup`")
    release, _, local = installed.partition("+")
    assert release == pinned, f"{name}: installed {installed}, pinned {pinned}"
    if local:
        assert local in ALLOWED_LOCAL_SUFFIX.get(name, set()), f"{name}: unexpected local version {installed}"


def test_ci_script_runs_make_test():
    script = REPO_ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK), ".ci/run must be executable"
    commands = [line.strip() for line in script.read_text().splitlines()]
    commands = [c for c in commands if c and not c.startswith("#")]
    assert "set -euo pipefail" in commands
    assert "make test" in commands, f".ci/run must invoke `make test`; it runs {commands}"


def readme() -> str:
    return (REPO_ROOT / "README.md").read_text()


def test_readme_opens_with_study_and_test_commands():
    head = "\n".join(readme().splitlines()[:README_HEAD_LINES])
    for command in ("make study", "make test"):
        assert command in head, f"README's first {README_HEAD_LINES} lines must show `{command}`"


def test_readme_test_command_is_make_test():
    sections = re.split(r"^## ", readme(), flags=re.MULTILINE)
    tests = [s for s in sections if s.splitlines()[0].strip() == "Tests"]
    assert len(tests) == 1, "README needs exactly one `## Tests` section"
    code_blocks = re.findall(r"^```[a-z]*\n(.*?)^```", tests[0], flags=re.MULTILINE | re.DOTALL)
    commands = [line.strip() for block in code_blocks for line in block.splitlines() if line.strip()]
    assert commands == ["make test"], f"README's test command must be `make test`, found {commands}"
