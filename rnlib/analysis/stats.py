"""The one comparison rule (docs/protocol.md §6) and the one way pooled comparisons become a verdict.

Every table mark, regime-map winner, notebook verdict and finding of the summary is decided here:
- ``paired``: model A against model B on one task, paired by seed. The difference is ``log10(MSE_A) −
  log10(MSE_B)`` (MSEs clipped at FLOAT_FLOOR first) or ``acc_A − acc_B`` in points; A is **better** when the
  95% Student-t interval of the mean paired difference lies entirely on A's side, **worse** when it lies on
  B's side, **undecided** otherwise; both MSEs at the float floor in every seed is a **tie**. Seeds where
  either run diverged (NaN or inf) are left out and counted.
- ``tally``: a claim that pools comparisons. Holm's step-down correction over its testable comparisons
  decides which of them count; the share that agrees with the claim gives the verdict, and too few decided
  comparisons (under 2, or under half of the testable ones) give **undecided**.
- ``learned``: a task on which no model beats its trivial reference in a majority of seeds is "nothing
  learned" (protocol §4); its comparisons are shown but never count for a claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from rnlib.core.catalog import lower_is_better

CONFIDENCE = 0.95  # protocol §6: a 95% interval, and Holm's family-wise level 1 − CONFIDENCE
FLOAT_FLOOR = 1e-8  # protocol §4: below it an MSE is float32 precision; two such MSEs tie
OUTCOMES = ("better", "worse", "undecided", "tie")
NOTHING_LEARNED = "nothing learned"  # a comparison on such a task: shown, never counted
SUPPORT_SHARE = 0.75  # a claim is supported when at least 3/4 of its decided comparisons agree with it,
CONTRA_SHARE = 0.25  # contradicted when at most 1/4 do, mixed in between,
MIN_DECIDED = 2  # and undecided when fewer than this many (or all, if fewer exist) are decided,
MIN_DECIDED_SHARE = 0.5  # or fewer than half of the testable ones: a claim carried by a few comparisons at
# the edge of Holm's thresholds flipped between a fused-step and an autograd run (docs/protocol.md §6)
VERDICTS = ("supported", "contradicted", "mixed", "undecided")


LOG_METRICS = ("mse", "bits_per_param", "degradation")  # compared as log10 ratios; the rest in points


def log_scale(metric: str) -> bool:
    """Whether a metric is compared on log10 (MSE, bits per parameter, ratios) or in points (accuracy)."""
    return metric in LOG_METRICS


def transform(values: np.ndarray | pd.Series, metric: str) -> np.ndarray:
    """The scale every comparison is made on: log10 (an MSE floored at FLOAT_FLOOR first), or points."""
    v = np.asarray(values, dtype=float)
    return np.log10(np.maximum(v, FLOAT_FLOOR)) if log_scale(metric) else 100.0 * v


def centre(values: np.ndarray | pd.Series, metric: str) -> float:
    """Geometric mean (MSE) or mean (accuracy) of the finite values: what every table shows and ranks."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return math.nan
    return float(10 ** np.log10(np.maximum(v, FLOAT_FLOOR)).mean()) if log_scale(metric) else float(v.mean())


