"""Golden fingerprints that keep the declared versions of rnlib.provenance honest.

``numerics``: every registered neuron trains a few steps on three small cases (a one-output MSE head, a
two-logit cross-entropy head, an 8 -> 4 MSE head) with each step this machine can take (the fused step where
it covers the neuron, and autograd). Each case keeps its final loss, metric and how far its weights moved,
and a sha256 of the final weights, the loss curve and the metrics. Two checks, ``tests/test_golden.py``:

- **values, on every machine**: the loss, metric and weight movement (``VALUES``) within ``TOLERANCE``
  (relative) of the stored ones. CPUs round differently: an AMD EPYC and the machines that wrote the first
  fingerprints differ in every hash, by at most 2.1e-7 of a value after these 6 steps, 50 times below
  ``TOLERANCE``; a 0.1% larger learning rate (``--lr-factor``) moves every case by at least 4e-4;
- **bits, on each pinned platform**: the hashes equal those stored for this platform (``platform()``: CPU
  vendor, ATen's vector capability and a hash of a few kernels' output), so a change that only reorders a sum
  is caught too, on any machine of a kind someone pinned. ``make golden`` pins the machine it runs on and
  keeps the other platforms' hashes while ``NUMERICS_VERSION`` is unchanged; a bump drops them.

Run in a fresh process with ``MKL_CBWR=AVX2`` (``ENV``), so MKL takes the same GEMM code path on AVX2 and
AVX-512 Intel CPUs.

``analysis``: the summary (tables, regime map, every finding's verdict and evidence) of a fixed set of records
(``records.csv.gz``, the canonical run's records when this was written). A change of what the analysis shows
from the same records changes them: bump ``ANALYSIS_VERSION`` and regenerate.

    make golden        # = MKL_CBWR=AVX2 python tests/golden/fingerprints.py --write
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NUMERICS_FILE, ANALYSIS_FILE, RECORDS = (
    HERE / "numerics.json",
    HERE / "analysis.json",
    HERE / "records.csv.gz",
)
ENV = {"MKL_CBWR": "AVX2"}  # one GEMM code path on Intel's AVX2 and AVX-512 CPUs
VALUES = ("loss", "value", "moved")  # kept in clear per case: final loss, test metric, ‖weights − initial‖
TOLERANCE = 1e-5  # relative: CPUs differ by ≤ 2.1e-7 on these cases; a real change of arithmetic moves more
CASES = (("nested2d", 1.0), ("spiral", 3.0), ("memorize", 2.5))  # (task, ω): the three head kinds
WIDTH, STEPS, SEEDS, LR = 12, 6, (0, 1), 1e-2  # small and stated: a few ms per case


def digest(*parts: object) -> str:
    """A short sha256 of the parts' JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def platform() -> str:
    """What decides a training's bits here: CPU vendor, ATen's vector capability, and a hash of a batched
    matmul, the activations' kernels and a LayerNorm on fixed inputs, one thread (``GenuineIntel AVX512
    3f2a…``)."""
    import torch

    vendor = "unknown"
    with contextlib.suppress(OSError):
        found = re.search(r"^vendor_id\s*:\s*(\S+)", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        vendor = found.group(1) if found else vendor
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    a, w, c = (torch.randn(*shape, generator=g, dtype=torch.float64).float()
               for shape in ((3, 64, 48), (3, 48, 64), (3, 1, 64)))  # fmt: skip
    h = torch.baddbmm(c, a, w)  # (3, 64, 64): the trainer's batched layer
    outs = [h, h.sigmoid(), h.tanh(), h.sin(), h.cos(), h.exp(), torch.nn.functional.layer_norm(h, (64,))]
    digest_ = hashlib.sha256(b"".join(o.contiguous().numpy().tobytes() for o in outs)).hexdigest()[:8]
    return f"{vendor} {torch.backends.cpu.get_cpu_capability()} {digest_}"


def numerics(lr_factor: float = 1.0) -> dict[str, dict[str, object]]:
    """``neuron|task|step`` -> fingerprint, for every registered neuron and every step that can train it
    (``lr_factor`` scales the learning rate: what a small real change of the arithmetic does)."""
    import torch

    from rnlib.core.models import build_model
    from rnlib.core.neurons import NEURONS
    from rnlib.core.tasks import TASKS
    from rnlib.training import fused
    from rnlib.training.trainer import TrainConfig, train_models

    torch.set_num_threads(1)
    out: dict[str, dict[str, object]] = {}
    for neuron in NEURONS:
        for task, omega in CASES:
            for step in ("fused", "autograd"):
                if step == "fused" and neuron not in fused.fused_neurons():
                    continue
                config = TrainConfig(steps=STEPS, lr=LR * lr_factor, record_every=0, step=step)
                spec = TASKS[task]
                start = build_model(neuron, spec.in_dim, spec.out_dim, width=WIDTH, seeds=SEEDS, omega=omega)
                net, runs = train_models(neuron, task, SEEDS, width=WIDTH, omega=omega, config=config)
                h = hashlib.sha256()
                for name, p in net.named_parameters():
                    h.update(name.encode())
                    h.update(p.detach().contiguous().numpy().tobytes())
                for r in runs:
                    h.update(json.dumps([r.curve, r.value, r.train_value]).encode())
                moved = sum(  # how far training moved the weights: proportional to the learning rate
                    float((p.detach().double() - q.detach().double()).square().sum())
                    for p, q in zip(net.parameters(), start.parameters(), strict=True)
                )
                out[f"{neuron}|{task}|{step}"] = {
                    "sha256": h.hexdigest()[:16],
                    "loss": runs[0].curve[-1][1],
                    "value": runs[0].value,
                    "moved": moved**0.5,
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


def measured(lr_factor: float = 1.0) -> dict[str, object]:
    """This machine's platform and every case's fingerprint: what ``--print numerics`` shows."""
    return {"platform": platform(), "fingerprints": numerics(lr_factor)}


def pinned(now: dict[str, object], before: dict | None) -> dict[str, object]:
    """numerics.json's content: each case's ``VALUES``, and per platform its hashes. While
    ``NUMERICS_VERSION`` is unchanged, stored values and other platforms' hashes are kept (so values that
    moved without a bump still fail); a new version starts from this machine alone."""
    cases = now["fingerprints"]
    keep = before if before and before.get("numerics_version") == versions()["numerics_version"] else None
    values = {k: {name: v[name] for name in VALUES} for k, v in cases.items()}
    platforms = dict(keep["platforms"]) if keep else {}
    if keep:
        values.update(keep["fingerprints"])
    platforms[now["platform"]] = {k: v["sha256"] for k, v in cases.items()}
    return {**versions(), "fingerprints": dict(sorted(values.items())), "platforms": platforms}


def main(argv: list[str] | None = None) -> int:
    """``--write`` regenerates both files (pinning this platform); ``--print numerics|analysis`` prints one
    as JSON (tests), ``--lr-factor`` scaling the learning rate of the numerics cases."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate numerics.json and analysis.json")
    parser.add_argument("--print", choices=("numerics", "analysis"), dest="show")
    parser.add_argument("--lr-factor", type=float, default=1.0, help="scale the numerics cases' lr (tests)")
    args = parser.parse_args(argv)
    if args.show:
        print(json.dumps(measured(args.lr_factor) if args.show == "numerics" else analysis(), sort_keys=True))
    if args.write:
        before = json.loads(NUMERICS_FILE.read_text()) if NUMERICS_FILE.exists() else None
        now = measured()
        numerics_file = pinned(now, before)
        for path, content in (
            (NUMERICS_FILE, numerics_file),
            (ANALYSIS_FILE, {**versions(), "fingerprints": analysis()}),
        ):
            path.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
            print(f"wrote {path.relative_to(HERE.parents[1])}: {len(content['fingerprints'])} fingerprints")
        others = len(numerics_file["platforms"]) - 1
        print(f"numerics pinned bit for bit on {now['platform']} and {others} other platform(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
