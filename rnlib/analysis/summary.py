"""The study's summary: tables, regime map and the six findings' verdicts, from a run's records (protocol §7).

Pure functions over DataFrames; nothing here trains or reads files (rnlib.analysis.report does). A result
trained once is reused by several notebooks through the cache, so pooled records are deduplicated. *Core*
rows are the budget-matched, default-option, standard-protocol runs at each task's standard budget, one per
neuron: the heatmap, regime map and findings read only those: a variant (ω = 30, a fixed width) never
decides a verdict. Every comparison and verdict is ``rnlib.analysis.stats``'s rule (protocol §6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rnlib.analysis.stats import (
    FLOAT_FLOOR,
    NOTHING_LEARNED,
    centre,
    combine,
    holm_outcomes,
    learned,
)
from rnlib.analysis.tables import (
    against_the_best,
    aggregate,
    claim,
    compare_best,
    compare_many,
    skill_table,
    summary_table,
)
from rnlib.core.catalog import BUDGET_TOLERANCE, NEURONS, TASKS
from rnlib.records import TUNING_COLUMNS, TUNING_ROLES

DEDUP_KEY = ["neuron", "task", "seed", "budget", "omega", "init", "width"]
PROTOCOL = ["total_steps", "lr", "depth"]  # the run's most common values are its standard protocol
FREQ_ADAPTIVE = ("v7_learned_freq", "v9_controlled", "v10_free_phase", "v11_scaled_phase", "v12_fm",
                 "v13_aligned_phase", "v15_dual_phase")  # fmt: skip
ADAPTIVE = ("v6_routing", "v8_phase_gate", *FREQ_ADAPTIVE)  # v6..v13 and v15: input-dependent mechanisms
GLU_CONTROLS = ("reglu", "geglu", "swiglu")  # SinGLU's gate with a non-periodic activation (protocol §2)
STANDARD_TASKS = tuple(t for t, s in TASKS.items() if s.kind in ("regression", "classification"))
FREQ_TASKS = ("freqgen", "mixedfreq")
# The original study's numbers each finding is set against (protocol §6, "as tested"):
ORIGINAL_MEMORIZE_RATIO = 168_327  # finding 1: vanilla's memorize MSE ÷ SinGLU's
ORIGINAL_STANDARD_WINS = (5, 6)  # finding 2: SinGLU beats ReLU on 5 of the 6 standard tasks
ORIGINAL_WIDTH_LOSS = 0.35  # finding 4: ~35% of the width lost per extra matrix
WIDTH_TOLERANCE = 0.10  # "~35%": supported within ±10 points, a tolerance stated before looking
ORIGINAL_OOD_FACTOR = 7.0  # finding 6: the original's ~7× degradation ratio
REGIME_COLUMNS = ["task", "kind", "metric", "learned", "trivial", "best", "runner_up", "best_mean",
                  "runner_up_mean", "outcome", "interval", "winner", "indistinguishable", "p"]  # fmt: skip


def is_capacity(df: pd.DataFrame) -> pd.Series:
    """Rows written by notebooks/capacity (version ``capacity``), which follow their own schema."""
    return df["version"].astype(str).eq("capacity")


def is_tuned(df: pd.DataFrame) -> pd.Series:
    """Rows written by notebooks/tuned (they carry a ``role``, protocol §9): read apart from the others, since
    their learning rates and ω are each neuron's own."""
    return df["role"].isin(TUNING_ROLES) if "role" in df else pd.Series(False, index=df.index)


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
    """Budget-matched default-option rows, one per (neuron, task, budget, seed), labelled by neuron. In tuned
    records (``after_tuning``) the core rows are the ``tuned`` ones: each neuron at the setting its validation
    score chose, at the task's default budget, on the final seeds."""
    if is_tuned(df).any():
        tuned = df[df["role"].eq(TUNING_ROLES[1])]
        return order(tuned.assign(model=tuned["neuron"]))
    ok = matched(df, options=True, every_budget=every_budget)
    ok = ok.assign(_l=ok["model"].ne(ok["neuron"])).sort_values("_l", kind="stable")
    ok = ok.drop_duplicates(["neuron", "task", "budget", "seed"]).drop(columns="_l")
    return order(ok.assign(model=ok["neuron"]))


