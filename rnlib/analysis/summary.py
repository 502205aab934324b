"""The study's summary: tables, regime map and the six findings' verdicts, from a run's records (protocol §7).

Pure functions over DataFrames; nothing here trains or reads files (rnlib.analysis.report does). A result
trained once is reused by several notebooks through the cache, so pooled records are deduplicated. *Core*
rows are the budget-matched, default-option, standard-protocol runs at each task's standard budget, one per
neuron: the heatmap, regime map and findings read only those: a variant (ω = 30, a fixed width) never
decides a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from rnlib.analysis.tables import aggregate, summary_table
from rnlib.core.catalog import BUDGET_TOLERANCE, NEURONS, TASKS, lower_is_better

FLOAT_FLOOR = 1e-8  # why: protocol §4; below it an MSE sits at float32 precision, so a ratio of two is noise
SUPPORT_SHARE = 0.75  # a claim is supported when at least 3/4 of its comparisons agree with it,
CONTRA_SHARE = 0.25  # contradicted when at most 1/4 do, and mixed in between
FAR_MORE = 10.0  # "far more" OOD degradation: a factor at least an order of magnitude above vanilla's
DEDUP_KEY = ["neuron", "task", "seed", "budget", "omega", "init", "width"]
PROTOCOL = ["total_steps", "lr", "depth"]  # the run's most common values are its standard protocol
FREQ_ADAPTIVE = ("v7_learned_freq", "v9_controlled", "v10_free_phase", "v11_scaled_phase", "v12_fm",
                 "v13_aligned_phase", "v15_dual_phase")  # fmt: skip
ADAPTIVE = ("v6_routing", "v8_phase_gate", *FREQ_ADAPTIVE)  # v6..v13 and v15: input-dependent mechanisms
STANDARD_TASKS = tuple(t for t, s in TASKS.items() if s.kind in ("regression", "classification"))
FREQ_TASKS = ("freqgen", "mixedfreq")
REGIME_COLUMNS = ["task", "kind", "metric", "winner", "runner_up", "mean", "runner_up_mean", "margin",
                  "margin_text", "seed_wins", "seeds", "consistent", "tie"]  # fmt: skip
PAIR_COLUMNS = [
    "task",
    "budget",
    "model",
    "other",
    "model_mean",
    "other_mean",
    "outcome",
    "seed_wins",
    "seeds",
]


def is_capacity(df: pd.DataFrame) -> pd.Series:
    """Rows written by notebooks/capacity (version ``capacity``), which follow their own schema."""
    return df["version"].astype(str).eq("capacity")


def modes(df: pd.DataFrame, columns: list[str]) -> dict[str, object]:
    """The most common value of each column: the run's standard protocol and options."""
    return {c: df[c].mode().iloc[0] for c in columns if c in df and df[c].notna().any()}


def matches(df: pd.DataFrame, values: dict[str, object]) -> pd.Series:
    """Rows whose columns equal every given value."""
    mask = pd.Series(True, index=df.index)
    for column, value in values.items():
        mask &= df[column].eq(value)
    return mask


