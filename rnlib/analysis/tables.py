"""The tables every notebook shows from its records (``rnlib.records``): mean ± std over seeds with the seed
count and the best marked, and the win counts behind each verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from rnlib.core.catalog import BASELINES, lower_is_better


def format_value(mean: float, std: float, metric: str) -> str:
    """``mean ± std`` in a precision that suits the metric (accuracy in %, MSE in 3 significant digits)."""
    if metric == "accuracy":
        return f"{100 * mean:.1f} ± {100 * std:.1f}%"
    return f"{mean:.3g} ± {std:.2g}"


def aggregate(records: pd.DataFrame, value: str = "value") -> pd.DataFrame:
    """Mean, std (ddof 1; 0 for one seed), seed count and divergences per (task, model)."""
    ok = records[~records["diverged"].astype(bool)]
    g = ok.groupby(["task", "model", "metric"], sort=False)[value]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    div = records.groupby(["task", "model"], sort=False)["diverged"].sum().rename("diverged").reset_index()
    return out.merge(div, on=["task", "model"], how="right").fillna({"n": 0})


def best_models(agg: pd.DataFrame) -> dict[str, str]:
    """The best model per task by mean metric (lowest MSE, highest accuracy)."""
    best = {}
    for task, rows in agg.dropna(subset=["mean"]).groupby("task", sort=False):
        sign = 1 if lower_is_better(rows["metric"].iloc[0]) else -1
        best[task] = rows.loc[(sign * rows["mean"]).idxmin(), "model"]
    return best


def summary_table(records: pd.DataFrame, value: str = "value") -> pd.DataFrame:
    """Task × model table of ``mean ± std (n)``; the best per task is marked with ★."""
    agg = aggregate(records, value)
    best = best_models(agg)
    cells = {}
    for row in agg.itertuples():
        text = "diverged" if row.n == 0 else f"{format_value(row.mean, row.std, row.metric)} (n={row.n})"
        cells[(row.task, row.model)] = ("★ " if best.get(row.task) == row.model else "") + text
    tasks = list(dict.fromkeys(records["task"]))
    models = list(dict.fromkeys(records["model"]))
    table = pd.DataFrame(
        [[cells.get((t, m), "") for m in models] for t in tasks], index=tasks, columns=models
    )
    table.index.name = "task"
    return table


def compare(records: pd.DataFrame, model: str, baseline: str) -> pd.DataFrame:
    """Per task: does ``model`` beat ``baseline`` on the mean, and in how many seeds (same seed pairs)?"""
    rows = []
    for task, df in records.groupby("task", sort=False):
        a = df[df["model"] == model].set_index("seed")["value"]
        b = df[df["model"] == baseline].set_index("seed")["value"]
        seeds = a.index.intersection(b.index)
        if len(seeds) == 0:
            continue
        sign = 1 if lower_is_better(df["metric"].iloc[0]) else -1
        a, b = a.loc[seeds], b.loc[seeds]
        seed_wins = int(((sign * a) < (sign * b)).sum())
        rows.append(
            {
                "task": task,
                "model": a.mean(),
                "baseline": b.mean(),
                "ratio": a.mean() / b.mean() if b.mean() else math.nan,
                "wins": bool(sign * a.mean() < sign * b.mean()),
                "seed_wins": seed_wins,
                "seeds": len(seeds),
                "consistent": seed_wins in (0, len(seeds)),
            }
        )
    return pd.DataFrame(rows)


def beats_line(records: pd.DataFrame, model: str, baseline: str) -> str:
    """One sentence such as ``v10 beats singlu on 4 of 9 tasks, in every seed on 3 of them``."""
    c = compare(records, model, baseline)
    if c.empty:
        return f"{model} and {baseline} share no task and seed"
    wins = c[c["wins"]]
    every_seed = int((wins["seed_wins"] == wins["seeds"]).sum())
    return (
        f"{model} beats {baseline} on {len(wins)} of {len(c)} tasks "
        f"({', '.join(wins['task']) or 'none'}), in every seed on {every_seed} of them"
    )


# ------------------------------------------------------------------- the version notebooks' verdict rule
MAJORITY = "more than half of the tasks"  # what "beats" means for a notebook's hypothesis (protocol §3)


def majority(wins: pd.Series) -> bool:
    """Whether ``wins`` (one bool per task, ``compare``'s column) holds on more than half of the tasks."""
    return int(wins.sum()) > len(wins) / 2


def verdict(held: bool, evidence: str, criterion: str, lines: Sequence[str] = (), note: str = "") -> str:
    """A notebook's verdict cell as Markdown: its comparisons, then **Verdict: the hypothesis held / did not
    hold.** with the numbers and the criterion it was held to (the one form every notebook uses)."""
    bullets = "".join(f"- {line}.\n" for line in lines)
    outcome = "held" if held else "did not hold"
    return f"{bullets}\n**Verdict: the hypothesis {outcome}.** {evidence} (criterion: {criterion}).{note}"


def beats_baselines(
    records: pd.DataFrame, model: str, baselines: Sequence[str] = BASELINES, note: str = ""
) -> str:
    """The verdict of "``model`` beats the baselines": more than half of the tasks against each."""
    wins = {b: compare(records, model, b)["wins"] for b in baselines}
    evidence = f"{model} beats " + " and ".join(
        f"{b} on {w.sum()} of {len(w)} tasks" for b, w in wins.items()
    )
    held = all(majority(w) for w in wins.values())
    criterion = f"{MAJORITY} against each baseline, on the mean over seeds"
    return verdict(held, evidence, criterion, [beats_line(records, model, b) for b in wins], note)
