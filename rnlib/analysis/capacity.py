"""Capacity from its records: bits per parameter per neuron and budget, the figure, sensitivity and verdict.

Reads what ``rnlib.training.capacity_search`` wrote; never trains and imports neither torch nor training.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from rnlib.analysis.plots import palette
from rnlib.analysis.tables import claim, compare
from rnlib.core.catalog import CAPACITY_KINDS as KINDS

CLAIMED_RATIO = 168_327  # the original headline: "stores 168,327× more information per parameter"
COVER_BITS = 2.0  # Cover 1965: capacity of one linear threshold unit, 2 bits (points) per weight


def capacity_stats(records: pd.DataFrame) -> pd.DataFrame:
    """Per (task, neuron, budget): parameters, and bits per parameter's mean, std (ddof 1), min, max, n."""
    g = records.groupby(["task", "neuron", "budget"], sort=False)
    out = g.agg(
        params=("params", "mean"), mean=("bits_per_param", "mean"), std=("bits_per_param", "std"),
        low=("bits_per_param", "min"), high=("bits_per_param", "max"), n=("bits_per_param", "count"),
    ).reset_index()  # fmt: skip
    out["std"] = out["std"].fillna(0.0)
    return out


def capacity_table(records: pd.DataFrame, kind: str = "binary") -> pd.DataFrame:
    """Neuron × budget table of bits (binary) or points (real) per parameter, ``mean ± std (n)``, ★ = best."""
    stats = capacity_stats(records[records["task"] == f"capacity_{kind}"])
    best = stats.loc[stats.groupby("budget")["mean"].idxmax(), ["neuron", "budget"]]
    best = set(best.itertuples(index=False, name=None))
    stats["cell"] = [
        f"{'★ ' if (r.neuron, r.budget) in best else ''}{r.mean:.2f} ± {r.std:.2f} (n={r.n})"
        for r in stats.itertuples()
    ]
    table = stats.pivot(index="neuron", columns="budget", values="cell")
    table = table.loc[list(dict.fromkeys(stats["neuron"]))]
    table.columns = [f"{b} params" for b in table.columns]
    return table


def capacity_figure(records: pd.DataFrame) -> Figure:
    """Bits (points) per parameter vs parameters, one line per neuron with every seed as a dot, per kind."""
    kinds = [k for k in KINDS if f"capacity_{k}" in set(records["task"])]
    fig, axes = plt.subplots(
        1, len(kinds), figsize=(5.5 * len(kinds), 4.2), squeeze=False, layout="constrained"
    )
    axes = axes[0]
    neurons = list(dict.fromkeys(records["neuron"]))
    colors = palette(neurons)
    for ax, kind in zip(axes, kinds, strict=True):
        rows = records[records["task"] == f"capacity_{kind}"]
        stats = capacity_stats(rows)
        for neuron in neurons:
            s, r = stats[stats["neuron"] == neuron], rows[rows["neuron"] == neuron]
            ax.plot(s["params"], s["mean"], "-o", color=colors[neuron], label=neuron, lw=1.5, ms=4)
            ax.scatter(r["params"], r["bits_per_param"], color=colors[neuron], s=10, alpha=0.45)
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
        ax.set_xlabel("parameters (budget; dots at each model's actual count)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, handles=ax.get_lines()[-1:] if ax is not axes[0] else None)
    plt.close(fig)  # why: the notebook shows the returned figure once (the rnlib.analysis.plots convention)
    return fig


def sensitivity_table(records: pd.DataFrame, rerun: pd.DataFrame) -> pd.DataFrame:
    """Per (task, neuron, budget): bits per parameter at the base settings and the rerun, and their ratio."""
    keys = ["task", "neuron", "budget", "seed"]
    both = records.merge(rerun, on=keys, suffixes=("", "_rerun"))
    both["ratio"] = both["bits_per_param_rerun"] / both["bits_per_param"]
    g = both.groupby(keys[:3], sort=False)
    out = g.agg(
        base=("bits_per_param", "mean"), rerun=("bits_per_param_rerun", "mean"), ratio=("ratio", "mean"),
        ratio_low=("ratio", "min"), ratio_high=("ratio", "max"), n=("ratio", "count"),
    ).reset_index()  # fmt: skip
    return out.round(3)


def sensitivity_line(sensitivity: pd.DataFrame, factor: int = 2) -> str:
    """One sentence: how much the answer moves when the probes train ``factor`` × longer."""
    if sensitivity.empty:
        return "no sensitivity rerun."
    parts = []
    for task, rows in sensitivity.groupby("task", sort=False):
        parts.append(
            f"{task.removeprefix('capacity_')}: ×{rows['ratio'].mean():.2f} on average "
            f"(×{rows['ratio_low'].min():.2f} to ×{rows['ratio_high'].max():.2f} over budgets and seeds)"
        )
    neurons = ", ".join(dict.fromkeys(sensitivity["neuron"]))
    return (
        f"With {factor}× the steps, {neurons}'s points per parameter change by " + "; ".join(parts) + ". "
        "The measure is what this optimiser fits in this many steps, a lower bound on the capacity."
    )


def capacity_verdict(records: pd.DataFrame, baseline: str = "vanilla", kind: str = "binary") -> str:
    """Does each neuron store more bits per parameter than ``baseline``? Each budget is one comparison by the
    paired rule (log10 ratio, paired by seed, 95% t-interval), pooled over budgets with Holm."""
    rows = records[records["task"] == f"capacity_{kind}"]
    unit = "bits" if kind == "binary" else "points"
    if rows[rows["neuron"] == baseline].empty:
        return f"no {baseline} records for {kind} targets: nothing to compare with."
    # one "task" per budget, so compare() pairs each budget's seeds
    df = rows.assign(task=rows["budget"].astype(int).astype(str), model=rows["neuron"],
                     metric="bits_per_param", value=rows["bits_per_param"])  # fmt: skip
    b = capacity_stats(rows[rows["neuron"] == baseline])
    text = [f"{kind} targets: {baseline} stores {b['mean'].min():.2f} to {b['mean'].max():.2f} {unit}/param "
            f"across budgets (seed std ≤ {b['std'].max():.2f})."]  # fmt: skip
    verdicts = {}
    for neuron in dict.fromkeys(rows.loc[rows["neuron"] != baseline, "neuron"]):
        c = compare(df, neuron, baseline)
        t = claim(c)
        verdicts[neuron] = t.verdict
        ratios = ", ".join(f"×{r.model_mean / r.baseline_mean:.2f} at {r.task}" for r in c.itertuples())
        text.append(
            f"{neuron} against {baseline}: **{t.verdict}** ({t.text()}); geometric-mean ratio {ratios}."
        )
    more = [n for n, v in verdicts.items() if v == "supported"]
    text.append(
        f"Verdict: {len(more)} of {len(verdicts)} neurons store more {unit} per parameter than {baseline} "
        f"by the paired rule ({', '.join(more) or 'none'}); the original claimed {CLAIMED_RATIO:,}×. Each "
        "capacity is a lower bound (a probe that does not fit within its steps counts as not fitted), so a "
        "ratio can be off either way; a curve that falls with the budget is a sign of under-training "
        "(docs/protocol.md §8)."
    )
    return "\n".join(text)
