"""rnlib: do richer neurons store more per parameter than ReLU(Wx + b) at a matched budget?

The public API below is imported lazily, so the command line (``python -m rnlib``) and the batch runner's
workers start without paying for torch until they train.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {
    "NEURONS": "rnlib.neurons",
    "TASKS": "rnlib.tasks",
    "Model": "rnlib.study",
    "Study": "rnlib.study",
    "TrainConfig": "rnlib.trainer",
    "build_model": "rnlib.models",
    "count_params": "rnlib.models",
    "make_task": "rnlib.tasks",
    "train": "rnlib.trainer",
    "train_models": "rnlib.trainer",
    "width_for_budget": "rnlib.models",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rnlib' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
