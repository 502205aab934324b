"""The tables every notebook shows from its records (``rnlib.records``) and the verdicts they support, all
by the one comparison rule of ``rnlib.analysis.stats`` (protocol §6): geometric means of MSE with their
spread, accuracy means ± std, paired-by-seed intervals, Holm over pooled comparisons, undecided allowed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from rnlib.analysis.stats import (
    FLOAT_FLOOR,
    NOTHING_LEARNED,
    Tally,
    centre,
    combine,
    learned,
    log_scale,
    paired,
    spread,
    tally,
)
from rnlib.core.catalog import BASELINES, lower_is_better


def format_value(centre_: float, spread_: float, metric: str) -> str:
    """``geomean ×/÷ factor`` for MSE, ``mean ± std%`` for accuracy (protocol §6: no arithmetic MSE means)."""
    if not math.isfinite(centre_):
        return "n/a"
    if metric == "mse" and centre_ <= FLOAT_FLOOR:
        return f"< {FLOAT_FLOOR:g}"
    if log_scale(metric):
        return f"{centre_:.3g} ×/÷ {spread_:.2g}"
    return f"{100 * centre_:.1f} ± {100 * spread_:.1f}%"


def aggregate(records: pd.DataFrame, value: str = "value") -> pd.DataFrame:
    """Per (task, model): ``mean`` (geometric for MSE), ``spread`` (×/÷ factor or std), seeds, divergences,
    and the task's trivial reference (its own centre over seeds) where the records carry it."""
    rows = []
    for (task, model), g in records.groupby(["task", "model"], sort=False):
        metric = g["metric"].iloc[0]
        ok = g[~g["diverged"].astype(bool)][value].astype(float)
        trivial = g["trivial_value"] if "trivial_value" in g else pd.Series(dtype=float)
        rows.append({
            "task": task, "model": model, "metric": metric, "mean": centre(ok, metric),
            "spread": spread(ok, metric), "n": int(ok.notna().sum()),
            "diverged": int(g["diverged"].astype(bool).sum()), "trivial": centre(trivial, metric),
        })  # fmt: skip
    columns = ["task", "model", "metric", "mean", "spread", "n", "diverged", "trivial"]
    return pd.DataFrame(rows, columns=columns)


def ranked(agg: pd.DataFrame) -> pd.DataFrame:
    """``aggregate``'s rows best first within each task (lowest MSE, highest accuracy)."""
    key = agg["mean"].where(agg["metric"].map(lower_is_better), -agg["mean"])
    first = agg["task"].map(
        {t: i for i, t in enumerate(dict.fromkeys(agg["task"]))}
    )  # tasks keep their order
    return agg.assign(_t=first, _k=key).sort_values(["_t", "_k"], kind="stable").drop(columns=["_t", "_k"])