def main_table(df: pd.DataFrame) -> pd.DataFrame:
    """Model × task ``centre ×/÷ spread (n)`` of every budget-matched model at the standard budget, with the
    trivial reference row; ★ decided best, ≈ indistinguishable from the best (``tables.summary_table``)."""
    return summary_table(order(matched(df, options=False)))


def skill(df: pd.DataFrame) -> pd.DataFrame:
    """Neuron × MSE task skill ``1 − MSE / MSE_trivial`` of the core rows (protocol §4)."""
    return skill_table(core(df))


def nothing_learned(df: pd.DataFrame) -> list[str]:
    """Tasks on which no core model beats the trivial reference in a majority of seeds (protocol §4)."""
    return [t for t, ok in learned(core(df)).items() if not ok]


def pairs(df: pd.DataFrame, model: str, others: Sequence[str], tasks: Sequence[str] | None = None,
          value: str = "value") -> pd.DataFrame:  # fmt: skip
    """``model`` against each of ``others`` per (task, budget) by the comparison rule (``compare_many``)."""
    df = df if tasks is None else df[df["task"].isin(tasks)]
    frames = [
        compare_many(g, model, others, value).assign(budget=budget)
        for budget, g in df.groupby("budget", sort=False)
    ]
    frames = [f for f in frames if len(f)]
    if not frames:
        return compare_many(df.iloc[:0], model, others, value).assign(budget=pd.Series(dtype=int))
    return pd.concat(frames, ignore_index=True)


