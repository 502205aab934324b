"""rnlib: do richer neurons store more per parameter than ReLU(Wx + b) at a matched budget?

The package is four layers, each importing only those before it (``tests/test_layers.py`` holds them to it):

- ``rnlib.core``: what is compared: neuron and task declarations (``catalog``, torch-free), the neurons'
  math, the tasks' data, budget-matched models.
- ``rnlib.training``: the batched trainer and its fused CPU step, the result cache, ``Study`` (what a notebook
  calls), capacity search.
- ``rnlib.analysis``: records, comparisons, the summary, figures and the report. ``records``, ``summary``,
  ``capacity`` and ``report`` never import torch.
- ``rnlib.batch``: run profiles, the papermill runner and the command line (``python -m rnlib``).

The names below, and each module by its short name (``rnlib.neurons``, ``rnlib.plots``, ...), import lazily on
first use, so the command line starts without paying for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"
_EXPORTS = {
    "NEURONS": "rnlib.core.neurons",
    "TASKS": "rnlib.core.tasks",
    "Variant": "rnlib.training.study",
    "Study": "rnlib.training.study",
    "TrainConfig": "rnlib.training.trainer",
    "build_model": "rnlib.core.models",
    "count_params": "rnlib.core.models",
    "make_task": "rnlib.core.tasks",
    "train": "rnlib.training.trainer",
    "train_models": "rnlib.training.trainer",
    "width_for_budget": "rnlib.core.models",
}
_MODULES = {
    name: f"rnlib.{layer}{name}"
    for layer, names in {
        "": ("paths", "provenance", "records"),
        "core.": ("catalog", "neurons", "tasks", "models", "metrics"),
        "training.": (
            "trainer",
            "fused",
            "cache",
            "runtime",
            "diagnostics",
            "study",
            "capacity_search",
            "tuning_jobs",
        ),
        "analysis.": ("tables", "summary", "plots", "capacity", "report", "tuning"),
        "batch.": ("profiles", "runner", "cli"),
    }.items()
    for name in names
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name, or a module by its short name, on first use."""
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rnlib' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
