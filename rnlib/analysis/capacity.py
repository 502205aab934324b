"""Capacity from its records: bits per parameter with intervals, the figure, convergence and the verdict.

Reads what ``rnlib.training.capacity_search`` wrote (records, and the run's convergence checks); never trains
and imports neither torch nor training. Every "A stores more than B" goes through the comparison rule
(``tables.compare``: log10 ratio paired by seed, 95% t-interval, Holm), protocol §6 and §8.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rnlib.analysis.plots import palette
from rnlib.analysis.stats import interval
from rnlib.analysis.tables import claim, compare
from rnlib.core.catalog import CAPACITY_KINDS as KINDS

CLAIMED_RATIO = 168_327  # the original headline: "stores 168,327× more information per parameter"
COVER_BITS = 2.0  # Cover 1965: capacity of one linear threshold unit, 2 bits (points) per weight
METRIC = "bits_per_param"  # compared on log10, like an MSE (rnlib.analysis.stats.LOG_METRICS)


def of_kind(records: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The records of one kind of target (``binary`` or ``real``)."""
    return records[records["task"] == f"capacity_{kind}"]


def capacity_stats(records: pd.DataFrame) -> pd.DataFrame:
    """Per (task, neuron, budget): parameters, bits per parameter's geometric mean with its 95% interval over
    seeds (``low``, ``high``), min, max, seeds, and whether the budget's N is a lower bound."""
    rows = []
    for (task, neuron, budget), g in records.groupby(["task", "neuron", "budget"], sort=False):
        mean, low, high = interval(g[METRIC], METRIC)
        bound = bool(g["lower_bound"].astype(bool).any()) if "lower_bound" in g else False
        rows.append({"task": task, "neuron": neuron, "budget": budget, "params": g["params"].mean(),
                     "mean": mean, "low": low, "high": high, "min": g[METRIC].min(), "max": g[METRIC].max(),
                     "n": len(g), "lower_bound": bound})  # fmt: skip
    columns = ["task", "neuron", "budget", "params", "mean", "low", "high", "min", "max", "n", "lower_bound"]
    return pd.DataFrame(rows, columns=columns)


def as_compare_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Capacity records as comparison rows, one "task" per budget: ``compare`` pairs each budget's seeds."""
    return records.assign(
        task=records["budget"].astype(int).astype(str), model=records["neuron"], metric=METRIC,
        value=records[METRIC], diverged=False,
    )  # fmt: skip


def ratios(records: pd.DataFrame, model: str = "singlu", baseline: str = "vanilla") -> pd.DataFrame:
    """Per budget, ``model``'s bits per parameter over ``baseline``'s: the geometric-mean ratio of the
    paired seeds and its 95% interval (10^ of the paired log10 difference's), with the rule's outcome."""
    c = compare(as_compare_rows(records), model, baseline)
    return c.assign(
        budget=c["task"].astype(int),
        ratio=10 ** c["diff"],
        ratio_low=10 ** c["low"],
        ratio_high=10 ** c["high"],
    )


def ratio_text(r: pd.Series | object) -> str:
    """``×1.71 [1.52, 1.93]`` from a ``ratios`` row."""
    ci = f" [{r.ratio_low:.2f}, {r.ratio_high:.2f}]" if math.isfinite(r.ratio_low) else ""
    return f"×{r.ratio:.2f}{ci}"


def capacity_table(records: pd.DataFrame, kind: str = "binary") -> pd.DataFrame:
    """Neuron × budget: ``mean [95% interval] (n)`` bits (binary) or points (real) per parameter; ``≥`` marks
    a lower bound (a convergence check moved it by ≥ 10%), ★ the most at a budget when it is decided more
    than every other neuron's by the comparison rule."""
    rows = of_kind(records, kind)
    stats = capacity_stats(rows)
    best = set()
    for budget, g in stats.groupby("budget"):
        top = g.loc[g["mean"].idxmax(), "neuron"]
        others = [n for n in g["neuron"] if n != top]
        here = as_compare_rows(rows[rows["budget"] == budget])
        if others and all((compare(here, top, o)["outcome"] == "better").all() for o in others):
            best.add((top, budget))
    stats["cell"] = [
        f"{'★ ' if (r.neuron, r.budget) in best else ''}{'≥ ' if r.lower_bound else ''}{r.mean:.2f}"
        + (f" [{r.low:.2f}, {r.high:.2f}]" if math.isfinite(r.low) else "")
        + f" (n={r.n})"
        for r in stats.itertuples()
    ]
    table = stats.pivot(index="neuron", columns="budget", values="cell")
    table = table.loc[list(dict.fromkeys(stats["neuron"]))]
    table.columns = [f"{b:,} params" for b in table.columns]
    return table