def spread(values: np.ndarray | pd.Series, metric: str) -> float:
    """Geometric standard deviation factor (MSE, ×/÷) or standard deviation (accuracy), ddof 1."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return 1.0 if log_scale(metric) else 0.0
    if log_scale(metric):
        return float(10 ** np.log10(np.maximum(v, FLOAT_FLOOR)).std(ddof=1))
    return float(v.std(ddof=1))


def t_half(sd: float, n: int) -> float:
    """Half-width of the 95% Student-t interval of a mean of ``n`` values with standard deviation ``sd``."""
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * (sd / math.sqrt(n))


def interval(values: np.ndarray | pd.Series, metric: str) -> tuple[float, float, float]:
    """``centre`` and its 95% t-interval over the finite values, made on the comparison scale and mapped
    back (a geometric interval for log metrics); NaN bounds with fewer than 2 values."""
    v = np.asarray(values, dtype=float)
    t = transform(v[np.isfinite(v)], metric)
    if len(t) < 2:
        return centre(v, metric), math.nan, math.nan
    mean, half = float(t.mean()), t_half(float(t.std(ddof=1)), len(t))
    back = (lambda x: 10**x) if log_scale(metric) else (lambda x: x / 100.0)
    return back(mean), back(mean - half), back(mean + half)


@dataclass(frozen=True)
class Comparison:
    """A against B on one task: the mean paired difference (A − B on the metric's scale), its interval."""

    outcome: str  # one of OUTCOMES
    diff: float  # mean of log10(A) − log10(B), or of A − B in points
    low: float
    high: float
    p: float  # two-sided paired t-test; NaN when untestable (fewer than 2 pairs, or a tie)
    seeds: int  # pairs used
    excluded: int  # shared seeds left out because A or B diverged

    def text(self, metric: str) -> str:
        """``Δlog10 −0.31 [−0.52, −0.10], 3 seeds`` (or points), with left-out seeds."""
        unit = "Δlog10" if log_scale(metric) else "Δ points"
        ci = f" [{self.low:+.2f}, {self.high:+.2f}]" if np.isfinite(self.low) else ""
        left = f", {self.excluded} diverged seed(s) left out" if self.excluded else ""
        return f"{unit} {self.diff:+.2f}{ci}, {self.seeds} seeds{left}"


def paired(a: pd.Series, b: pd.Series, metric: str) -> Comparison:
    """Protocol §5's rule for ``a`` against ``b`` (each indexed by seed) on ``metric``."""
    seeds = a.index.intersection(b.index)
    va, vb = a.loc[seeds].to_numpy(dtype=float), b.loc[seeds].to_numpy(dtype=float)
    ok = np.isfinite(va) & np.isfinite(vb)
    va, vb, n, excluded = va[ok], vb[ok], int(ok.sum()), int((~ok).sum())
    if n == 0:
        return Comparison("undecided", math.nan, math.nan, math.nan, math.nan, 0, excluded)
    if metric == "mse" and (va < FLOAT_FLOOR).all() and (vb < FLOAT_FLOOR).all():
        return Comparison("tie", 0.0, 0.0, 0.0, math.nan, n, excluded)
    d = transform(va, metric) - transform(vb, metric)
    mean = float(d.mean())
    if n < 2:
        return Comparison("undecided", mean, math.nan, math.nan, math.nan, n, excluded)
    sd = float(d.std(ddof=1))
    if sd == 0.0:  # the same difference in every seed: a point interval
        outcome = "tie" if mean == 0.0 else side(mean, metric)
        return Comparison(outcome, mean, mean, mean, math.nan if mean == 0.0 else 0.0, n, excluded)
    se = sd / math.sqrt(n)
    half = t_half(sd, n)
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    low, high = mean - half, mean + half
    outcome = side(mean, metric) if low > 0 or high < 0 else "undecided"
    return Comparison(outcome, mean, low, high, p, n, excluded)


def side(diff: float, metric: str) -> str:
    """``better`` when a difference A − B favours A (lower MSE, higher accuracy), else ``worse``."""
    return "better" if (diff < 0) == lower_is_better(metric) else "worse"


def holm(p: np.ndarray | pd.Series, alpha: float = 1 - CONFIDENCE) -> np.ndarray:
    """Holm's step-down rejections at family-wise level ``alpha`` (NaN p-values are never rejected)."""
    p = np.asarray(p, dtype=float)
    p = np.where(np.isfinite(p), p, np.inf)
    m, rejected = len(p), np.zeros(len(p), dtype=bool)
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


@dataclass(frozen=True)
class Tally:
    """A pooled claim: its comparisons after Holm, and the verdict they give."""

    verdict: str  # one of VERDICTS
    agree: int  # decided after Holm, in the claim's direction
    against: int  # decided after Holm, against it
    undecided: int  # testable but not decided (including those Holm's correction took back)
    ties: int
    nothing_learned: int  # on a task where no model beat its trivial reference: not counted
    total: int

    def text(self) -> str:
        """``2 agree, 1 against, 5 undecided, 1 tie (9 comparisons; 95% paired t-intervals, Holm)``."""
        parts = [f"{self.agree} agree", f"{self.against} against", f"{self.undecided} undecided"]
        parts += [f"{self.ties} tie{'s' * (self.ties != 1)}"] if self.ties else []
        parts += [f"{self.nothing_learned} on nothing-learned tasks"] if self.nothing_learned else []
        plural = "s" * (self.total != 1)
        return (
            f"{', '.join(parts)} ({self.total} comparison{plural}; 95% paired t-intervals over seeds, Holm)"
        )


def holm_outcomes(outcomes: pd.Series, p: pd.Series) -> pd.Series:
    """Outcomes after Holm's correction over the testable ones: a decided one Holm does not reject becomes
    ``undecided``; ties and nothing-learned stay as they are. Works by position (any index)."""
    values = outcomes.to_numpy(dtype=object).copy()
    testable = np.isin(values, ["better", "worse", "undecided"])
    kept = np.zeros(len(values), dtype=bool)
    kept[testable] = holm(np.asarray(p, dtype=float)[testable])
    values[testable & np.isin(values, ["better", "worse"]) & ~kept] = "undecided"
    return pd.Series(values, index=outcomes.index, name=outcomes.name)


def tally(outcomes: pd.Series, p: pd.Series, agree: str = "better") -> Tally:
    """The verdict of a claim that ``agree`` (``better`` or ``worse``) holds over pooled comparisons."""
    held = holm_outcomes(outcomes, p)
    against = "worse" if agree == "better" else "better"
    n_agree, n_against = int((held == agree).sum()), int((held == against).sum())
    undecided, ties = int((held == "undecided").sum()), int((held == "tie").sum())
    return Tally(
        share_verdict(n_agree, n_against, undecided),
        n_agree, n_against, undecided, ties, int((held == NOTHING_LEARNED).sum()), len(held),
    )  # fmt: skip


def share_verdict(agree: int, against: int, undecided: int) -> str:
    """Supported / contradicted / mixed by the share of decided comparisons that agree; undecided when too
    few of the testable ones (decided or undecided; ties and nothing-learned say nothing) are decided: fewer
    than MIN_DECIDED (or all, if fewer exist) or fewer than MIN_DECIDED_SHARE of them."""
    decided = agree + against
    testable = decided + undecided
    if decided == 0 or decided < min(MIN_DECIDED, testable) or decided < MIN_DECIDED_SHARE * testable:
        return "undecided"
    share = agree / decided
    return "supported" if share >= SUPPORT_SHARE else "contradicted" if share <= CONTRA_SHARE else "mixed"


def combine(*verdicts: str) -> str:
    """A claim made of parts that must all hold: contradicted if any part is, undecided if any part is (and
    none contradicted), supported if all are, mixed otherwise."""
    if "contradicted" in verdicts:
        return "contradicted"
    if "undecided" in verdicts:
        return "undecided"
    return "supported" if all(v == "supported" for v in verdicts) else "mixed"


def either(*verdicts: str) -> str:
    """A claim that one of several alternatives holds: supported if any is, contradicted if all are,
    undecided if any is (and none supported), mixed otherwise."""
    if "supported" in verdicts:
        return "supported"
    if all(v == "contradicted" for v in verdicts):
        return "contradicted"
    return "undecided" if "undecided" in verdicts else "mixed"


def overtakes(small: str, large: str) -> str:
    """A budget effect ("loses at the small budget, wins at the large one") from the verdicts of "beats the
    baselines" at the two budgets: supported when the large budget's is supported and the small one's is
    contradicted or mixed; contradicted when it already holds at the small budget (nothing to overtake) or
    fails at the large one; undecided otherwise."""
    if small == "supported" or large in ("contradicted", "mixed"):
        return "contradicted"
    return "supported" if large == "supported" and small in ("contradicted", "mixed") else "undecided"


def learned(records: pd.DataFrame) -> dict[str, bool]:
    """Per task: does some model beat the task's trivial reference (``trivial_value``) in a majority of its
    seeds? A diverged seed does not beat it; records without a reference count as learned."""
    out = {}
    for task, g in records.groupby("task", sort=False):
        ref = g["trivial_value"].astype(float) if "trivial_value" in g else pd.Series(np.nan, index=g.index)
        if ref.isna().all():
            out[task] = True
            continue
        v = g["value"].astype(float)
        beats = (v < ref) if lower_is_better(g["metric"].iloc[0]) else (v > ref)
        share = (beats & np.isfinite(v)).groupby(g["model"]).mean()
        out[task] = bool((share > 0.5).any())
    return out