def order(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in registry order: tasks as in TASKS, neurons as in NEURONS, then label, budget and seed."""
    rank = {n: i for i, n in enumerate([*TASKS, *NEURONS])}
    keys = df.assign(_t=df["task"].map(rank), _n=df["neuron"].map(rank))
    keys = keys.sort_values(["_t", "_n", "model", "budget", "seed"], kind="stable", na_position="last")
    return keys.drop(columns=["_t", "_n"]).reset_index(drop=True)


def deduplicate(records: pd.DataFrame) -> pd.DataFrame:
    """One row per DEDUP_KEY (standard protocol and neuron labels first); ``notebooks`` names its sources."""
    study = records[~is_capacity(records)]
    rank = study.assign(_p=~matches(study, modes(study, PROTOCOL)), _l=study["model"].ne(study["neuron"]))
    rank = rank.sort_values(["_p", "_l", "notebook"], kind="stable")
    sources = rank.groupby(DEDUP_KEY, dropna=False)["notebook"].transform(lambda s: ";".join(sorted(set(s))))
    kept = rank.assign(notebooks=sources).drop_duplicates(DEDUP_KEY).drop(columns=["_p", "_l"])
    return pd.concat([order(kept), records[is_capacity(records)]], ignore_index=True)


def standard_budgets(df: pd.DataFrame) -> dict[str, int]:
    """Per task the budget most rows use (the task's default budget on a tie)."""
    out = {}
    for task, budgets in df.groupby("task")["budget"]:
        counts = budgets.value_counts()
        top = counts[counts == counts.max()].index
        default = TASKS[task].default_budget if task in TASKS else None
        out[task] = int(default if default in top else min(top))
    return out


def matched(df: pd.DataFrame, options: bool, every_budget: bool = False) -> pd.DataFrame:
    """Budget-matched standard-protocol rows (``options``: default ω and init only) at standard budgets."""
    study = df[~is_capacity(df)]
    ok = study[matches(study, modes(study, [*PROTOCOL, "omega"] if options else PROTOCOL))]
    ok = ok[(ok["params"] - ok["budget"]).abs() <= BUDGET_TOLERANCE * ok["budget"]]
    ok = ok[ok["init"].eq("default")] if options else ok
    return ok if every_budget else ok[ok["budget"] == ok["task"].map(standard_budgets(ok))]


def core(df: pd.DataFrame, every_budget: bool = False) -> pd.DataFrame:
    """Budget-matched default-option rows, one per (neuron, task, budget, seed), labelled by neuron."""
    ok = matched(df, options=True, every_budget=every_budget)
    ok = ok.assign(_l=ok["model"].ne(ok["neuron"])).sort_values("_l", kind="stable")
    ok = ok.drop_duplicates(["neuron", "task", "budget", "seed"]).drop(columns="_l")
    return order(ok.assign(model=ok["neuron"]))


def main_table(df: pd.DataFrame) -> pd.DataFrame:
    """Task × model ``mean ± std (n)`` of every budget-matched model at the standard budget, best marked ★."""
    return summary_table(order(matched(df, options=False)))


def outcome(a: float, b: float, metric: str) -> str:
    """``better``, ``worse`` or ``tie`` for mean ``a`` against mean ``b``; two MSEs at float precision tie."""
    if metric == "mse" and a < FLOAT_FLOOR and b < FLOAT_FLOOR:
        return "tie"
    sign = 1 if lower_is_better(metric) else -1
    return "better" if sign * a < sign * b else "worse" if sign * a > sign * b else "tie"


def pairs(
    df: pd.DataFrame,
    model: str,
    others: Sequence[str],
    tasks: Sequence[str] | None = None,
    value: str = "value",
) -> pd.DataFrame:
    """``model`` against each of ``others`` per (task, budget) on shared seeds: means, outcome, seed wins."""
    rows = []
    df = df if tasks is None else df[df["task"].isin(tasks)]
    df = df[np.isfinite(df[value].astype(float))]
    for (task, budget), g in df.groupby(["task", "budget"], sort=False):
        metric = g["metric"].iloc[0]
        sign = 1 if lower_is_better(metric) else -1
        a = g[g["model"] == model].set_index("seed")[value]
        for other in others:
            b = g[g["model"] == other].set_index("seed")[value]
            seeds = a.index.intersection(b.index)
            if other == model or len(seeds) == 0:
                continue
            ma, mb = a[seeds].mean(), b[seeds].mean()
            wins = int((sign * a[seeds] < sign * b[seeds]).sum())
            rows.append([task, budget, model, other, ma, mb, outcome(ma, mb, metric), wins, len(seeds)])
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def regime_map(df: pd.DataFrame) -> pd.DataFrame:
    """Per task the best neuron by mean, its margin over the runner-up and in how many seeds it beats it."""
    c, rows = core(df), []
    for task, g in aggregate(c).dropna(subset=["mean"]).groupby("task", sort=False):
        metric = g["metric"].iloc[0]
        g = g.sort_values("mean", ascending=lower_is_better(metric))
        best, second = g.iloc[0], g.iloc[min(1, len(g) - 1)]
        p = pairs(c[c["task"] == task], best["model"], [second["model"]])
        wins, seeds = (int(p["seed_wins"].iloc[0]), int(p["seeds"].iloc[0])) if len(p) else (0, 0)
        if metric == "mse":
            margin = second["mean"] / best["mean"] if best["mean"] > 0 else np.inf
            text = f"{margin:.3g}× lower MSE than {second['model']}"
        else:
            margin = 100 * (best["mean"] - second["mean"])
            text = f"+{margin:.1f} points over {second['model']}"
        rows.append({
            "task": task, "kind": TASKS[task].kind if task in TASKS else "unknown", "metric": metric,
            "winner": best["model"], "runner_up": second["model"], "mean": best["mean"],
            "runner_up_mean": second["mean"], "margin": margin, "margin_text": text, "seed_wins": wins,
            "seeds": seeds, "consistent": seeds > 0 and wins == seeds,
            "tie": len(g) < 2 or outcome(best["mean"], second["mean"], metric) == "tie",
        })  # fmt: skip
    return pd.DataFrame(rows, columns=REGIME_COLUMNS)


def regime_by_kind(regime: pd.DataFrame) -> pd.DataFrame:
    """Per kind of task the neuron(s) best on most of its tasks (a tie at float precision counts for none)."""
    rows = []
    for kind, g in regime.groupby("kind", sort=False):
        decided = g[~g["tie"]]
        counts = decided["winner"].value_counts()
        top = [w for w in dict.fromkeys(decided["winner"]) if counts[w] == counts.max()]  # in task order
        detail = [
            f"{r.task}: tie{' at float precision' if r.mean < FLOAT_FLOOR else ''}" if r.tie
            else f"{r.task}: {r.winner} ({r.margin_text}, {r.seed_wins}/{r.seeds} seeds)"
            for r in g.itertuples()
        ]  # fmt: skip
        wins = int(counts.max()) if top else 0
        rows.append({
            "kind": kind, "winner": " / ".join(top) or "none", "wins": f"{wins} of {len(g)}",
            "seed_consistent_wins": int((decided["winner"].isin(top) & decided["consistent"]).sum()),
            "tasks": "; ".join(detail),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=["kind", "winner", "wins", "seed_consistent_wins", "tasks"])


def precision_notes(df: pd.DataFrame) -> list[str]:
    """Where two or more neurons reach an MSE at float precision, a sentence: their ratio is no finding."""
    notes, c = [], core(df)
    for task, g in c[c["metric"] == "mse"].groupby("task", sort=False):
        for value, label in (("value", "test"), ("train_value", "train")):
            means = g.groupby("model")[value].mean()
            low = means[means < FLOAT_FLOOR]
            if len(low) >= 2:
                notes.append(
                    f"{task}: {len(low)} of {len(means)} neurons reach {label} MSE below {FLOAT_FLOOR:g} "
                    f"({low.min():.1e} to {low.max():.1e}), i.e. float precision; ratios between them are "
                    "not a finding (protocol §4)"
                )
                break
    return notes


def relative_to_vanilla(df: pd.DataFrame) -> pd.DataFrame:
    """Neuron × task: log10(MSE ÷ vanilla's), or accuracy − vanilla's in points; NaN at float precision."""
    cells = {}
    for task, g in aggregate(core(df)).groupby("task", sort=False):
        base = g.loc[g["model"] == "vanilla", "mean"]
        for r in g.itertuples() if len(base) else ():
            v = base.iloc[0]
            if r.metric == "accuracy":
                cells[(r.model, task)] = 100 * (r.mean - v)
            elif not (r.mean < FLOAT_FLOOR and v < FLOAT_FLOOR) or r.model == "vanilla":
                cells[(r.model, task)] = np.log10(r.mean / v) if r.mean > 0 and v > 0 else np.nan
    table = pd.Series(cells, dtype=float).unstack() if cells else pd.DataFrame()
    return table.reindex(
        index=[n for n in NEURONS if n in table.index], columns=[t for t in TASKS if t in table]
    )


def neuron_info(neuron: str) -> dict[str, object]:
    """Registry facts of a neuron: matrices per layer, whether they are factorised (low rank), periodic."""
    decl = NEURONS.get(neuron)
    if decl is None:
        return {"matrices": np.nan, "factorised": False, "periodic": False}
    return {"matrices": len(decl.matrices), "factorised": decl.low_rank, "periodic": decl.periodic}


def widths(df: pd.DataFrame) -> pd.DataFrame:
    """Width and parameter count each neuron gets at each budget of each task (any notebook's records)."""
    w = core(df, every_budget=True)[["task", "neuron", "budget", "width", "params"]]
    w = w.drop_duplicates(["neuron", "task", "budget"]).reset_index(drop=True)
    return pd.concat([w, pd.DataFrame([neuron_info(n) for n in w["neuron"]])], axis=1)


def width_pivot(df: pd.DataFrame) -> pd.DataFrame:
    """Neuron × task width at each task's standard budget, after the neuron's matrices per layer."""
    w = widths(df)
    w = w[w["budget"] == w["task"].map(standard_budgets(core(df)))]
    table = w.pivot(index="neuron", columns="task", values="width")
    table = table.reindex(
        index=[n for n in NEURONS if n in table.index], columns=[t for t in TASKS if t in table]
    )
    table.insert(0, "matrices", [neuron_info(n)["matrices"] for n in table.index])
    return table


def budget_sweep(df: pd.DataFrame) -> pd.DataFrame:
    """Core rows of every (neuron, task) trained at more than one budget: v14's value-vs-budget sweep."""
    c = core(df, every_budget=True)
    return c[c.groupby(["neuron", "task"])["budget"].transform("nunique") > 1]


def ood_factors(df: pd.DataFrame) -> pd.DataFrame:
    """Per neuron on ``ood``: geometric mean over seeds of OOD MSE ÷ in-distribution MSE, with its range."""
    c, rows = core(df), []
    c = c[(c["task"] == "ood") & c["id_value"].notna()]
    for neuron, g in c.groupby("neuron", sort=False):
        ratio = (g["value"] / g["id_value"]).astype(float)
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        if len(ratio):
            factor, mse, id_mse = float(np.exp(np.log(ratio).mean())), g["value"].mean(), g["id_value"].mean()
            rows.append([neuron, factor, ratio.min(), ratio.max(), mse, id_mse, len(ratio),
                         neuron_info(neuron)["periodic"], bool(id_mse < FLOAT_FLOOR)])  # fmt: skip
    columns = [
        "neuron",
        "factor",
        "low",
        "high",
        "ood_mse",
        "id_mse",
        "seeds",
        "periodic",
        "id_at_float_precision",
    ]
    return pd.DataFrame(rows, columns=columns)


def provenance(runs: pd.DataFrame, environment: dict[str, str]) -> dict[str, object]:
    """The summary's environment, what the executed notebooks recorded, and how long the run took."""
    start, end = pd.to_datetime(runs["start"], utc=True), pd.to_datetime(runs["end"], utc=True)
    known = start.notna().any() and end.notna().any()
    params = [p for p in runs["parameters"] if isinstance(p, dict)]
    return {
        "summary": environment,
        "notebooks": len(runs),
        "failed": [f"{r.notebook}: {r.error or 'failed'}" for r in runs.itertuples() if r.status != "done"],
        "papermill": sorted({str(v) for v in runs["papermill"].dropna()}),
        "kernel_python": sorted({str(v) for v in runs["python"].dropna()}),
        "devices": sorted({str(p["device"]) for p in params if "device" in p}),
        "first_start": start.min().isoformat() if known else None,
        "last_end": end.max().isoformat() if known else None,
        "total_seconds": float(pd.to_numeric(runs["seconds"]).sum()),
        "wall_seconds": (end.max() - start.min()).total_seconds() if known else None,
    }


# ------------------------------------------------------------------------- the original study's findings
@dataclass(frozen=True)
class Finding:
    """One claim of the original study, the verdict this run gives it and the numbers behind it."""

    number: int
    finding: str
    verdict: str  # supported, contradicted, mixed, or untested (nothing in this run can decide it)
    evidence: str
    table: pd.DataFrame
    # "yes" when the comparisons every seed decides the same way give the same verdict, "no" when they do not
    # (the verdict rests on comparisons within seed noise), "n/a" where no seed-paired comparison decides it
    seed_robust: str = "n/a"


def share_verdict(agree: int, total: int) -> str:
    """Supported if ≥ SUPPORT_SHARE of ``total`` comparisons agree, contradicted if ≤ CONTRA_SHARE."""
    if total == 0:
        return "untested"
    return (
        "supported"
        if agree >= SUPPORT_SHARE * total
        else "contradicted"
        if agree <= CONTRA_SHARE * total
        else "mixed"
    )


def decided(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The comparisons that are not ties, and how many of them ``model`` wins."""
    d = table[table["outcome"] != "tie"]
    return d, int((d["outcome"] == "better").sum())


def seed_consistent(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The decided comparisons that every shared seed decides the same way, and how many ``model`` wins."""
    d = decided(table)[0]
    better = (d["outcome"] == "better") & (d["seed_wins"] == d["seeds"])
    d = d[better | ((d["outcome"] == "worse") & (d["seed_wins"] == 0))]
    return d, int((d["outcome"] == "better").sum())


def share_finding(
    number: int, claim: str, evidence: str, table: pd.DataFrame, d: pd.DataFrame, agree: int
) -> Finding:
    """A finding whose verdict is the share of decided comparisons ``d`` that agree with it, checked against
    the same share over only the seed-consistent ones (a verdict carried by comparisons inside seed noise
    can flip with any change of rounding, as two canonical runs of this study showed)."""
    verdict = share_verdict(agree, len(d))
    sd, sagree = seed_consistent(d)
    robust = share_verdict(sagree, len(sd))
    evidence += (
        f"; counting only the {len(sd)} comparisons every seed decides the same way: {sagree} agree "
        f"({robust})"
    )
    return Finding(number, claim, verdict, evidence, table, "yes" if robust == verdict else "no")


def capacity_rows(df: pd.DataFrame) -> pd.DataFrame:
    """notebooks/capacity's binary-label records as rows ``pairs`` reads: value = bits per parameter."""
    if "bits_per_param" not in df:
        return pd.DataFrame(columns=["task", "metric", "budget", "model", "seed", "value"])
    cap = df[is_capacity(df) & df["task"].eq("capacity_binary") & df["bits_per_param"].notna()]
    cap = cap.assign(
        task="capacity", metric="bits_per_param", model=cap["neuron"], value=cap["bits_per_param"]
    )
    cap = cap.assign(budget=cap.get("budget", 0), seed=cap.get("seed", 0))
    cap = cap.fillna({"budget": 0, "seed": 0})
    return cap.groupby(["task", "metric", "budget", "model", "seed"], as_index=False)["value"].mean()


def finding_capacity(df: pd.DataFrame) -> Finding:
    """(1) SinGLU stores more per parameter: memorize train MSE, and bits per parameter where measured."""
    mem = pairs(core(df), "singlu", ["vanilla"], ["memorize"], value="train_value")
    cap = pairs(capacity_rows(df), "singlu", ["vanilla"])
    table = pd.concat([x for x in (mem, cap) if len(x)] or [mem], ignore_index=True)
    d, agree = decided(table)
    parts = [
        f"{r.task} {'train MSE' if r.task == 'memorize' else 'bits/parameter'} at budget {r.budget}: singlu "
        f"{r.model_mean:.3g} vs vanilla {r.other_mean:.3g}, singlu better in {r.seed_wins}/{r.seeds} seeds"
        for r in d.itertuples()
    ]
    parts += [
        f"memorize train MSE: singlu {r.model_mean:.1e} and vanilla {r.other_mean:.1e} are both below "
        f"{FLOAT_FLOOR:g}, float precision, so their ratio is not a finding (protocol §4)"
        for r in mem[mem["outcome"] == "tie"].itertuples()
    ]
    parts += [] if len(cap) else ["no capacity records (notebooks/capacity) in this run"]
    claim = "SinGLU stores more per parameter than ReLU"
    return share_finding(1, claim, "; ".join(parts), table, d, agree)


def finding_standard_wins(df: pd.DataFrame) -> Finding:
    """(2) SinGLU is best on all but at most one standard task, yet no neuron is best on all of them."""
    regime = regime_map(df)
    std = regime[regime["task"].isin(STANDARD_TASKS)]
    won = std[~std["tie"].astype(bool)]
    wins = standard_wins(won)
    robust = standard_wins(won[won["consistent"].astype(bool)])  # the best beats the runner-up in every seed
    winners = ", ".join(f"{r.task}: {r.winner}" for r in won.itertuples())
    evidence = f"singlu is best on {wins.singlu} of {wins.tasks} decided standard tasks ({winners}); "
    evidence += f"{wins.sweeper or 'no neuron'} is best on all of them"
    ties = [
        f"{r.task}{' (float precision)' if r.mean < FLOAT_FLOOR else ''}" for r in std.itertuples() if r.tie
    ]
    evidence += f"; undecided, the two best tie: {', '.join(ties)}" if ties else ""
    evidence += (
        f"; counting only the {robust.tasks} tasks whose best neuron beats the runner-up in every seed: "
        f"singlu best on {robust.singlu} ({robust.verdict})"
    )
    claim = "SinGLU wins 5 of the 6 standard tasks, but no neuron wins everything"
    return Finding(2, claim, wins.verdict, evidence, std, "yes" if robust.verdict == wins.verdict else "no")


class StandardWins(NamedTuple):
    """Finding 2's rule applied to some decided regime rows."""

    verdict: str
    tasks: int  # decided standard tasks
    singlu: int  # of which singlu is best on
    sweeper: str  # a neuron best on all of them (at least two), or ""


def standard_wins(won: pd.DataFrame) -> StandardWins:
    """Finding 2's verdict on decided regime rows ``won``: singlu best on all but one, and nobody on all."""
    n, k = len(won), int((won["winner"] == "singlu").sum())
    sweeper = next((w for w, c in won["winner"].value_counts().items() if c == n >= 2), "")
    if n == 0:
        verdict = "untested"
    elif k >= n - 1 and k > n / 2 and not sweeper:  # all but one, and a majority when there are only 1-2
        verdict = "supported"
    else:
        verdict = "contradicted" if k <= n / 2 else "mixed"
    return StandardWins(verdict, n, k, sweeper)


def finding_adaptive(df: pd.DataFrame) -> Finding:
    """(3) Adaptive neurons (v6–v13, v15) do not beat SinGLU at default budgets; v14's sweep trend if run."""
    c = core(df)
    adaptive = [n for n in ADAPTIVE if n in set(c["neuron"])]
    table = pairs(c, "singlu", adaptive).assign(scope="standard budget")
    d, agree = decided(table)
    per = ", ".join(f"{n} {((d['other'] == n) & (d['outcome'] == 'worse')).sum()}/{(d['other'] == n).sum()}"
                    for n in adaptive)  # fmt: skip
    evidence = (
        f"singlu beats the adaptive neuron in {agree} of {len(d)} (neuron, task) comparisons at the standard "
        f"budgets; tasks each wins over singlu: {per or 'no adaptive neuron in this run'}"
    )
    sweep = decided(pairs(budget_sweep(df), "singlu", adaptive))[0]
    if sweep["budget"].nunique() > 1:
        trend = sweep.groupby("budget")["outcome"].agg(lambda s: f"{(s == 'worse').sum()}/{len(s)}")
        evidence += "; budget sweep, adaptive wins over singlu: " + ", ".join(
            f"{t} at {b}" for b, t in trend.items()
        )
        table = pd.concat([table, sweep.assign(scope="budget sweep")], ignore_index=True)
    claim = "Adaptive mechanisms (v6–v13, v15) fail at small scale: they do not beat SinGLU"
    return share_finding(3, claim, evidence, table, d, agree)


def finding_width(df: pd.DataFrame) -> Finding:
    """(4) Each extra matrix costs width: mean width per matrix count falls at every (task, budget)."""
    w = widths(df)
    w = w[~w["factorised"] & w["matrices"].notna()]
    means = w.groupby(["task", "budget", "matrices"])["width"].mean()
    rel = [(s / s.iloc[0]).droplevel([0, 1]) for _, s in means.groupby(level=[0, 1]) if len(s) >= 2]
    agree = sum(bool((np.diff(s.to_numpy()) < 0).all()) for s in rel)
    table = pd.DataFrame(columns=["matrices", "mean", "min", "max", "neurons"])
    if rel:
        table = (
            pd.concat(rel, axis=1).agg(["mean", "min", "max"], axis=1).rename_axis("matrices").reset_index()
        )
        table["neurons"] = [
            ", ".join(sorted(set(w.loc[w["matrices"] == m, "neuron"]))) for m in table["matrices"]
        ]
    shown = ", ".join(f"{int(r.matrices)} → {r.mean:.2f}×" for r in table.itertuples())
    evidence = (
        f"width falls with every extra matrix in {agree} of {len(rel)} (task, budget) settings; mean width "
        f"relative to the fewest matrices: {shown or 'n/a'} (v4_lowrank, low-rank matrices, left out)"
    )
    return Finding(
        4, "Each extra matrix per unit costs width", share_verdict(agree, len(rel)), evidence, table
    )


def finding_frequency(df: pd.DataFrame) -> Finding:
    """(5) SinGLU's fixed ω beats the adaptive-frequency/phase neurons on unseen frequencies."""
    c = core(df)
    table = pairs(c, "singlu", [n for n in FREQ_ADAPTIVE if n in set(c["neuron"])], FREQ_TASKS)
    d, agree = decided(table)
    best = d.loc[d.groupby("task")["other_mean"].idxmin()] if len(d) else d
    parts = "; ".join(f"{r.task}: singlu {r.model_mean:.3g}, best adaptive {r.other} {r.other_mean:.3g}"
                      for r in best.itertuples())  # fmt: skip
    evidence = (
        f"singlu has the lower test MSE at κ = 10π in {agree} of {len(d)} comparisons ({parts or 'none'})"
    )
    claim = "A fixed frequency generalizes to unseen frequencies better than adaptive ones"
    return share_finding(5, claim, evidence, table, d, agree)


def finding_ood(df: pd.DataFrame) -> Finding:
    """(6) Periodic neurons' OOD degradation factors are ≥ FAR_MORE × vanilla's."""
    f = ood_factors(df)
    van = f[(f["neuron"] == "vanilla") & ~f["id_at_float_precision"]]
    claim = "Periodic neurons degrade far more out of distribution than ReLU"
    if van.empty:
        return Finding(6, claim, "untested", "no vanilla ood record with a usable in-distribution MSE", f)
    base = float(van["factor"].iloc[0])
    table = f.assign(vs_vanilla=f["factor"] / base)
    periodic = table[table["periodic"] & ~table["id_at_float_precision"]]["vs_vanilla"]
    n, far, more = len(periodic), int((periodic >= FAR_MORE).sum()), int((periodic > 1).sum())
    verdict = share_verdict(far, n)
    # not "far more" is not yet the opposite: contradicted only when (nearly) none degrades more at all
    if verdict != "supported" and n:
        verdict = "contradicted" if more <= CONTRA_SHARE * n else "mixed"
    evidence = (
        f"vanilla's OOD MSE is {base:.3g}× its in-distribution MSE; {far} of {n} periodic neurons degrade "
        f"≥ {FAR_MORE:g}× more than that, {more} of {n} more at all (median {periodic.median():.3g}×)"
    )
    floored = list(table.loc[table["id_at_float_precision"], "neuron"])
    evidence += f"; left out, in-distribution MSE at float precision: {', '.join(floored)}" if floored else ""
    return Finding(6, claim, verdict, evidence, table)


def all_findings(df: pd.DataFrame) -> list[Finding]:
    """The six findings, in the original study's order."""
    fns = (
        finding_capacity,
        finding_standard_wins,
        finding_adaptive,
        finding_width,
        finding_frequency,
        finding_ood,
    )
    return [fn(df) for fn in fns]


@dataclass
class Summary:
    """Everything the summary notebook shows and exports."""

    records: pd.DataFrame  # deduplicated; ``notebooks`` names every notebook that produced a row
    main_table: pd.DataFrame
    regime: pd.DataFrame
    regime_by_kind: pd.DataFrame
    findings: list[Finding]
    notes: list[str]  # float-precision caveats (protocol §4)
    runs: pd.DataFrame
    provenance: dict


def summarize(records: pd.DataFrame, runs: pd.DataFrame, environment: dict[str, str]) -> Summary:
    """Every table, map and verdict of a run from its raw records and its notebooks' metadata."""
    df = deduplicate(records)
    regime = regime_map(df)
    return Summary(df, main_table(df), regime, regime_by_kind(regime), all_findings(df), precision_notes(df),
                   runs, provenance(runs, environment))  # fmt: skip