def bars(centre: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    """``errorbar``'s ``yerr`` (2, n) from an interval; NaN bounds (one seed) draw no bar."""
    return np.nan_to_num(np.vstack([centre - low, high - centre]).astype(float))


def capacity_figure(records: pd.DataFrame, model: str = "singlu", baseline: str = "vanilla") -> Figure:
    """Per kind: bits (points) per parameter against parameters, a line per neuron through its geometric
    means with 95% intervals and every seed as a dot, hollow markers for lower bounds; then ``model`` over
    ``baseline`` per budget with its paired 95% interval, against 1× and the original's claimed ratio."""
    kinds = [k for k in KINDS if len(of_kind(records, k))]
    fig, axes = plt.subplots(
        1, len(kinds) + 1, figsize=(5.2 * (len(kinds) + 1), 4.2), squeeze=False, layout="constrained"
    )
    axes = axes[0]
    neurons = list(dict.fromkeys(records["neuron"]))
    colors = palette(neurons)
    for ax, kind in zip(axes, kinds, strict=False):
        rows = of_kind(records, kind)
        stats = capacity_stats(rows)
        for neuron in neurons:
            s, r = stats[stats["neuron"] == neuron], rows[rows["neuron"] == neuron]
            if s.empty:
                continue
            ax.errorbar(s["params"], s["mean"], yerr=bars(s["mean"], s["low"], s["high"]), fmt="-",
                        color=colors[neuron], label=neuron, lw=1.5, capsize=2)  # fmt: skip
            fill = [("white" if bound else colors[neuron]) for bound in s["lower_bound"]]
            ax.scatter(s["params"], s["mean"], s=28, zorder=3, edgecolors=colors[neuron], facecolors=fill)
            ax.scatter(r["params"], r[METRIC], color=colors[neuron], s=8, alpha=0.4)
        if kind == "binary":
            ax.axhline(COVER_BITS, color="k", ls="--", lw=1, label="2 bits/param (Cover; Allen-Zhu & Li)")
            ax.set(ylabel="bits per parameter (points fitted ÷ params)", title="random binary labels")
        else:
            ax.axhline(1.0, color="k", ls=":", lw=1, label="1 point/param (N equations, P unknowns)")
            ax.set(ylabel="points per parameter", title="random real targets (MSE ≤ tol·Var y)")
        budgets = sorted(rows["budget"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [f"{b:,}" for b in budgets], minor=False)
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.set_xlabel("parameters (hollow: a lower bound)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[-1]
    r = ratios(of_kind(records, kinds[0]), model, baseline) if kinds else pd.DataFrame()
    if len(r):
        ax.errorbar(r["budget"], r["ratio"], yerr=bars(r["ratio"], r["ratio_low"], r["ratio_high"]),
                    fmt="-o", color=colors.get(model), capsize=3, label="measured (95%)")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(r["budget"]), [f"{b:,}" for b in r["budget"]], minor=False)
        ax.minorticks_off()
    ax.axhline(CLAIMED_RATIO, color="crimson", ls="--", lw=1, label=f"original claim: {CLAIMED_RATIO:,}×")
    ax.axhline(1.0, color="k", ls=":", lw=1, label="1× (no difference)")
    ax.set_yscale("log")
    ax.set(xlabel="parameter budget", ylabel=f"{model} ÷ {baseline}, bits per parameter",
           title=f"{kinds[0] if kinds else ''}: {model} over {baseline}")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    plt.close(fig)  # why: the notebook shows the returned figure once (the rnlib.analysis.plots convention)
    return fig


def convergence_table(checks: pd.DataFrame) -> pd.DataFrame:
    """Neuron × budget: the chosen lr and ``converged`` or what fitted ⌈1.1·N⌉ points on the first seed (2×
    the ceiling, the lr a grid step lower or higher), which makes that budget's N a lower bound."""
    cells = checks.assign(
        cell=[f"lr {r.lr:g}: " + (r.why if r.lower_bound else "converged") for r in checks.itertuples()]
    )
    table = cells.pivot_table(index=["kind", "neuron"], columns="budget", values="cell", aggfunc="first")
    table = table.reindex(list(dict.fromkeys(zip(checks["kind"], checks["neuron"], strict=True))))
    table.columns = [f"{b:,} params" for b in table.columns]
    return table


def convergence_line(checks: pd.DataFrame) -> str:
    """One sentence: how many (neuron, budget) measurements passed every check, and which did not."""
    bound = checks[checks["lower_bound"].astype(bool)]
    which = "; ".join(f"{r.neuron} at {r.budget:,} ({r.why})" for r in bound.itertuples())
    return (
        f"{len(checks) - len(bound)} of {len(checks)} (neuron, budget) measurements pass every convergence "
        f"check: neither twice the step ceiling nor a learning rate one grid step either side fits 10% more "
        f"points. " + (f"Reported as lower bounds: {which}." if len(bound) else "None is a lower bound.")
    )


def selection_table(checks: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, neuron): points fitted on the selection seed at each lr of the grid, and the lr chosen."""
    chosen = checks[checks["points_by_lr"].fillna("").ne("")]
    rows = []
    for r in chosen.itertuples():
        found = dict(item.split(":") for item in r.points_by_lr.split())
        rows.append({"kind": r.kind, "neuron": r.neuron, "budget": r.budget,
                     **{f"lr {k}": int(v) for k, v in found.items()}, "chosen lr": f"{r.lr:g}"})  # fmt: skip
    return pd.DataFrame(rows).set_index(["kind", "neuron"]) if rows else pd.DataFrame()


def ceiling_table(longer: pd.DataFrame, model: str = "singlu", baseline: str = "vanilla") -> pd.DataFrame:
    """Per step ceiling (``capacity_search.longer_training``): each neuron's bits per parameter (geometric
    mean over seeds) and ``model`` over ``baseline`` with its paired 95% interval and the rule's outcome."""
    rows = []
    for ceiling, g in longer.groupby("ceiling", sort=True):
        row = {"ceiling": int(ceiling)}
        for neuron, h in g.groupby("neuron", sort=False):
            row[neuron] = round(interval(h[METRIC], METRIC)[0], 3)
        r = ratios(g, model, baseline)
        if len(r):
            row[f"{model} ÷ {baseline}"] = ratio_text(r.iloc[0])
            row["outcome"] = r["outcome"].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows).set_index("ceiling")


