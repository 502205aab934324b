"""The figures (and diagnostic tables) every version notebook shares; no notebook defines a plotting helper.

Plots draw; they never train. Figures of trained models take the arrays ``rnlib.training.study`` computes
(``Study.decision_grid``, ``Study.line_curves``); this module imports neither torch nor the training layer.

Every figure function returns a closed ``Figure``: a notebook cell that ends with the call shows it once (the
inline backend renders a returned figure; a closed one is not drawn a second time), and a script can save it.
Outside a Jupyter kernel the backend is Agg, so papermill runs, tests and scripts need no display.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import colors as mcolors
from matplotlib import lines as mlines
from matplotlib import ticker as mticker
from matplotlib.figure import Figure

from rnlib.analysis.stats import centre
from rnlib.core.catalog import lower_is_better

if TYPE_CHECKING:  # plots draw what training hands them; they never import it (nor torch) at run time
    from rnlib.training.study import LineCurves, PlaneGrid, Results


def kernel_shell() -> object | None:
    """The IPython shell when this process is a Jupyter kernel (notebook or papermill), else None."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell if shell is not None and "IPKernelApp" in shell.config else None


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter kernel, which renders figures inline."""
    return kernel_shell() is not None


def use_headless_backend() -> None:
    """Agg outside a Jupyter kernel; inside one, the inline backend unless a display is there to use.

    Inside a kernel the switch goes through ``%matplotlib inline``, which also registers IPython's figure
    formatter: with ``MPLBACKEND=Agg`` set (headless servers, CI) a plain backend switch left returned
    figures printed as text instead of drawn.
    """
    shell = kernel_shell()
    if shell is None:
        matplotlib.use("Agg")
    elif "inline" not in matplotlib.get_backend() and not os.environ.get("DISPLAY"):
        shell.run_line_magic("matplotlib", "inline")


use_headless_backend()
sns.set_theme(style="whitegrid", context="notebook", font_scale=0.85)
BASELINE_COLORS = {"vanilla": "#7f7f7f", "singlu": "#1f77b4"}  # the same two colours in every figure
PANEL = (3.6, 2.8)  # inches per facet: nine tasks fit a 3 × 3 grid on a notebook page


# ----------------------------------------------------------------------------------------- shared parts
def palette(models: Sequence[str]) -> dict[str, tuple]:
    """A colour per model label: the baselines keep theirs, the others take tab10, then tab20, in order."""
    pool = sns.color_palette("tab10") + sns.color_palette("tab20")[1::2]  # 18 distinct non-baseline colours
    free = [c for c in pool if mcolors.to_hex(c) not in BASELINE_COLORS.values()]
    others = [m for m in models if m not in BASELINE_COLORS]
    colors = {m: free[i % len(free)] for i, m in enumerate(others)}
    return {m: BASELINE_COLORS.get(m) or colors[m] for m in models}


def facets(n: int, ncols: int = 3) -> tuple[Figure, list[plt.Axes]]:
    """A grid of ``n`` panels (unused ones removed), flattened."""
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL[0] * ncols, PANEL[1] * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def finish(fig: Figure, colors: Mapping[str, tuple] | None = None, title: str = "") -> Figure:
    """Add a shared legend and title, tighten the layout, close the figure (it is shown once, as returned)."""
    if colors:
        handles = [mlines.Line2D([], [], color=c, marker="o", lw=2) for c in colors.values()]
        fig.legend(
            handles,
            list(colors),
            loc="upper center",
            ncol=min(len(colors), 6),
            frameon=False,
            bbox_to_anchor=(0.5, 0.0),
        )
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                tidy_log_axis(axis)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig


def tidy_log_axis(axis: matplotlib.axis.Axis) -> None:
    """Over a decade or more label only powers of ten; within one, label the ticks in plain numbers."""
    lo, hi = sorted(axis.get_view_interval())
    if lo > 0 and hi / lo >= 10:
        axis.set_minor_formatter(mticker.NullFormatter())  # 2×10⁻¹, 3×10⁻¹, … only clutter small panels
    else:
        plain = mticker.FuncFormatter(lambda v, _: f"{float(f'{v:.3g}'):g}")  # 0.35, 3000, not 3.5e-01
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)


def metric_axis(ax: plt.Axes, metric: str) -> None:
    """Log scale and 'lower is better' for MSE; percent and 'higher is better' for accuracy."""
    if lower_is_better(metric):
        ax.set_yscale("log")
        ax.set_ylabel("test MSE (↓)")
    else:
        ax.set_ylabel("test accuracy (↑)")
        ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0, decimals=1))


def band(ax: plt.Axes, frame: pd.DataFrame, x: str, y: str, color: tuple, label: str = "") -> None:
    """Mean over seeds as a line, min–max over seeds as a band."""
    g = frame.groupby(x)[y].agg(["mean", "min", "max"])
    ax.plot(g.index, g["mean"], color=color, lw=1.5, label=label)
    ax.fill_between(g.index, g["min"], g["max"], color=color, alpha=0.2, lw=0)


def label_ticks(ax: plt.Axes) -> None:
    """Rotate categorical x tick labels so long model names stay readable."""
    ax.set_xlabel("")
    plt.setp(ax.get_xticklabels(), rotation=35, ha="right", rotation_mode="anchor")


# ------------------------------------------------------------------------------------------- results
def results_figure(records: pd.DataFrame, models: Sequence[str] | None = None) -> Figure:
    """Per task: every seed as a dot and the mean as a black diamond; ★ names the best mean."""
    models = list(models or dict.fromkeys(records["model"]))
    ok = records[records["model"].isin(models) & ~records["diverged"].astype(bool)]
    tasks = list(dict.fromkeys(records["task"]))
    colors = palette(models)
    fig, axes = facets(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        d = ok[ok["task"] == task]
        metric = records.loc[records["task"] == task, "metric"].iloc[0]
        sns.stripplot(
            d,
            x="model",
            y="value",
            hue="model",
            order=models,
            hue_order=models,
            palette=colors,
            legend=False,
            size=4,
            alpha=0.7,
            jitter=0.15,
            ax=ax,
        )
        sns.pointplot(
            d,
            x="model",
            y="value",
            order=models,
            errorbar=None,
            linestyle="none",
            markers="D",
            color="black",
            markersize=4,
            ax=ax,
        )
        means = d.groupby("model")["value"].apply(centre, metric=metric)  # geometric for MSE
        best = (means.idxmin() if lower_is_better(metric) else means.idxmax()) if len(means) else "-"
        ax.set_title(f"{task}  (best: {best})")
        metric_axis(ax, metric)
        label_ticks(ax)
    return finish(fig)


def loss_curves(
    res: Results, tasks: Sequence[str] | None = None, models: Sequence[str] | None = None
) -> Figure:
    """Training loss per task (log scale): mean over seeds with the min–max band, one line per model."""
    rows = [(m, t, r.seed, s, v) for (m, t), runs in res.runs.items() for r in runs for s, v in r.curve]
    df = pd.DataFrame(rows, columns=["model", "task", "seed", "step", "loss"])
    models = list(models or dict.fromkeys(df["model"]))
    tasks = list(tasks or dict.fromkeys(df["task"]))
    colors = palette(models)
    fig, axes = facets(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        for model in models:
            band(ax, df[(df["task"] == task) & (df["model"] == model)], "step", "loss", colors[model])
        ax.set(title=task, yscale="log", xlabel="step", ylabel="training loss")
    return finish(fig, colors)


def seed_scatter(records: pd.DataFrame, model: str, baseline: str) -> Figure:
    """``model`` against ``baseline``, one dot per (task, seed); dots on the better side of y = x are wins."""
    pairs = records.pivot_table(
        index=["task", "metric", "seed"], columns="model", values="value"
    ).reset_index()
    tasks = list(dict.fromkeys(records["task"]))
    colors = dict(zip(tasks, sns.color_palette("tab10", len(tasks)), strict=True))
    metrics = list(dict.fromkeys(pairs["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        d = pairs[pairs["metric"] == metric]
        for task, g in d.groupby("task", sort=False):
            ax.scatter(g[baseline], g[model], color=colors[task], s=25, alpha=0.8)
        lo, hi = np.nanmin(d[[model, baseline]].to_numpy()), np.nanmax(d[[model, baseline]].to_numpy())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        scale = "log" if lower_is_better(metric) else "linear"
        better = "below" if lower_is_better(metric) else "above"
        ax.set(
            xscale=scale,
            yscale=scale,
            xlabel=f"{baseline} ({metric})",
            ylabel=f"{model} ({metric})",
            title=f"test {metric}: {model} wins {better} the diagonal",
        )
    return finish(fig, {t: colors[t] for t in tasks})


def ratio_heatmap(records: pd.DataFrame, models: Sequence[str], baseline: str) -> Figure:
    """Per task, each model's error ÷ the baseline's (geometric-mean MSE, or 1 − mean accuracy); blue < 1 =
    model better. A picture of size, not a verdict: the verdict cell applies the paired rule."""
    means = (
        records.groupby(["task", "model", "metric"], sort=False)["value"]
        .apply(lambda v: centre(v, v.name[2]))  # v.name is the group's (task, model, metric)
        .reset_index()
    )
    means["error"] = np.where(means["metric"] == "accuracy", 1 - means["value"], means["value"])
    table = means.pivot(index="task", columns="model", values="error")
    tasks = list(dict.fromkeys(records["task"]))
    ratio = table[list(models)].div(table[baseline], axis=0).loc[tasks]  # (tasks, models)
    fig, ax = plt.subplots(figsize=(1.3 * len(models) + 2.5, 0.45 * len(tasks) + 1.5))
    sns.heatmap(
        np.log10(ratio.clip(lower=1e-12)),
        annot=ratio.to_numpy(),
        fmt=".2g",
        cmap="RdBu_r",
        center=0,
        cbar_kws={"label": f"log10(error ÷ {baseline}'s)"},
        ax=ax,
    )
    ax.set(xlabel="", ylabel="", title=f"error relative to {baseline} (< 1: better than {baseline})")
    label_ticks(ax)
    return finish(fig)


def ood_figure(records: pd.DataFrame, models: Sequence[str] | None = None) -> Figure:
    """``ood`` task: in-distribution vs out-of-distribution test MSE per model, one dot per seed."""
    d = records[(records["task"] == "ood") & ~records["diverged"].astype(bool)]
    models = list(models or dict.fromkeys(d["model"]))
    long = d.melt(
        id_vars=["model", "seed"], value_vars=["id_value", "value"], var_name="split", value_name="mse"
    )
    long["split"] = long["split"].map({"id_value": "in-distribution [-1, 1]", "value": "OOD [1, 2]"})
    fig, ax = plt.subplots(figsize=(1.0 * len(models) + 3, 3.6))
    sns.stripplot(long, x="model", y="mse", hue="split", order=models, dodge=True, size=5, ax=ax)
    ax.set(yscale="log", ylabel="test MSE (↓)", title="ood: the gap between the splits is the degradation")
    label_ticks(ax)
    return finish(fig)


def budget_sweep(records: pd.DataFrame, models: Sequence[str], tasks: Sequence[str] | None = None) -> Figure:
    """Test metric against budget per task: mean over seeds with the min–max band, a line per model."""
    tasks = list(tasks or dict.fromkeys(records["task"]))
    colors = palette(models)
    ok = records[~records["diverged"].astype(bool)]
    fig, axes = facets(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        for model in models:
            band(ax, ok[(ok["task"] == task) & (ok["model"] == model)], "budget", "value", colors[model])
        metric_axis(ax, records.loc[records["task"] == task, "metric"].iloc[0])
        ax.set(title=task, xscale="log", xlabel="parameter budget", xticks=sorted(ok["budget"].unique()))
        ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(mticker.NullLocator())
    return finish(fig, colors)


def width_bars(widths: pd.DataFrame) -> Figure:
    """Width each neuron gets at a matched budget as a fraction of vanilla's (from ``width_table``).

    Bars are the mean over tasks, whiskers the range; the colour and the label give matrices per layer.
    """
    vanilla = widths[widths["neuron"] == "vanilla"].set_index("task")["width"]
    d = widths.assign(
        relative=widths["width"] / widths["task"].map(vanilla),
        neuron=widths["neuron"] + " (" + widths["matrices"].astype(str) + ")",
    )
    order = list(d.sort_values("matrices", kind="stable")["neuron"].drop_duplicates())
    fig, ax = plt.subplots(figsize=(7.0, 0.3 * len(order) + 1.2))
    sns.barplot(
        d,
        y="neuron",
        x="relative",
        hue="matrices",
        order=order,
        palette="crest",
        dodge=False,
        errorbar=("pi", 100),
        ax=ax,
    )
    ax.axvline(1.0, color="black", lw=1, ls="--")
    ax.set(ylabel="neuron (matrices per layer)", xlabel="hidden width ÷ vanilla's width at the same budget")
    ax.legend(title="matrices", loc="lower right", frameon=True)
    return finish(fig)


# ------------------------------------------------------------------------------------------ diagnostics
def probe_bands(
    res: Results,
    model: str,
    probe: str,
    layer: int = 0,
    tasks: Sequence[str] | None = None,
    reference: float | None = None,
) -> Figure:
    """Quantiles of a probe over probe inputs during training: q05–q95 and q25–q75 bands, median per seed."""
    key = f"L{layer}.{probe}"
    tasks = list(tasks or [t for m, t in res.runs if m == model])
    fig, axes = facets(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        d = res.diagnostics(model, task)
        d = d[d["key"].str.startswith(f"{key}/q")]
        q = d.groupby(["step", "key"])["value"].mean().unstack()  # (steps, quantiles), mean over seeds
        ax.fill_between(
            q.index, q[f"{key}/q05"], q[f"{key}/q95"], alpha=0.2, color="C0", lw=0, label="q05–q95"
        )
        ax.fill_between(
            q.index, q[f"{key}/q25"], q[f"{key}/q75"], alpha=0.4, color="C0", lw=0, label="q25–q75"
        )
        for _, seed in d[d["key"] == f"{key}/q50"].groupby("seed"):
            ax.plot(seed["step"], seed["value"], color="C0", lw=1)
        if reference is not None:
            ax.axhline(reference, color="black", ls="--", lw=1, label="initial value")
        ax.set(title=task, xlabel="step", ylabel=key)
    axes[0].legend(fontsize="x-small")
    return finish(fig, title=f"{model}: {key} over the probe inputs during training")


def distribution(
    res: Results, model: str, probe: str, layer: int = 0, tasks: Sequence[str] | None = None
) -> Figure:
    """Histogram of a probe's raw values at the first and the last recording, seeds pooled."""
    key = f"L{layer}.{probe}"
    tasks = list(tasks or [t for m, t in res.runs if m == model])
    colors = {"first": "#aaaaaa", "last": "#d62728"}
    fig, axes = facets(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        s = res.samples(model, task, key)
        lo, hi = s["value"].quantile([0.001, 0.999]) if len(s) else (0.0, 1.0)
        bins = np.linspace(lo - 1e-3, hi + 1e-3, 41)  # shared bins; widened so a constant still has one
        for when, color in colors.items():  # first: filled grey; last: a red outline on top
            ax.hist(
                s.loc[s["when"] == when, "value"].clip(bins[0], bins[-1]),
                bins=bins,
                density=True,
                histtype="stepfilled" if when == "first" else "step",
                lw=1.8,
                alpha=0.6 if when == "first" else 1,
                color=color,
            )
        ax.set(title=task, xlabel=key, ylabel="density")
    return finish(fig, colors, title=f"{model}: {key} at the first and last recording")


def model_distributions(
    res: Results,
    models: Sequence[str],
    probe: str,
    layer: int = 0,
    when: str = "last",
    absolute: bool = False,
) -> Figure:
    """Histograms of a probe's raw values for several models at one recording, one panel per task."""
    key = f"L{layer}.{probe}"
    tasks = list(dict.fromkeys(t for m, t in res.runs if m in models))
    colors = palette(models)
    fig, axes = facets(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        samples = {m: res.samples(m, task, key) for m in models}
        values = {m: d.loc[d["when"] == when, "value"] for m, d in samples.items()}
        values = {m: v.abs() if absolute else v for m, v in values.items()}
        pooled = pd.concat(values.values())
        bins = np.linspace(pooled.min() - 1e-3, pooled.max() + 1e-3, 21) if len(pooled) else 20
        for m, v in values.items():
            ax.hist(v, bins=bins, density=True, histtype="step", lw=1.8, color=colors[m])
        ax.set(title=task, xlabel=f"|{key}|" if absolute else key, ylabel="density")
    return finish(fig, colors, title=f"{key} at the {when} recording")


def probe_table(res: Results, model: str, probe: str, tasks: Sequence[str] | None = None) -> pd.DataFrame:
    """Per task and layer: quantiles and mean |value| of a probe's raw samples, first vs last recording."""
    tasks = list(tasks or [t for m, t in res.runs if m == model])
    rows = []
    for task in tasks:
        keys = {k.split("@")[0] for r in res.runs[(model, task)] for k in r.diagnostics}
        for key in sorted(k for k in keys if re.fullmatch(rf"L\d+\.{re.escape(probe)}", k)):
            s = res.samples(model, task, key)
            for when, v in s.groupby("when", sort=False)["value"]:
                q = v.quantile([0.05, 0.5, 0.95])
                rows.append((task, key.split(".")[0], when, q[0.05], q[0.5], q[0.95], v.abs().mean()))
    df = pd.DataFrame(rows, columns=["task", "layer", "when", "q05", "median", "q95", "mean |x|"])
    return df.pivot_table(index=["task", "layer"], columns="when", sort=False).swaplevel(axis=1)[
        ["first", "last"]
    ]


def diagnostic_lines(
    res: Results, models: Sequence[str], key: str, tasks: Sequence[str] | None = None, log: bool = False
) -> Figure:
    """One diagnostic series (e.g. ``L0.phase/absmean``) per task, a line per model, min–max over seeds."""
    tasks = list(tasks or dict.fromkeys(t for _, t in res.runs))
    colors = palette(models)
    fig, axes = facets(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        for model in models:
            d = res.diagnostics(model, task)
            band(ax, d[d["key"] == key], "step", "value", colors[model])
        ax.set(title=task, xlabel="step", ylabel=key, yscale="log" if log else "linear")
    return finish(fig, colors)


def grad_norms(
    res: Results, models: Sequence[str], task: str, keys: Sequence[str] = ("grad/direct", "grad/meta")
) -> Figure:
    """Gradient norm of parameter groups over training (log scale), one panel per model."""
    colors = dict(zip(keys, sns.color_palette("Set1", len(keys)), strict=True))
    fig, axes = facets(len(models), ncols=len(models) if len(models) <= 4 else 3)
    for ax, model in zip(axes, models, strict=True):
        d = res.diagnostics(model, task)
        for key in keys:
            if (d["key"] == key).any():
                band(ax, d[d["key"] == key], "step", "value", colors[key])
        ax.set(title=model, yscale="log", xlabel="step", ylabel="gradient norm")
    return finish(fig, colors, title=f"{task}: gradient norms by parameter group")


def grad_ratio_table(
    sweep: Mapping[int, Results], models: Sequence[str], num: str = "grad/meta", den: str = "grad/direct"
) -> pd.DataFrame:
    """Median over steps and seeds of ``num ÷ den`` gradient norm, per budget (rows) and model × task."""
    rows = []
    for budget, res in sweep.items():
        for model, task in res.runs:
            if model in models:
                d = res.diagnostics(model, task).pivot_table(
                    index=["seed", "step"], columns="key", values="value"
                )
                rows.append((budget, model, task, (d[num] / d[den]).median()))
    df = pd.DataFrame(rows, columns=["budget", "model", "task", "ratio"])
    return df.pivot_table(index="budget", columns=["model", "task"], values="ratio", sort=False)


# ----------------------------------------------------------------------- predictions of retrained models
def decision_boundaries(grid: PlaneGrid) -> Figure:
    """Class-1 probability over the plane for each model, test points on top (``Study.decision_grid``)."""
    fig, axes = facets(len(grid.probability), ncols=min(len(grid.probability), 4))
    for ax, (label, p) in zip(axes, grid.probability.items(), strict=True):
        ax.contourf(grid.axis, grid.axis, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.8)
        ax.contour(grid.axis, grid.axis, p, levels=[0.5], colors="black", linewidths=1)
        ax.scatter(*grid.x_test.T, c=grid.y_test, cmap="RdBu_r", s=3, edgecolors="none")
        ax.set(
            title=f"{label}: test accuracy {grid.accuracy[label]:.1%}", aspect="equal", xticks=[], yticks=[]
        )
    title = f"{grid.task}, seed {grid.seed}: predicted class probability (black: decision boundary)"
    return finish(fig, title=title)


def extrapolation(curve: LineCurves) -> Figure:
    """Each model's predictions of a 1-D task in and out of its training range (``Study.line_curves``)."""
    colors = palette(list(curve.predictions))
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.axvspan(*curve.train_range, color="#dddddd", label="training range")
    if curve.ood_range is not None:
        ax.axvspan(*curve.ood_range, color="#fde0c5", label="OOD test range")
    ax.plot(curve.x, curve.target, "k--", lw=1.5, label="target")
    for label, y in curve.predictions.items():
        ax.plot(curve.x, y, color=colors[label], lw=1.5, label=label)
    lo, hi = float(curve.target.min()), float(curve.target.max())
    ax.set(
        xlabel="x",
        ylabel="y",
        ylim=(lo - (hi - lo), hi + (hi - lo)),
        title=f"{curve.task}, seed {curve.seed}: predictions inside and outside the training range",
    )
    ax.legend(loc="upper left", fontsize="small", ncol=2)
    return finish(fig)