def regime_map(df: pd.DataFrame) -> pd.DataFrame:
    """Per task: the best core neuron by its centre and its comparison with the runner-up. ``winner`` is
    named only when that comparison is decided; otherwise ``indistinguishable`` lists the neurons the rule
    cannot tell from the best. A nothing-learned task has no winner."""
    c, rows = core(df), []
    done = learned(c)
    for task, (g, cmp) in against_the_best(c).items():
        best, second = g.iloc[0], g.iloc[min(1, len(g) - 1)]
        top = cmp[cmp["baseline"] == second["model"]]
        outcome = top["outcome"].iloc[0] if len(top) else "undecided"
        close = [best["model"], *cmp.loc[cmp["outcome"] != "better", "baseline"]]
        rows.append({
            "task": task, "kind": TASKS[task].kind if task in TASKS else "unknown", "metric": best["metric"],
            "learned": done.get(task, True), "trivial": best["trivial"], "best": best["model"],
            "runner_up": second["model"], "best_mean": best["mean"], "runner_up_mean": second["mean"],
            "outcome": outcome, "interval": top["text"].iloc[0] if len(top) else "",
            "winner": best["model"] if outcome == "better" else "",
            "indistinguishable": ", ".join(close) if outcome != "better" else "",
            "p": top["p"].iloc[0] if len(top) else math.nan,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=REGIME_COLUMNS)


def regime_text(r: object) -> str:
    """One task of the regime map in words: its decided winner, or who cannot be told apart, or nothing."""
    if r.outcome == NOTHING_LEARNED:
        return f"{r.task}: nothing learned (no model beats the trivial reference)"
    if r.outcome == "tie":
        why = "at float precision" if r.best_mean <= FLOAT_FLOOR else "(the same result in every seed)"
        return f"{r.task}: {r.indistinguishable} tie {why}"
    if r.winner:
        return f"{r.task}: {r.winner} over {r.runner_up} ({r.interval})"
    return f"{r.task}: undecided among {r.indistinguishable}"


def regime_by_kind(regime: pd.DataFrame) -> pd.DataFrame:
    """Per kind of task the neuron(s) decided best on most of its tasks, and every task in words."""
    rows = []
    for kind, g in regime.groupby("kind", sort=False):
        decided = g[g["winner"].astype(str).ne("")]
        counts = decided["winner"].value_counts()
        top = [w for w in dict.fromkeys(decided["winner"]) if counts[w] == counts.max()]  # in task order
        rows.append({
            "kind": kind, "winner": " / ".join(top) or "none decided",
            "decided": f"{int(counts.max()) if top else 0} of {len(g)}",
            "tasks": "; ".join(regime_text(r) for r in g.itertuples()),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=["kind", "winner", "decided", "tasks"])


def precision_notes(df: pd.DataFrame) -> list[str]:
    """Where two or more neurons reach an MSE at float precision, a sentence: their ratio is no finding; and
    the tasks on which nothing was learned."""
    notes, c = [], core(df)
    for task, g in c[c["metric"] == "mse"].groupby("task", sort=False):
        for value, label in (("value", "test"), ("train_value", "train")):
            means = g.groupby("model")[value].apply(lambda v: centre(v, "mse"))
            low = means[means <= FLOAT_FLOOR]
            if len(low) >= 2:
                notes.append(
                    f"{task}: {len(low)} of {len(means)} neurons reach {label} MSE at or below "
                    f"{FLOAT_FLOOR:g}, i.e. float precision; comparisons between them are ties, not findings "
                    "(protocol §4)"
                )
                break
    notes += [
        f"{task}: nothing learned: no neuron beats the trivial reference in a majority of seeds, so no "
        "finding "
        "counts a comparison on it (protocol §4)"
        for task in nothing_learned(df)
    ]
    return notes


def relative_to_vanilla(df: pd.DataFrame) -> pd.DataFrame:
    """Neuron × task: log10(geometric-mean MSE ÷ vanilla's), or accuracy − vanilla's in points, with a
    first row ``trivial`` for the task's trivial reference on the same scale; NaN at float precision."""
    cells = {}
    for task, g in aggregate(core(df)).groupby("task", sort=False):
        base = g.loc[g["model"] == "vanilla", "mean"]
        if not len(base):
            continue
        v = base.iloc[0]
        rows = [*g[["model", "mean", "metric"]].itertuples(index=False, name=None)]
        rows.append(("trivial", g["trivial"].iloc[0], g["metric"].iloc[0]))
        for model, mean, metric in rows:
            if metric == "accuracy":
                cells[(model, task)] = 100 * (mean - v)
            elif not (mean <= FLOAT_FLOOR and v <= FLOAT_FLOOR) or model == "vanilla":
                cells[(model, task)] = np.log10(mean / v) if mean > 0 and v > 0 else np.nan
    table = pd.Series(cells, dtype=float).unstack() if cells else pd.DataFrame()
    return table.reindex(
        index=[n for n in ("trivial", *NEURONS) if n in table.index], columns=[t for t in TASKS if t in table]
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
    """Per neuron on ``ood``: geometric means over seeds of OOD MSE, in-distribution MSE and their ratio (the
    degradation factor, with its range)."""
    c, rows = core(df), []
    c = c[(c["task"] == "ood") & c["id_value"].notna()]
    for neuron, g in c.groupby("neuron", sort=False):
        ratio = (g["value"] / g["id_value"]).astype(float)
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        if len(ratio):
            rows.append([neuron, centre(g["value"], "mse"), centre(g["id_value"], "mse"),
                         centre(ratio, "degradation"), ratio.min(), ratio.max(), len(ratio),
                         neuron_info(neuron)["periodic"]])  # fmt: skip
    columns = ["neuron", "ood_mse", "id_mse", "factor", "low", "high", "seeds", "periodic"]
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

    number: int  # 1-6 in the original's order; 0 for a control the original did not run
    finding: str
    verdict: str  # supported, contradicted, mixed or undecided (stats.VERDICTS)
    evidence: str
    table: pd.DataFrame  # every comparison behind it, with its interval and outcome after Holm


def with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """A finding's comparisons with ``decision``: each outcome after Holm's correction over all of them."""
    if table.empty:
        return table.assign(decision=pd.Series(dtype=str))
    return table.assign(decision=holm_outcomes(table["outcome"], table["p"]).to_numpy())


def listed(table: pd.DataFrame, outcome: str, label: str | None = "baseline") -> str:
    """``v10_free_phase on spiral, …`` (or only tasks): the comparisons whose Holm decision is ``outcome``."""
    d = table[table["decision"] == outcome]
    return ", ".join(f"{r[label]} on {r['task']}" if label else r["task"] for _, r in d.iterrows()) or "none"


def capacity_rows(df: pd.DataFrame) -> pd.DataFrame:
    """notebooks/capacity's binary-label records as compare rows: task ``capacity``, value = bits/param."""
    columns = ["task", "metric", "budget", "model", "seed", "value"]
    if "bits_per_param" not in df:
        return pd.DataFrame(columns=columns)
    cap = df[is_capacity(df) & df["task"].eq("capacity_binary") & df["bits_per_param"].notna()]
    cap = cap.assign(
        task="capacity", metric="bits_per_param", model=cap["neuron"], value=cap["bits_per_param"]
    )
    cap = cap.fillna({"budget": 0, "seed": 0})
    return cap.groupby(["task", "metric", "budget", "model", "seed"], as_index=False)["value"].mean()


def finding_capacity(df: pd.DataFrame) -> Finding:
    """(1) SinGLU stores more per parameter than ReLU: bits per parameter per budget (paired by seed), and
    memorize's train MSE, set against the original's 168,327× and read as lower bounds."""
    cap = pairs(capacity_rows(df), "singlu", ["vanilla"])
    mem = pairs(core(df), "singlu", ["vanilla"], ["memorize"], value="train_value")
    table = with_holm(pd.concat([x for x in (cap, mem) if len(x)] or [cap], ignore_index=True))
    t = claim(table)
    parts = [
        f"bits/parameter at budget {int(r.budget)}: singlu {r.model_mean:.3g} vs vanilla "
        f"{r.baseline_mean:.3g} (ratio ×{10**r.diff:.2f} [{10**r.low:.2f}, {10**r.high:.2f}]; {r.text}; "
        f"{r.decision})"
        for r in table[table["task"] == "capacity"].itertuples()
    ] or ["no capacity records (notebooks/capacity) in this run"]
    parts += [
        f"memorize train MSE: singlu and vanilla both ≤ {FLOAT_FLOOR:g} ({r.decision}: float precision, so "
        f"the original's {ORIGINAL_MEMORIZE_RATIO:,}× ratio of two such MSEs is not a "
        "measurement)" if r.decision == "tie" else
        f"memorize train MSE: singlu {r.model_mean:.3g} vs vanilla {r.baseline_mean:.3g} ({r.decision})"
        for r in table[table["task"] == "memorize"].itertuples()
    ]  # fmt: skip
    evidence = f"{t.text()}; " + "; ".join(parts)
    cap = df[is_capacity(df) & df["neuron"].isin(["singlu", "vanilla"])]
    bound = cap[cap["lower_bound"].eq(True)] if "lower_bound" in cap else cap  # NaN: not checked
    pairs_ = dict.fromkeys(zip(bound["neuron"], bound["budget"], strict=True))
    where = ", ".join(f"{n} at {int(b)}" for n, b in pairs_)
    evidence += (
        "; these capacities were not checked for convergence" if "lower_bound" not in cap else
        f"; lower bounds (a convergence check fitted 10% more points, docs/protocol.md §8): {where}, so a "
        "ratio involving one can be off either way" if len(bound) else
        "; every singlu and vanilla capacity passed the convergence checks (docs/protocol.md §8)"
    )  # fmt: skip
    return Finding(1, "SinGLU stores more per parameter than ReLU", t.verdict, evidence, table)


def count_verdict(agree: int, open_: int, need: int) -> str:
    """A count claim ("at least ``need`` wins"): supported when the decided wins reach ``need``, contradicted
    when they cannot even if every undecided comparison (``open_``) went its way, undecided otherwise."""
    return "supported" if agree >= need else "contradicted" if agree + open_ < need else "undecided"


def finding_standard_wins(df: pd.DataFrame) -> Finding:
    """(2) In two halves, as the original states it: (a) SinGLU beats ReLU on 5 of the 6 standard tasks;
    (b) no neuron wins everything (no neuron is the decided best on every learned standard task)."""
    c = core(df)
    a = with_holm(pairs(c, "singlu", ["vanilla"], STANDARD_TASKS))
    ta = claim(a)
    k, n = ORIGINAL_STANDARD_WINS
    # "5 of 6" is "all but one": ties at float precision and nothing-learned tasks can be won by nobody
    testable = len(a) - ta.nothing_learned - ta.ties
    need = max(1, testable - (n - k))
    half_a = count_verdict(ta.agree, ta.undecided, need) if testable else "undecided"
    regime = regime_map(df)
    std = regime[regime["task"].isin(STANDARD_TASKS) & regime["learned"]]
    std = std.assign(decision=holm_outcomes(std["outcome"], std["p"]).to_numpy()) if len(std) else std
    won = std[std["decision"] == "better"] if len(std) else std
    winners = won["best"] if len(std) else pd.Series(dtype=str)
    if winners.nunique() >= 2:
        half_b = "supported"
    elif len(std) >= 2 and len(winners) == len(std):
        half_b = "contradicted"  # one neuron decided best on every learned standard task
    else:
        half_b = "undecided"
    evidence = (
        f"(a) singlu against vanilla on the standard tasks: {ta.text()}; better on "
        f"{listed(a, 'better', None)}, worse on {listed(a, 'worse', None)}; the claim needs {need} decided "
        f"wins of {testable} learned, untied tasks "
        f"({k} of {n} in the original): **{half_a}**. (b) decided best after Holm on "
        f"{len(winners)} of {len(std)} learned standard tasks "
        f"({', '.join(f'{r.task}: {r.best}' for r in won.itertuples()) or 'none'}); "
        f"no neuron wins everything: **{half_b}**"
    )
    claim_text = "SinGLU beats ReLU on 5 of the 6 standard tasks, but no neuron wins everything"
    table = pd.concat([a.assign(half="a"), std.assign(half="b")], ignore_index=True)
    return Finding(2, claim_text, combine(half_a, half_b), evidence, table)


def finding_adaptive(df: pd.DataFrame) -> Finding:
    """(3) Adaptive neurons (v6–v13, v15) do not beat SinGLU at default budgets; v14's sweep beside it."""
    c = core(df)
    adaptive = [n for n in ADAPTIVE if n in set(c["neuron"])]
    table = with_holm(pairs(c, "singlu", adaptive).assign(scope="standard budget"))
    t = claim(table)
    evidence = (
        f"singlu against each adaptive neuron on each task: {t.text()}; adaptive neurons decided better than "
        f"singlu: {listed(table, 'worse')}"
    )
    sweep = with_holm(pairs(budget_sweep(df), "singlu", adaptive))
    if sweep["budget"].nunique() > 1:
        by_budget = [f"{claim(g).text()} at {b}" for b, g in sweep.groupby("budget")]
        evidence += "; v14's budget sweep, singlu against the adaptive neurons: " + "; ".join(by_budget)
        table = pd.concat([table, sweep.assign(scope="budget sweep")], ignore_index=True)
    claim_text = "Adaptive mechanisms (v6–v13, v15) fail at small scale: they do not beat SinGLU"
    return Finding(3, claim_text, t.verdict, evidence, table)


def width_loss(df: pd.DataFrame) -> pd.DataFrame:
    """Per (neuron, task, budget) with k ≥ 2 full matrices: width relative to vanilla's and the loss per extra
    matrix ``1 − (w / w_vanilla)^(1/(k−1))`` (low-rank neurons left out: their matrices are not full)."""
    w = widths(df)
    w = w[~w["factorised"] & w["matrices"].notna()]
    base = w[w["neuron"] == "vanilla"].set_index(["task", "budget"])["width"]
    w = (
        w[w["matrices"] >= 2]
        .join(base.rename("vanilla_width"), on=["task", "budget"])
        .dropna(subset=["vanilla_width"])
    )
    rel = w["width"] / w["vanilla_width"]
    return w.assign(relative=rel, loss_per_matrix=1 - rel ** (1 / (w["matrices"] - 1)))


def finding_width(df: pd.DataFrame) -> Finding:
    """(4) Each extra matrix costs width, ~35% per matrix, and the width costs accuracy: the measured loss
    per matrix against 35% ± WIDTH_TOLERANCE, and v03's v1_rich at its budget against v1_rich at vanilla's
    width (paired by seed)."""
    loss = width_loss(df)
    if loss.empty:
        width_verdict, width_text = "undecided", "no neuron with two or more matrices beside vanilla"
    else:
        mean = float(loss["loss_per_matrix"].mean())
        width_verdict = "supported" if abs(mean - ORIGINAL_WIDTH_LOSS) <= WIDTH_TOLERANCE else "contradicted"
        per_k = ", ".join(f"{int(k)} matrices {g.mean():.0%}"
                          for k, g in loss.groupby("matrices")["loss_per_matrix"])  # fmt: skip
        width_text = (
            f"width lost per extra matrix: {mean:.0%} on average (range "
            f"{loss['loss_per_matrix'].min():.0%} to {loss['loss_per_matrix'].max():.0%}; {per_k}) against "
            f"the original's ~{ORIGINAL_WIDTH_LOSS:.0%} "
            f"(± {WIDTH_TOLERANCE:.0%} points): **{width_verdict}**"
        )
    study = df[~is_capacity(df)]
    fixed = study[study["model"].astype(str).str.endswith("@ vanilla width")]
    cost = pd.DataFrame()
    for label, g in fixed.groupby("model"):
        neuron = g["neuron"].iloc[0]
        at_budget = study[(study["model"] == neuron) & study["width"].ne(g["width"].iloc[0])]
        both = pd.concat([g, at_budget[at_budget.set_index(["task", "budget", "seed"]).index.isin(
            g.set_index(["task", "budget", "seed"]).index)]])  # fmt: skip
        cost = pd.concat([cost, pairs(both, neuron, [label])], ignore_index=True)
    cost = with_holm(cost)
    if cost.empty:
        cost_verdict, cost_text = "undecided", "no run at vanilla's width (v03) to price the width"
    else:
        t = claim(cost, agree="worse")
        cost_verdict = t.verdict
        cost_text = (
            f"the price of the lost width (v03: {cost['model'].iloc[0]} at its budget against the same "
            f"neuron at vanilla's width): {t.text()}; worse at its budget on {listed(cost, 'worse', None)}: "
            f"**{cost_verdict}**"
        )
    claim_text = "Each extra matrix per unit costs width (~35% per matrix), and the width costs accuracy"
    table = pd.concat([loss.assign(part="width"), cost.assign(part="cost")], ignore_index=True)
    evidence = f"{width_text}; {cost_text}"
    return Finding(4, claim_text, combine(width_verdict, cost_verdict), evidence, table)


def finding_frequency(df: pd.DataFrame) -> Finding:
    """(5) SinGLU's fixed ω generalizes to unseen frequencies better than the adaptive-frequency neurons."""
    c = core(df)
    table = with_holm(pairs(c, "singlu", [n for n in FREQ_ADAPTIVE if n in set(c["neuron"])], FREQ_TASKS))
    t = claim(table)
    none = [task for task in FREQ_TASKS if task in nothing_learned(df)]
    evidence = f"singlu against each adaptive-frequency neuron at κ = 10π: {t.text()}"
    evidence += (
        f"; nothing learned on {', '.join(none)}: every model is at or above predicting 0 or the mean"
        if none
        else ""
    )
    claim_text = "A fixed frequency generalizes to unseen frequencies better than adaptive ones"
    return Finding(5, claim_text, t.verdict, evidence, table)


def finding_ood(df: pd.DataFrame) -> Finding:
    """(6) Periodic neurons degrade far more out of distribution than ReLU: each periodic neuron's OOD MSE
    against vanilla's (paired by seed), the degradation factor OOD ÷ in-distribution MSE beside it."""
    c = core(df)
    periodic = [n for n in dict.fromkeys(c["neuron"]) if neuron_info(n)["periodic"]]
    table = with_holm(pairs(c, "vanilla", periodic, ["ood"]))
    t = claim(table)
    f = ood_factors(df).set_index("neuron")
    van = f.loc["vanilla"] if "vanilla" in f.index else None
    evidence = f"vanilla against each periodic neuron on OOD test MSE: {t.text()}"
    if van is not None:
        per = f.loc[[n for n in periodic if n in f.index]]
        evidence += (
            f"; vanilla's OOD MSE {van['ood_mse']:.3g} (degradation factor {van['factor']:.3g}× over its "
            f"in-distribution {van['id_mse']:.2g}; the original's ~{ORIGINAL_OOD_FACTOR:g}×); periodic "
            f"neurons' OOD MSE {per['ood_mse'].min():.3g} to {per['ood_mse'].max():.3g}, factors "
            f"{per['factor'].min():.3g}× "
            f"to {per['factor'].max():.3g}×; periodic worse than vanilla: {listed(table, 'better')}"
        )
    if "ood" in nothing_learned(df):
        evidence += "; nothing learned on ood: no model beats the trivial reference there"
    claim_text = "Periodic neurons degrade far more out of distribution than ReLU"
    return Finding(6, claim_text, t.verdict, evidence, table)


def glu_control(df: pd.DataFrame) -> Finding:
    """Control: is SinGLU's gain the sine or the gate? SinGLU against the best GLU control of each task (by
    its centre), paired by seed, pooled with Holm."""
    c = core(df)
    controls = [n for n in GLU_CONTROLS if n in set(c["neuron"])]
    table = with_holm(compare_best(c, "singlu", controls))
    t = claim(table)
    evidence = (
        f"singlu against the best of {', '.join(controls) or 'no GLU control'} on each task: {t.text()}; "
        f"singlu better on {listed(table, 'better')}; worse on {listed(table, 'worse')}"
    )
    return Finding(0, "SinGLU's gain is the sine, not the gate: it beats the best GLU control", t.verdict,
                   evidence, table)  # fmt: skip


def all_findings(df: pd.DataFrame) -> list[Finding]:
    """The six findings, in the original study's order."""
    fns = (finding_capacity, finding_standard_wins, finding_adaptive, finding_width, finding_frequency,
           finding_ood)  # fmt: skip
    return [fn(df) for fn in fns]


# findings the tuning track cannot test, and why (the others are recomputed on its records by the same code)
UNTESTED_AFTER_TUNING = {
    1: "capacity and memorize are not tuned (memorize has no validation split)",
    4: "a width is set by the budget, which no training setting moves; its price needs v03's matched widths",
}
NOT_TESTED = "not tested"


def after_tuning(tuned: pd.DataFrame) -> list[Finding]:
    """The findings and the control recomputed on notebooks/tuned's records by the same functions and rule,
    where its neurons and tasks allow; the others say why they are not tested."""
    if tuned.empty:
        return []
    fns = {
        2: finding_standard_wins,
        3: finding_adaptive,
        5: finding_frequency,
        6: finding_ood,
        0: glu_control,
    }
    out = []
    for number in (1, 2, 3, 4, 5, 6, 0):
        if number in fns:
            out.append(fns[number](tuned))
        else:
            why = UNTESTED_AFTER_TUNING[number]
            out.append(Finding(number, "", NOT_TESTED, f"not tested after tuning: {why}", pd.DataFrame()))
    return out


def side_by_side(s: Summary) -> pd.DataFrame:
    """Every finding and the control: the verdict under the original protocol and after tuning."""
    tuned = {f.number: f for f in s.tuned}
    rows = [
        {"finding": f.number or "control", "claim": f.finding, "original protocol": f.verdict,
         "after tuning": tuned[f.number].verdict if f.number in tuned else "no tuned records",
         "after tuning: evidence": tuned[f.number].evidence if f.number in tuned else ""}
        for f in [*s.findings, s.control]
    ]  # fmt: skip
    return pd.DataFrame(rows).set_index("finding")


def decisions(s: Summary) -> pd.DataFrame:
    """Every verdict, regime entry and decided comparison of a summary: what must not change between two runs
    that differ only in rounding (``rnlib.analysis.agreement``)."""
    rows = []
    for f in [*s.findings, s.control]:
        rows.append({"what": f"finding {f.number}", "item": "verdict", "decision": f.verdict})
        if "decision" not in f.table:
            continue
        for r in f.table[f.table["decision"].isin(["better", "worse"])].to_dict("records"):
            budget = f" @ {int(r['budget'])}" if pd.notna(r.get("budget")) else ""
            scope = f" ({r['scope']})" if pd.notna(r.get("scope")) else ""
            model, other = r.get("model", r.get("best")), r.get("baseline", r.get("runner_up"))
            item = f"{model} vs {other} on {r['task']}{budget}{scope}"
            rows.append({"what": f"finding {f.number}", "item": item, "decision": r["decision"]})
    rows += [
        {"what": "regime", "item": r.task, "decision": r.winner or r.outcome} for r in s.regime.itertuples()
    ]
    return pd.DataFrame(rows, columns=["what", "item", "decision"])


@dataclass
class Summary:
    """Everything the summary notebook shows and exports."""

    records: pd.DataFrame  # deduplicated; ``notebooks`` names every notebook that produced a row
    main_table: pd.DataFrame
    skill: pd.DataFrame
    regime: pd.DataFrame
    regime_by_kind: pd.DataFrame
    findings: list[Finding]
    control: Finding  # SinGLU against the best GLU control
    notes: list[str]  # float-precision and nothing-learned caveats (protocol §4)
    runs: pd.DataFrame
    provenance: dict
    tuned: list[Finding] = field(default_factory=list)  # ``after_tuning``: empty without notebooks/tuned
    tuned_records: pd.DataFrame = field(default_factory=pd.DataFrame)  # notebooks/tuned's rows, as written
    tuned_regime: pd.DataFrame = field(default_factory=pd.DataFrame)  # the regime map of its tuned rows


def summarize(records: pd.DataFrame, runs: pd.DataFrame, environment: dict[str, str]) -> Summary:
    """Every table, map and verdict of a run from its raw records and its notebooks' metadata; the tuning
    track's records (notebooks/tuned) are read apart and give every finding a second verdict."""
    tuned = records[is_tuned(records)]
    df = deduplicate(records[~is_tuned(records)].drop(columns=list(TUNING_COLUMNS), errors="ignore"))
    regime = regime_map(df)
    tuned_regime = regime_map(tuned) if len(tuned) else pd.DataFrame()
    return Summary(df, main_table(df), skill(df), regime, regime_by_kind(regime), all_findings(df),
                   glu_control(df), precision_notes(df), runs, provenance(runs, environment),
                   after_tuning(tuned), tuned, tuned_regime)  # fmt: skip
