"""Do two runs of the study reach the same verdicts? ``python -m rnlib.analysis.agreement RUN_A RUN_B``.

Two runs that differ only in rounding (the fused step against autograd, another BLAS path) must give the same
verdicts and the same decided comparisons: a verdict that rounding can flip has to come out undecided
(protocol §6). This prints every verdict and decided comparison that differs and exits 1 if any does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd

from rnlib.analysis.report import load_run, notebook_facts, resolve_run_dir
from rnlib.analysis.summary import decisions
from rnlib.paths import VERSION_GLOB


def run_decisions(run_dir: str) -> pd.DataFrame:
    """The summary's ``decisions`` of a run folder, then each executed version notebook's verdict."""
    notebooks = sorted(resolve_run_dir(run_dir).glob(VERSION_GLOB))
    verdicts = [
        {"what": nb.stem, "item": "verdict", "decision": notebook_facts(nb)["verdict"]} for nb in notebooks
    ]
    return pd.concat([decisions(load_run(run_dir)), pd.DataFrame(verdicts)], ignore_index=True)


def disagreements(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Rows of two ``decisions`` tables that differ: ``decision_a`` / ``decision_b`` (NaN = absent)."""
    both = a.merge(b, on=["what", "item"], how="outer", suffixes=("_a", "_b"))
    return both[both["decision_a"].ne(both["decision_b"])].reset_index(drop=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Compare two run folders' verdicts; print the counts and every difference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    args = parser.parse_args(argv)
    a, b = run_decisions(args.run_a), run_decisions(args.run_b)
    diff = disagreements(a, b)
    for name, d in ((args.run_a, a), (args.run_b, b)):
        verdicts = d[d["item"] == "verdict"]
        decided = int(d["decision"].isin(["better", "worse"]).sum())
        print(f"{name}: " + ", ".join(f"{r.what} {r.decision}" for r in verdicts.itertuples()) +
              f"; {decided} decided comparisons")  # fmt: skip
    if diff.empty:
        print(f"agree: every verdict, regime entry and decided comparison ({len(a)} items) is the same")
        return 0
    print(f"{len(diff)} of {len(a)} items differ:")
    print(diff.to_string(index=False))
    return 1


if __name__ == "__main__":
    sys.exit(main())
