"""The package's layers: each module imports only from its own layer or those below, and analysis never
needs torch (rnlib/__init__.py lists the layers)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from rnlib.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "rnlib"
LAYERS = ("base", "core", "training", "analysis", "batch")  # each may import the ones before it
TORCH_FREE = (  # what reads records, summarises, renders the README, or validates a profile
    "rnlib.records", "rnlib.analysis.tables", "rnlib.analysis.summary", "rnlib.analysis.capacity",
    "rnlib.analysis.plots", "rnlib.analysis.report", "rnlib.core.catalog", "rnlib.batch.profiles",
    "rnlib.batch.cli", "rnlib.batch.parameters", "rnlib.analysis.html", "rnlib.analysis.tuning",
)  # fmt: skip


def module_name(path: Path) -> str:
    """``rnlib/training/trainer.py`` -> ``rnlib.training.trainer``."""
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    """The layer a module belongs to: its subpackage, or ``base`` for the package root's own modules."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "base"


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            continue
        yield node
        yield from runtime_nodes(node)


def imported(path: Path) -> set[str]:
    """Every ``rnlib`` module that ``path`` imports at run time, at any depth (``from rnlib.x import y``
    counts x and, where it is a module, x.y)."""
    names = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnlib"):
            names.add(node.module)
            folder = PACKAGE.parent / node.module.replace(".", "/")
            names |= {f"{node.module}.{a.name}" for a in node.names if (folder / f"{a.name}.py").exists()}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("rnlib")}
    return names


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down_the_layers(path: Path) -> None:
    name = module_name(path)
    own = LAYERS.index(layer(name))
    upward = sorted(m for m in imported(path) if LAYERS.index(layer(m)) > own)
    if name == "rnlib.__main__":
        upward.remove("rnlib.batch.cli")  # the entry point hands over to the command line
    assert not upward, f"{name} ({LAYERS[own]}) imports a higher layer: {', '.join(upward)}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "analysis").glob("*.py")), ids=lambda p: module_name(p))
def test_analysis_never_imports_training(path: Path) -> None:
    """Analysis reads records: it is handed what training computed and never trains or imports it."""
    training = sorted(m for m in imported(path) if layer(m) == "training")
    assert not training, f"{module_name(path)} imports {', '.join(training)}"


def test_every_module_sits_in_a_layer() -> None:
    for path in MODULES:
        assert layer(module_name(path)) in LAYERS, path


@pytest.mark.slow
def test_reading_records_summarising_and_rendering_never_import_torch() -> None:
    """In a fresh interpreter: the torch-free modules, a summary of the golden records, the README's rendered
    results from the committed run and a profile's job ids leave torch unimported."""
    script = f"""
import importlib, sys
import pandas as pd
for name in {TORCH_FREE!r}:
    importlib.import_module(name)
from rnlib.analysis import report, summary
raw = pd.read_csv("tests/golden/records.csv.gz")
records = summary.deduplicate(raw[~summary.is_tuned(raw)])  # the tuning track apart, as summarize reads it
summary.after_tuning(raw[summary.is_tuned(raw)])
summary.all_findings(records), summary.main_table(records), summary.regime_map(records)
report.render_results("executed/default")
from rnlib.batch.profiles import expand_jobs, load_profile
expand_jobs(load_profile("parameters/smoke.run.yaml"))  # job ids: the declared versions, never a compiler
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]


def test_public_modules_resolve_by_short_name_after_import_rnlib() -> None:
    """``import rnlib; rnlib.neurons`` works (lazily), for every module named in rnlib._MODULES."""
    import rnlib

    for short, full in rnlib._MODULES.items():
        assert getattr(rnlib, short).__name__ == full
    assert "singlu" in rnlib.neurons.NEURONS and rnlib.Study.__module__ == "rnlib.training.study"
