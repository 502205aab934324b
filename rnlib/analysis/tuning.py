"""The tuning track (docs/protocol.md §9): the trials each neuron gets, the setting its validation score
chooses, and what the choice changed, from the tuned notebook's records. Pure pandas; no torch, no training.

Every (neuron, task) gets the same number of trials: a starting grid (learning rate × ω for a neuron with ω,
``catalog.Neuron.uses_omega``; a finer learning-rate grid for the others), then trials placed one at a time
by ``next_setting``, beyond the best setting where it sits on an edge of what was tried. A trial is scored on
the **validation** split (``val_value``) over the tuning seeds; its test value is kept, for the agreement
check only, and never read by ``select`` or ``next_setting``. The tuned notebook's records carry ``role``
(``rnlib.records.TUNING_ROLES``): ``trial``, ``tuned`` (the chosen setting on the final seeds) or ``untuned``
(the study's lr and ω on the same seeds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from rnlib.analysis.stats import centre, transform
from rnlib.analysis.tables import claim, compare, compare_many
from rnlib.core.catalog import NEURONS, lower_is_better
from rnlib.records import TUNING_ROLES

CORE = ("vanilla", "singlu", "swiglu", "siren", "v1_rich", "v10_free_phase", "v15_dual_phase")  # protocol §9
TRIAL, TUNED, UNTUNED = TUNING_ROLES


class Setting(NamedTuple):
    """One trial: a peak learning rate and ω (None for a neuron without ω, which keeps the study's)."""

    lr: float
    omega: float | None

    def text(self) -> str:
        """``lr 0.003, ω 3`` or ``lr 0.0018``."""
        return f"lr {self.lr:g}" + ("" if self.omega is None else f", ω {self.omega:g}")


def tunes_omega(neuron: str) -> bool:
    """Whether ``neuron`` has an ω to tune (every periodic neuron; not vanilla or the GLU controls)."""
    if neuron not in NEURONS:
        raise KeyError(f"unknown neuron {neuron!r}; valid: {', '.join(NEURONS)}")
    return NEURONS[neuron].uses_omega


def trial_grid(
    neuron: str, lrs: Sequence[float], omegas: Sequence[float], plain_lrs: Sequence[float]
) -> list[Setting]:
    """The settings ``neuron`` tries, in grid order: ``lrs`` × ``omegas`` (lr major) for a neuron with ω,
    ``plain_lrs`` for the others."""
    grid = (
        [Setting(float(lr), float(w)) for lr in lrs for w in omegas]
        if tunes_omega(neuron)
        else [Setting(float(lr), None) for lr in plain_lrs]
    )
    values = [v for s in grid for v in (s.lr, s.omega) if v is not None]
    if not grid or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{neuron}: a trial grid needs positive learning rates and ω, got {grid}")
    if len(set(grid)) < len(grid):
        raise ValueError(f"{neuron}: the trial grid repeats a setting: {[s.text() for s in grid]}")
    return grid


def plan(
    neurons: Sequence[str], lrs: Sequence[float], omegas: Sequence[float], plain_lrs: Sequence[float]
) -> dict[str, list[Setting]]:
    """Every neuron's trial grid; unequal trial counts raise one line naming who gets how many."""
    grids = {n: trial_grid(n, lrs, omegas, plain_lrs) for n in neurons}
    sizes = {n: len(g) for n, g in grids.items()}
    if len(set(sizes.values())) > 1:
        counts = ", ".join(f"{n} {k}" for n, k in sizes.items())
        raise ValueError(
            f"unequal trial counts ({counts}): len(lrs) × len(omegas) = {len(lrs)} × {len(omegas)} for "
            f"neurons with ω must equal len(plain_lrs) = {len(plain_lrs)} (docs/protocol.md §9)"
        )
    return grids


def trial_setting(neuron: str, lr: float, omega: float | None) -> Setting:
    """A trial record's setting: ω only for a neuron that tunes it (the others' records carry the study's)."""
    exact = lambda v: float(f"{v:.12g}")  # noqa: E731  (the float a grid wrote, whatever CSV did to it)
    return Setting(exact(lr), exact(omega) if tunes_omega(neuron) else None)


def nice(x: float) -> float:
    """``x`` to two significant digits, the precision the grids are written in (0.09, 0.017, 33)."""
    return float(f"{x:.2g}")


def outward(values: Sequence[float]) -> tuple[float, float]:
    """One step below and above a grid axis, as factors: the ratios of its two lowest and of its two highest
    values ((1, 1) for an axis of one value, which is then not searched)."""
    v = sorted(set(values))
    return (v[1] / v[0], v[-1] / v[-2]) if len(v) > 1 else (1.0, 1.0)


def trial_rows(records: pd.DataFrame) -> pd.DataFrame:
    """The trial records of ``records`` (all of them when they carry no ``role``)."""
    return records[records["role"].eq(TRIAL)] if "role" in records else records


def tried_settings(scores: pd.DataFrame) -> list[Setting]:
    """One (neuron, task)'s settings in the order of its ``trial_scores`` rows (ω None without one)."""
    return [Setting(r.lr, None if pd.isna(r.omega) else r.omega) for r in scores.itertuples()]


def trial_scores(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (neuron, task, setting), numbered in the order tried (``position``): the centre over the tuning
    seeds of the validation metric (``val``) and, for the agreement check only, of the test metric (``test``).
    A setting with a diverged or unscored seed scores NaN on that split: it is never preferred to one that
    finished."""
    t = trial_rows(trials)
    settings = [trial_setting(r.neuron, r.lr, r.omega) for r in t[["neuron", "lr", "omega"]].itertuples()]
    t = t.assign(_setting=settings)  # (lr, ω) as read back from CSV: equal floats, so they group
    rows, tried = [], {}
    for (neuron, task, setting), g in t.groupby(["neuron", "task", "_setting"], sort=False):
        metric, position = g["metric"].iloc[0], tried.setdefault((neuron, task), 0)
        tried[(neuron, task)] += 1
        scores = {}
        for split, column in (("val", "val_value"), ("test", "value")):
            v = pd.to_numeric(g[column], errors="coerce")
            scores[split] = centre(v, metric) if np.isfinite(v).all() else math.nan
        rows.append({"neuron": neuron, "task": task, "metric": metric, "position": position,
                     "lr": setting.lr, "omega": setting.omega, "setting": setting.text(), **scores,
                     "seeds": len(g)})  # fmt: skip
    columns = ["neuron", "task", "metric", "position", "lr", "omega", "setting", "val", "test", "seeds"]
    return pd.DataFrame(rows, columns=columns)


def best(scores: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per (neuron, task) the row of ``scores`` best on ``column`` (lower MSE, higher accuracy), in the order
    of ``scores``; NaN last, ties to the first tried."""
    key = scores[column].where(scores["metric"].map(lower_is_better), -scores[column])
    ranked = scores.assign(_k=key).sort_values(["_k", "position"], na_position="last", kind="stable")
    return ranked.drop_duplicates(["neuron", "task"]).drop(columns="_k").sort_index()


def blind(trials: pd.DataFrame) -> pd.DataFrame:
    """``trials`` without a single test value: what every choice of the search is made from."""
    return trials.drop(columns=["value", "train_value", "id_value"], errors="ignore").assign(value=np.nan)


def select(trials: pd.DataFrame) -> pd.DataFrame:
    """The chosen setting per (neuron, task): the best validation centre over the tuning seeds, among every
    setting tried (``trials``: how many). Test values are dropped before choosing, so nothing of the test
    split can move a choice."""
    scores = trial_scores(blind(trials))
    chosen = best(scores, "val").drop(columns="test").reset_index(drop=True)
    counts = scores.groupby(["neuron", "task"], sort=False).size()
    return chosen.assign(trials=[int(counts[(r.neuron, r.task)]) for r in chosen.itertuples()])


def chosen_table(chosen: pd.DataFrame) -> pd.DataFrame:
    """Neuron × task: the chosen setting as text."""
    table = chosen.pivot(index="neuron", columns="task", values="setting")
    return table.reindex(
        index=list(dict.fromkeys(chosen["neuron"])), columns=list(dict.fromkeys(chosen["task"]))
    )


def on_grid(trials: pd.DataFrame, grids: Mapping[str, Sequence[Setting]]) -> pd.DataFrame:
    """The trials of the starting grids only: what the search knew before it went beyond them."""
    t = trial_rows(trials)
    inside = [trial_setting(r.neuron, r.lr, r.omega) in set(grids.get(r.neuron, ()))
              for r in t[["neuron", "lr", "omega"]].itertuples()]  # fmt: skip
    return t[inside]


def line(setting: Setting, tried: Sequence[Setting], axis: str) -> list[float]:
    """The values of ``axis`` tried along ``setting``'s line (the other axis held at its value), sorted."""
    other = "omega" if axis == "lr" else "lr"
    return sorted({getattr(s, axis) for s in tried if getattr(s, other) == getattr(setting, other)})


def axes(setting: Setting) -> list[str]:
    """The axes a setting is searched on: lr, and ω where the neuron has one."""
    return ["lr"] if setting.omega is None else ["lr", "omega"]


def next_setting(grid: Sequence[Setting], scores: pd.DataFrame) -> Setting:
    """Where one (neuron, task)'s search tries next, from its scores so far (``trial_scores`` rows, validation
    only): one step beyond the best setting where it is the lowest or highest value tried along an axis (its
    line: lr first, then ω; steps from ``outward`` of ``grid``, upward first); where the best is inside on
    every axis, halfway (geometrically) to its better neighbour along lr, then ω, then to the worse one."""
    tried = tried_settings(scores)
    b = tried[int(best(scores.reset_index(drop=True), "val").index[0])]
    sign = 1 if lower_is_better(scores["metric"].iloc[0]) else -1
    val = dict(zip(tried, scores["val"], strict=True))
    rank = lambda s: (math.isnan(val[s]), sign * val[s])  # noqa: E731  (as ``best`` ranks: NaN last)
    beyond, halfway = [], []
    for axis in axes(b):
        down, up = outward([getattr(s, axis) for s in grid])
        values, here = line(b, tried, axis), getattr(b, axis)
        if up > 1 and here == values[-1]:
            beyond.append(b._replace(**{axis: nice(here * up)}))
        if down > 1 and here == values[0]:
            beyond.append(b._replace(**{axis: nice(here / down)}))
        i = values.index(here)
        beside = values[max(i - 1, 0) : i] + values[i + 1 : i + 2]  # its neighbours along the line
        neighbours = sorted((b._replace(**{axis: v}) for v in beside), key=rank)
        halfway.append([b._replace(**{axis: nice(math.sqrt(here * getattr(n, axis)))}) for n in neighbours])
    ordered = beyond + [h[0] for h in halfway if h] + [h[1] for h in halfway if len(h) > 1]
    for candidate in ordered:
        if candidate not in tried:
            return candidate
    raise ValueError(f"no untried setting next to {b.text()} among {[s.text() for s in tried]}")


def extension(trials: pd.DataFrame, grids: Mapping[str, Sequence[Setting]]) -> pd.DataFrame:
    """Per (neuron, task) of ``trials``, the setting its search tries next (``next_setting``), chosen from
    validation scores only: rows of neuron, task, lr, omega."""
    scores = trial_scores(blind(trials))
    rows = [
        {"neuron": neuron, "task": task, **next_setting(grids[neuron], g)._asdict()}
        for (neuron, task), g in scores.groupby(["neuron", "task"], sort=False)
    ]
    return pd.DataFrame(rows, columns=["neuron", "task", "lr", "omega"])


def edge_hits(chosen: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per chosen setting, the edges of what its search tried that it sits on: ``edge`` lists ``lr low``,
    ``lr high``, ``ω low``, ``ω high`` (empty: a setting was tried on both sides of it along every axis).
    An edge choice may have its optimum beyond it."""
    tried = {key: tried_settings(g) for key, g in trial_scores(trials).groupby(["neuron", "task"])}
    edges = []
    for r in chosen.itertuples():
        setting, hits = trial_setting(r.neuron, r.lr, r.omega), []
        for axis, name in (("lr", "lr"), ("omega", "ω")):
            if axis not in axes(setting):
                continue
            values = line(setting, tried[(r.neuron, r.task)], axis)
            hits += [f"{name} low"] * (getattr(setting, axis) == values[0])
            hits += [f"{name} high"] * (getattr(setting, axis) == values[-1])
        edges.append(", ".join(hits))
    return chosen.assign(edge=edges)


def edge_text(edges: pd.DataFrame) -> str:
    """One sentence: how many choices sit on an edge of what was tried, and on which."""
    hit = edges[edges["edge"].ne("")]
    counts = pd.Series([e for es in hit["edge"] for e in es.split(", ")]).value_counts()
    which = ", ".join(f"{k}: {n}" for k, n in counts.items())
    return f"{len(hit)} of {len(edges)} (neuron, task) choices sit on an edge of the settings tried" + (
        f" ({which})" if len(hit) else ""
    )


def agreement(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (neuron, task), how well validation ranks the trials as test does, on the tuning seeds: Spearman's
    ρ between the trials' validation and test centres (on the comparison scale), whether the validation-best
    setting is also the test-best, and the test cost of choosing by validation (``regret``: Δlog10 MSE or
    points, ≥ 0). Read only after the choice: the test values never enter ``select``."""
    scores = trial_scores(trials)
    by_val, by_test = best(scores, "val"), best(scores, "test")
    rows = []
    for (neuron, task), g in scores.groupby(["neuron", "task"], sort=False):
        metric = g["metric"].iloc[0]
        ok = g[np.isfinite(g["val"]) & np.isfinite(g["test"])]
        rho = (
            float(sps.spearmanr(ok["val"], ok["test"]).statistic)
            if len(ok) > 2 and ok["val"].nunique() > 1 and ok["test"].nunique() > 1
            else math.nan
        )
        v = by_val[(by_val["neuron"] == neuron) & (by_val["task"] == task)].iloc[0]
        t = by_test[(by_test["neuron"] == neuron) & (by_test["task"] == task)].iloc[0]
        gap = float(transform([v["test"]], metric)[0] - transform([t["test"]], metric)[0])
        rows.append({"neuron": neuron, "task": task, "rho": rho, "same_best": v["position"] == t["position"],
                     "regret": abs(gap) if np.isfinite(gap) else math.nan,
                     "val_best": v["setting"], "test_best": t["setting"]})  # fmt: skip
    return pd.DataFrame(
        rows, columns=["neuron", "task", "rho", "same_best", "regret", "val_best", "test_best"]
    )


def agreement_text(agree: pd.DataFrame) -> str:
    """One sentence: how often validation's choice is also the test-best, and the median ρ per task (n/a with
    fewer than 3 distinct trials)."""
    per_task = agree.groupby("task", sort=False)["rho"].median()
    tasks = ", ".join(f"{t} {r:+.2f}" if np.isfinite(r) else f"{t} n/a" for t, r in per_task.items())
    return (
        f"validation picks the test-best setting in {int(agree['same_best'].sum())} of {len(agree)} "
        f"(neuron, task) cases; median Spearman ρ of validation vs test over the trials, per task: {tasks}"
    )


def rows_of(records: pd.DataFrame, role: str) -> pd.DataFrame:
    """The records of one role, labelled by neuron (the tuned and untuned rows of a neuron share its name)."""
    r = records[records["role"].eq(role)]
    return r.assign(model=r["neuron"])


def against(tuned: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Every tuned neuron against the tuned ``baseline`` per task (the comparison rule), and the pooled claim
    "better than ``baseline``" per neuron (Holm over its tasks): a neuron × task table of outcomes with the
    verdict as its last column."""
    cells, verdicts = {}, {}
    for model in dict.fromkeys(tuned["model"]):
        if model == baseline:
            continue
        c = compare(tuned, model, baseline)
        for r in c.itertuples():
            cells[(model, r.task)] = f"{r.outcome} ({r.diff:+.2f})"
        verdicts[model] = claim(c).verdict if len(c) else "undecided"
    table = pd.Series(cells, dtype=object).unstack().reindex(columns=list(dict.fromkeys(tuned["task"])))
    table[f"verdict: better than {baseline}"] = pd.Series(verdicts)
    table.index.name = "model"
    return table.reindex(index=[m for m in dict.fromkeys(tuned["model"]) if m in table.index])


def moved(records: pd.DataFrame) -> pd.DataFrame:
    """How far tuning moved each neuron: its tuned result against its untuned one per task, paired by seed
    (the same final seeds), as ``compare_many`` rows (model ``tuned``, baseline ``untuned``)."""
    frames = []
    for neuron in dict.fromkeys(records.loc[records["role"].eq(TUNED), "neuron"]):
        both = records[records["neuron"].eq(neuron) & records["role"].isin([TUNED, UNTUNED])]
        frames.append(compare_many(both.assign(model=both["role"]), TUNED, [UNTUNED]).assign(neuron=neuron))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def moved_table(moves: pd.DataFrame) -> pd.DataFrame:
    """Neuron × task: tuned against untuned, ``Δ`` (log10 MSE or points) and its outcome; a last column with
    the pooled verdict of "tuning helped" (Holm over the neuron's tasks)."""
    cells = {(r.neuron, r.task): f"{r.outcome} ({r.diff:+.2f})" for r in moves.itertuples()}
    table = pd.Series(cells, dtype=object).unstack()
    table = table.reindex(
        index=list(dict.fromkeys(moves["neuron"])), columns=list(dict.fromkeys(moves["task"]))
    )
    table["verdict: tuned better"] = [claim(g).verdict for _, g in moves.groupby("neuron", sort=False)]
    table.index.name = "neuron"
    return table


def check_seeds(tuning_seeds: Sequence[int], seeds: Sequence[int]) -> None:
    """Trials are scored on seeds kept apart from the final ones: an overlap, or no seed, is an error."""
    shared = sorted(set(tuning_seeds) & set(seeds))
    if not tuning_seeds or not seeds or shared:
        raise ValueError(f"tuning seeds {list(tuning_seeds)} and final seeds {list(seeds)} must both be "
                         f"given and disjoint (shared: {shared}; docs/protocol.md §9)")  # fmt: skip


def survival(records: pd.DataFrame, baselines: Sequence[str]) -> pd.DataFrame:
    """Per neuron and baseline, the verdict of "better than the baseline" (pooled over tasks, Holm) on the
    final seeds untuned and tuned, and whether tuning kept it."""
    rows = []
    for role in (UNTUNED, TUNED):
        r = rows_of(records, role)
        for baseline in baselines:
            for model in dict.fromkeys(r["model"]):
                if model != baseline:
                    rows.append({"model": model, "baseline": baseline, "role": role,
                                 "verdict": claim(compare(r, model, baseline)).verdict})  # fmt: skip
    long = pd.DataFrame(rows)
    pairs = list(dict.fromkeys(zip(long["model"], long["baseline"], strict=True)))  # in the order trained
    table = long.pivot(index=["model", "baseline"], columns="role", values="verdict")
    table = table.reindex(index=pd.MultiIndex.from_tuples(pairs), columns=[UNTUNED, TUNED])
    table = table.rename_axis(["model", "baseline"]).reset_index()
    return table.assign(kept=table[UNTUNED].eq(table[TUNED]))


def survival_verdict(table: pd.DataFrame) -> str:
    """ "The untuned verdicts survive tuning": supported when every verdict decided either way is kept,
    contradicted when one flips between supported and contradicted, mixed otherwise, undecided when none is
    decided untuned or tuned."""
    decided = {"supported", "contradicted"}
    d = table[table[UNTUNED].isin(decided) | table[TUNED].isin(decided)]
    if d.empty:
        return "undecided"
    flipped = d[UNTUNED].isin(decided) & d[TUNED].isin(decided) & d[UNTUNED].ne(d[TUNED])
    return "supported" if d["kept"].all() else "contradicted" if flipped.any() else "mixed"