def against_the_best(records: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Per task: ``aggregate``'s rows best first, and the best model against every other one by the
    comparison rule (``compare_many``): what the tables' marks and the regime map both read."""
    out = {}
    for task, g in ranked(aggregate(records)).dropna(subset=["mean"]).groupby("task", sort=False):
        rest = list(g["model"].iloc[1:])
        out[task] = (g, compare_many(records[records["task"] == task], g["model"].iloc[0], rest))
    return out


def best_groups(records: pd.DataFrame) -> dict[str, tuple[str, list[str], bool]]:
    """Per task: the best model by its centre, the models indistinguishable from it (undecided or tied
    against it by the comparison rule), and whether the best is decided better than every other model."""
    out = {}
    for task, (g, c) in against_the_best(records).items():
        close = list(c.loc[c["outcome"] != "better", "baseline"])
        out[task] = (g["model"].iloc[0], close, len(g) > 1 and not close)
    return out


def summary_table(records: pd.DataFrame, value: str = "value") -> pd.DataFrame:
    """Model × task table of ``centre ×/÷ spread (n)``, tasks as columns, every model a row, a first row with
    each task's trivial reference. ★ marks a best model decided better than every other, ≈ the models the
    rule cannot tell from the best; "(nothing learned)" flags a task no model beats its reference on."""
    agg = aggregate(records, value)
    groups = best_groups(records) if value == "value" else {}
    done = learned(records) if value == "value" else {}
    cells = {}
    for row in agg.itertuples():
        text = "diverged" if row.n == 0 else f"{format_value(row.mean, row.spread, row.metric)} (n={row.n})"
        best, close, decided = groups.get(row.task, ("", [], False))
        mark = ("★ " if decided else "≈ ") if row.model == best else "≈ " if row.model in close else ""
        cells[(row.model, row.task)] = mark + text
    tasks = list(dict.fromkeys(records["task"]))
    models = list(dict.fromkeys(records["model"]))
    table = pd.DataFrame([[cells.get((m, t), "") for t in tasks] for m in models], index=models)
    table.columns = tasks
    trivial = agg.drop_duplicates("task").set_index("task")
    if value == "value" and trivial["trivial"].notna().any():
        ref = [reference_text(trivial.loc[t, "trivial"], trivial.loc[t, "metric"], done.get(t, True))
               for t in tasks]  # fmt: skip
        table = pd.concat([pd.DataFrame([ref], index=["trivial reference"], columns=tasks), table])
    table.index.name = "model"
    return table


def reference_text(value: float, metric: str, learned_: bool) -> str:
    """A task's trivial reference as the table shows it, flagged when no model beats it."""
    text = f"{100 * value:.1f}%" if metric == "accuracy" else f"{value:.3g}"
    return text if learned_ else f"{text} (nothing learned)"


def skill_table(records: pd.DataFrame) -> pd.DataFrame:
    """Model × MSE task skill ``1 − MSE / MSE_trivial`` (geometric means over seeds): 0 is learning nothing,
    1 is a perfect fit, negative is worse than the trivial reference (protocol §4)."""
    agg = aggregate(records)
    agg = agg[agg["metric"].eq("mse") & agg["trivial"].notna()]
    table = agg.assign(skill=1 - agg["mean"] / agg["trivial"]).pivot(
        index="model", columns="task", values="skill"
    )
    return table.reindex(
        index=[m for m in dict.fromkeys(records["model"]) if m in table.index],
        columns=[t for t in dict.fromkeys(records["task"]) if t in table.columns],
    )


COMPARE_COLUMNS = ["task", "metric", "model", "baseline", "model_mean", "baseline_mean", "diff", "low",
                   "high", "p", "seeds", "excluded", "outcome", "wins", "learned", "text"]  # fmt: skip


def compare_many(
    records: pd.DataFrame, model: str, baselines: Sequence[str], value: str = "value"
) -> pd.DataFrame:
    """``model`` against each baseline on each task by the comparison rule, one row per (task, baseline):
    centres, the paired interval, the outcome (``nothing learned`` on a task no model of ``records`` beats
    its trivial reference on), ``wins`` = decided better."""
    done, rows = learned(records) if value == "value" else {}, []
    for task, df in records.groupby("task", sort=False):
        metric = df["metric"].iloc[0]
        a = df[df["model"] == model].set_index("seed")[value]
        for baseline in baselines:
            b = df[df["model"] == baseline].set_index("seed")[value]
            if baseline == model or not len(a.index.intersection(b.index)):
                continue
            c = paired(a, b, metric)
            outcome = c.outcome if done.get(task, True) else NOTHING_LEARNED
            rows.append([task, metric, model, baseline, centre(a, metric), centre(b, metric), c.diff, c.low,
                         c.high, c.p, c.seeds, c.excluded, outcome, outcome == "better", done.get(task, True),
                         c.text(metric)])  # fmt: skip
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def compare(records: pd.DataFrame, model: str, baseline: str, value: str = "value") -> pd.DataFrame:
    """``model`` against ``baseline`` per task (``compare_many`` with one baseline)."""
    return compare_many(records, model, [baseline], value)


def compare_best(records: pd.DataFrame, model: str, candidates: Sequence[str]) -> pd.DataFrame:
    """``model`` against the best of ``candidates`` on each task (the one with the best centre there)."""
    frames = [
        compare(records[records["task"] == task], model, ranked(aggregate(g))["model"].iloc[0])
        for task, g in records[records["model"].isin(candidates)].groupby("task", sort=False)
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COMPARE_COLUMNS)


def claim(comparisons: pd.DataFrame, agree: str = "better") -> Tally:
    """The verdict of pooled comparisons (``compare_many`` rows) for the claim that ``agree`` holds."""
    return tally(comparisons["outcome"], comparisons["p"], agree)


def beats_line(records: pd.DataFrame, model: str, baseline: str) -> str:
    """One sentence: ``v10 vs singlu, of 9 tasks: better on 2 (spiral, nested2d); worse on 1 (hifreq); …``."""
    c = compare(records, model, baseline)
    if c.empty:
        return f"{model} and {baseline} share no task and seed"
    parts = []
    for outcome in ("better", "worse", "undecided", "tie", NOTHING_LEARNED):
        tasks = list(c.loc[c["outcome"] == outcome, "task"])
        if tasks:
            parts.append(f"{outcome} on {len(tasks)} ({', '.join(tasks)})")
    return f"{model} vs {baseline}, of {len(c)} tasks (each by its own 95% interval): " + "; ".join(parts)


# ------------------------------------------------------------------- the version notebooks' verdict form
def verdict(outcome: str, evidence: str, criterion: str, lines: Sequence[str] = (), note: str = "") -> str:
    """A notebook's verdict cell as Markdown: its comparisons, then **Verdict: supported / contradicted /
    mixed / undecided.** with the numbers and the claim it was held to (the one form every notebook uses)."""
    bullets = "".join(f"- {line}.\n" for line in lines)
    return f"{bullets}\n**Verdict: {outcome}.** {evidence} (claim: {criterion}).{note}"


def beats_baselines(
    records: pd.DataFrame, model: str, baselines: Sequence[str] = BASELINES, note: str = ""
) -> str:
    """The verdict of "``model`` beats the baselines": the claim against each baseline, pooled over tasks
    with Holm, and the two combined (both must hold)."""
    tallies = {b: claim(compare(records, model, b)) for b in baselines}
    evidence = "; ".join(f"against {b}: {t.verdict}, {t.text()}" for b, t in tallies.items())
    outcome = combine(*(t.verdict for t in tallies.values()))
    criterion = f"{model} is better than " + " and ".join(baselines) + " across the tasks"
    return verdict(outcome, evidence, criterion, [beats_line(records, model, b) for b in baselines], note)
