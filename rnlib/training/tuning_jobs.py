"""The tuning track's trainings (docs/protocol.md §9) as ``Study`` variants: each a cached training like any
other, so a rerun costs nothing and the runner's program pool schedules them.

A grid comes from ``rnlib.analysis.tuning.plan`` (neuron -> settings ``(lr, ω)``, ω None for a neuron
without one), a choice from ``rnlib.analysis.tuning.select`` (rows of neuron, task, lr, omega); this module
only turns them into what ``Study.run`` and ``Study.run_jobs`` train.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from rnlib.core.tasks import VALIDATION
from rnlib.training.study import Job, Variant, resolve_tasks


def tunable_tasks(tasks: Sequence[str] = ()) -> list[str]:
    """The named tasks (default: all) that have a validation split; naming one without it is an error."""
    if not tasks:
        return [t for t in resolve_tasks(()) if t in VALIDATION]
    untunable = [t for t in resolve_tasks(tasks) if t not in VALIDATION]
    if untunable:
        raise ValueError(f"task(s) {', '.join(untunable)} have no validation split and cannot be tuned "
                         f"(protocol §4); tunable: {', '.join(VALIDATION)}")  # fmt: skip
    return list(tasks)


def setting_variant(neuron: str, lr: float, omega: float | None, label: str) -> Variant:
    """``neuron`` at peak learning rate ``lr`` and ``omega`` (None: the study's ω)."""
    return Variant(neuron, omega=None if omega is None else float(omega), lr=float(lr), label=label)


def trial_variants(grids: Mapping[str, Sequence[tuple[float, float | None]]]) -> list[Variant]:
    """Every trial of every neuron, in grid order, labelled ``singlu lr=0.003 ω=3``."""
    return [
        setting_variant(n, lr, w, f"{n} lr={lr:g}" + ("" if w is None else f" ω={w:g}"))
        for n, grid in grids.items()
        for lr, w in grid
    ]


def chosen_jobs(chosen: pd.DataFrame) -> list[Job]:
    """The chosen setting of each (neuron, task) row as a (variant, task) program labelled by the neuron."""
    return [
        (setting_variant(c.neuron, c.lr, None if pd.isna(c.omega) else c.omega, c.neuron), c.task)
        for c in chosen.itertuples()
    ]


def untuned_variants(neurons: Sequence[str]) -> list[Variant]:
    """Each neuron under the study's own lr and ω (the untuned protocol), labelled ``singlu untuned``."""
    return [Variant(n, label=f"{n} untuned") for n in neurons]
