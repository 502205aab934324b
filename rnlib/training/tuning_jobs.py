"""The tuning track's trainings (docs/protocol.md §9) as ``Study`` variants: each a cached training like any
other, so a rerun costs nothing and the runner's program pool schedules them.

A starting grid comes from ``rnlib.analysis.tuning.plan`` (neuron -> settings ``(lr, ω)``, ω None for a
neuron without one), each next trial from ``rnlib.analysis.tuning.extension`` and a choice from
``rnlib.analysis.tuning.select`` (rows of neuron, task, lr, omega); this module turns them into what
``Study.run`` and ``Study.run_jobs`` train, and runs the search round by round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from rnlib.core.tasks import VALIDATION
from rnlib.records import TUNING_ROLES
from rnlib.training.study import Job, Study, Variant, resolve_tasks


def tunable_tasks(tasks: Sequence[str] = ()) -> list[str]:
    """The named tasks (default: all) that have a validation split; naming one without it is an error."""
    if not tasks:
        return [t for t in resolve_tasks(()) if t in VALIDATION]
    untunable = [t for t in resolve_tasks(tasks) if t not in VALIDATION]
    if untunable:
        raise ValueError(f"task(s) {', '.join(untunable)} have no validation split and cannot be tuned "
                         f"(protocol §4); tunable: {', '.join(VALIDATION)}")  # fmt: skip
    return list(tasks)


Grids = Mapping[str, Sequence[tuple[float, float | None]]]  # neuron -> its starting grid of (lr, ω)


def setting_variant(neuron: str, lr: float, omega: float | None, label: str) -> Variant:
    """``neuron`` at peak learning rate ``lr`` and ``omega`` (None: the study's ω)."""
    return Variant(neuron, omega=None if omega is None else float(omega), lr=float(lr), label=label)


def trial_variant(neuron: str, lr: float, omega: float | None) -> Variant:
    """One trial, labelled ``singlu lr=0.003 ω=3`` (``vanilla lr=0.0018`` without ω)."""
    label = f"{neuron} lr={lr:g}" + ("" if omega is None else f" ω={omega:g}")
    return setting_variant(neuron, lr, omega, label)


def trial_variants(grids: Grids) -> list[Variant]:
    """Every trial of every neuron's grid, in grid order."""
    return [trial_variant(n, lr, w) for n, grid in grids.items() for lr, w in grid]


def search(
    study: Study,
    grids: Grids,
    seeds: Sequence[int],
    extend: int,
    place: Callable[[pd.DataFrame, Grids], pd.DataFrame],
) -> pd.DataFrame:
    """Every trial record of the search (docs/protocol.md §9), on ``seeds``: each neuron's starting grid on
    every task of ``study``, then ``extend`` rounds of one more trial per (neuron, task), placed by ``place``
    (``rnlib.analysis.tuning.extension``: the trials so far and the grids -> rows of neuron, task, lr, omega).
    Every (neuron, task) gets its grid's trials plus ``extend``: equal for every neuron when the grids are."""
    if extend < 0:
        raise ValueError(f"extend must be ≥ 0 trials per (neuron, task), got {extend}")
    tag = {"role": TUNING_ROLES[0]}
    frames = [study.run(trial_variants(grids), seeds=seeds, tags=tag).records]
    for _ in range(extend):
        nxt = place(pd.concat(frames, ignore_index=True), grids)
        jobs = [(trial_variant(r.neuron, r.lr, None if pd.isna(r.omega) else r.omega), r.task)
                for r in nxt.itertuples()]  # fmt: skip
        frames.append(study.run_jobs(jobs, seeds=seeds, tags=tag).records)
    return pd.concat(frames, ignore_index=True)


def chosen_jobs(chosen: pd.DataFrame) -> list[Job]:
    """The chosen setting of each (neuron, task) row as a (variant, task) program labelled by the neuron."""
    return [
        (setting_variant(c.neuron, c.lr, None if pd.isna(c.omega) else c.omega, c.neuron), c.task)
        for c in chosen.itertuples()
    ]


def untuned_variants(neurons: Sequence[str]) -> list[Variant]:
    """Each neuron under the study's own lr and ω (the untuned protocol), labelled ``singlu untuned``."""
    return [Variant(n, label=f"{n} untuned") for n in neurons]
