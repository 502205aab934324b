"""Golden fingerprints that keep the declared versions of rnlib.provenance honest.

``numerics``: every registered neuron trains a few steps on three small cases (a one-output MSE head, a
two-logit cross-entropy head, an 8 -> 4 MSE head) with each step this machine can take (the fused step where
it covers the neuron, and autograd); the fingerprint is a sha256 of the final weights, the loss curve and the
metrics, plus the final loss in clear so a failure says what moved. A change of training arithmetic changes
them: bump ``NUMERICS_VERSION`` and regenerate. Run in a fresh process with ``MKL_CBWR=AVX2`` (``ENV``), so
MKL takes the same GEMM code path on AVX2 and AVX-512 CPUs (unpinned, every fingerprint differs between them).

``analysis``: the summary (tables, regime map, every finding's verdict and evidence) of a fixed set of records
(``records.csv.gz``, the canonical run's records when this was written). A change of what the analysis shows
from the same records changes them: bump ``ANALYSIS_VERSION`` and regenerate.

    make golden        # = MKL_CBWR=AVX2 python tests/golden/fingerprints.py --write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NUMERICS_FILE, ANALYSIS_FILE, RECORDS = (
    HERE / "numerics.json",
    HERE / "analysis.json",
    HERE / "records.csv.gz",
)
ENV = {"MKL_CBWR": "AVX2"}  # one GEMM code path on every x86-64 CPU these machines have
CASES = (("nested2d", 1.0), ("spiral", 3.0), ("memorize", 2.5))  # (task, ω): the three head kinds
WIDTH, STEPS, SEEDS, LR = 12, 6, (0, 1), 1e-2  # small and stated: a few ms per case


def digest(*parts: object) -> str:
    """A short sha256 of the parts' JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def numerics() -> dict[str, dict[str, object]]:
    """``neuron|task|step`` -> fingerprint, for every registered neuron and every step that can train it."""
    import torch

    from rnlib.core.neurons import NEURONS
    from rnlib.training import fused
    from rnlib.training.trainer import TrainConfig, train_models

    torch.set_num_threads(1)
    out: dict[str, dict[str, object]] = {}
    for neuron in NEURONS:
        for task, omega in CASES:
            for step in ("fused", "autograd"):
                if step == "fused" and neuron not in fused.fused_neurons():
                    continue
                config = TrainConfig(steps=STEPS, lr=LR, record_every=0, step=step)
                net, runs = train_models(neuron, task, SEEDS, width=WIDTH, omega=omega, config=config)
                h = hashlib.sha256()
                for name, p in net.named_parameters():
                    h.update(name.encode())
                    h.update(p.detach().contiguous().numpy().tobytes())
                for r in runs:
                    h.update(json.dumps([r.curve, r.value, r.train_value]).encode())
                loss = runs[0].curve[-1][1]
                out[f"{neuron}|{task}|{step}"] = {
                    "sha256": h.hexdigest()[:16],
                    "loss": loss,
                    "value": runs[0].value,
                }
    return out


def analysis() -> dict[str, str]:
    """Output name -> digest of the summary of ``records.csv.gz``."""
    import pandas as pd

    from rnlib.analysis import summary
    from rnlib.records import TUNING_COLUMNS

    raw = pd.read_csv(RECORDS)
    tuned = raw[summary.is_tuned(raw)]
    records = summary.deduplicate(
        raw[~summary.is_tuned(raw)].drop(columns=list(TUNING_COLUMNS), errors="ignore")
    )
    regime = summary.regime_map(records)
    out = {
        "main_table": digest(summary.main_table(records).to_csv()),
        "regime": digest(regime.to_csv()),
        "regime_by_kind": digest(summary.regime_by_kind(regime).to_csv()),
        "notes": digest(summary.precision_notes(records)),
        "skill": digest(summary.skill(records).to_csv()),
    }
    for f in [*summary.all_findings(records), summary.glu_control(records)]:
        out[f"finding {f.number}"] = digest(f.verdict, f.evidence, f.table.to_csv())
    for f in summary.after_tuning(tuned):  # the tuning track (notebooks/tuned), when the records hold it
        out[f"after tuning {f.number}"] = digest(f.verdict, f.evidence, f.table.to_csv())
    if len(tuned):
        out["regime after tuning"] = digest(summary.regime_map(tuned).to_csv())
    return out


def versions() -> dict[str, int]:
    """The declared versions these fingerprints are for."""
    from rnlib.provenance import ANALYSIS_VERSION, NUMERICS_VERSION

    return {"numerics_version": NUMERICS_VERSION, "analysis_version": ANALYSIS_VERSION}


def main(argv: list[str] | None = None) -> int:
    """``--write`` regenerates both files; ``--print numerics|analysis`` prints one as JSON (tests)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate numerics.json and analysis.json")
    parser.add_argument("--print", choices=("numerics", "analysis"), dest="show")
    args = parser.parse_args(argv)
    if args.show:
        print(json.dumps(numerics() if args.show == "numerics" else analysis(), sort_keys=True))
    if args.write:
        for path, fingerprints in ((NUMERICS_FILE, numerics()), (ANALYSIS_FILE, analysis())):
            path.write_text(
                json.dumps({**versions(), "fingerprints": fingerprints}, indent=1, sort_keys=True) + "\n"
            )
            print(f"wrote {path.relative_to(HERE.parents[1])}: {len(fingerprints)} fingerprints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