def capacity_verdict(records: pd.DataFrame, baseline: str = "vanilla", kind: str = "binary") -> str:
    """Does each neuron store more bits per parameter than ``baseline``? Each budget is one comparison by the
    paired rule (log10 ratio, paired by seed, 95% t-interval), pooled over budgets with Holm."""
    rows = of_kind(records, kind)
    unit = "bits" if kind == "binary" else "points"
    if rows[rows["neuron"] == baseline].empty:
        return f"no {baseline} records for {kind} targets: nothing to compare with."
    b = capacity_stats(rows[rows["neuron"] == baseline])
    text = [f"{kind} targets: {baseline} stores {b['mean'].min():.2f} to {b['mean'].max():.2f} {unit}/param "
            "across budgets (geometric means over seeds)."]  # fmt: skip
    verdicts = {}
    for neuron in dict.fromkeys(rows.loc[rows["neuron"] != baseline, "neuron"]):
        r = ratios(rows, neuron, baseline)
        verdicts[neuron] = claim(r).verdict
        each = ", ".join(f"{ratio_text(x)} at {x.budget:,}" for x in r.itertuples())
        text.append(f"{neuron} against {baseline}: **{verdicts[neuron]}** ({claim(r).text()}); {each}.")
    more = [n for n, v in verdicts.items() if v == "supported"]
    bound = rows[rows["lower_bound"].astype(bool)] if "lower_bound" in rows else rows.iloc[:0]
    caveat = (
        f" {bound.groupby(['neuron', 'budget']).ngroups} (neuron, budget) measurements are lower bounds "
        "(a convergence check fitted 10% more), so a ratio involving one can be off either way."
        if len(bound)
        else " Every measurement passed the convergence checks."
    )
    text.append(
        f"Verdict: {len(more)} of {len(verdicts)} neurons store more {unit} per parameter than {baseline} "
        f"by the paired rule ({', '.join(more) or 'none'}); the original claimed {CLAIMED_RATIO:,}×.{caveat}"
    )
    return "\n".join(text)


def trend_line(records: pd.DataFrame, kind: str = "binary", falls: float = 0.8) -> str:
    """Is each neuron's curve flat? Its geometric mean at the largest budget over the smallest; a curve
    that falls below ``falls`` is read with its convergence checks: lower bounds at the larger budgets mean
    under-training, converged ones a real decline."""
    stats = capacity_stats(of_kind(records, kind))
    parts, falling = [], []
    for neuron, s in stats.groupby("neuron", sort=False):
        s = s.sort_values("budget")
        if len(s) < 2:
            continue
        change = s["mean"].iloc[-1] / s["mean"].iloc[0]
        parts.append((s["budget"].iloc[0], s["budget"].iloc[-1], f"{neuron} ×{change:.2f}"))
        if change < falls:
            bound = s.loc[s["lower_bound"], "budget"].tolist()
            falling.append(
                f"{neuron} falls (a lower bound at {', '.join(f'{b:,}' for b in bound)}: more training "
                "fits more there)"
                if bound
                else f"{neuron} falls although every budget passed the checks"
            )
    if not parts:
        return "one budget only: no trend."
    ranges = {}  # (first, last) budget -> the neurons measured over that range, in order
    for first, last, text in parts:
        ranges.setdefault((first, last), []).append(text)
    change = "; ".join(f"from {a:,} to {b:,} parameters, bits per parameter change by " + ", ".join(t)
                       for (a, b), t in ranges.items())  # fmt: skip
    return (
        change[0].upper() + change[1:] + ". "
        + ("; ".join(falling) + "." if falling else f"No curve falls below ×{falls:g}: roughly flat, as a "
           "well-trained network's should be (protocol §8).")
    )  # fmt: skip
