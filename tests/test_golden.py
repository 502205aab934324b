"""The declared versions against golden fingerprints (tests/golden/fingerprints.py says how they are made).

A failure here means the arithmetic of training (numerics) or what the analysis shows from fixed records
(analysis) changed: if on purpose, bump the version in rnlib/provenance.py and run ``make golden``; if not,
the change has a bug. Either way every cached result and job id would otherwise keep a stale identity.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

from golden import fingerprints  # tests/golden, on sys.path via tests/conftest.py

from rnlib.provenance import ANALYSIS_VERSION, NUMERICS_VERSION

BUMP = "bump {name} in rnlib/provenance.py and run `make golden` if the change is deliberate"


def stored(path) -> dict:
    """A golden file's content."""
    return json.loads(path.read_text())


def computed(which: str) -> dict:
    """Fingerprints computed now, in a fresh process with the pinned environment (``fingerprints.ENV``)."""
    command = [sys.executable, str(fingerprints.__file__), "--print", which]
    env = {**os.environ, **fingerprints.ENV}
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_numerics_fingerprints_hold_for_the_declared_numerics_version() -> None:
    golden = stored(fingerprints.NUMERICS_FILE)
    assert golden["numerics_version"] == NUMERICS_VERSION, (
        f"tests/golden/numerics.json is for NUMERICS_VERSION {golden['numerics_version']}, rnlib declares "
        f"{NUMERICS_VERSION}: run `make golden`"
    )
    now, want = computed("numerics"), golden["fingerprints"]
    new = sorted(now.keys() - want.keys())
    if new:  # a neuron added since: nothing of it is pinned yet, and nothing pinned moved
        note = f"no golden fingerprint yet for {len(new)} cases ({new[0]}, ...): `make golden` pins them"
        warnings.warn(note, stacklevel=1)
    fused_here = any(key.endswith("|fused") for key in now)
    missing = sorted(k for k in want.keys() - now.keys() if fused_here or not k.endswith("|fused"))
    assert not missing, f"golden cases no longer trained: {missing[:3]}"
    moved = sorted(k for k in now.keys() & want.keys() if now[k]["sha256"] != want[k]["sha256"])
    if moved:
        k = moved[0]
        neuron, task, step = k.split("|")
        what = ", ".join(
            f"{field} {want[k][field]!r} -> {now[k][field]!r}"
            for field in ("loss", "value", "sha256")  # the final loss, the test metric, weights and curve
            if now[k][field] != want[k][field]
        )
        raise AssertionError(
            f"training arithmetic changed: {neuron} on {task} ({step}): {what} ({len(moved)} of {len(now)} "
            "cases moved); " + BUMP.format(name="NUMERICS_VERSION")
        )


def test_analysis_fingerprints_hold_for_the_declared_analysis_version() -> None:
    golden = stored(fingerprints.ANALYSIS_FILE)
    assert golden["analysis_version"] == ANALYSIS_VERSION, (
        f"tests/golden/analysis.json is for ANALYSIS_VERSION {golden['analysis_version']}, rnlib declares "
        f"{ANALYSIS_VERSION}: run `make golden`"
    )
    now = fingerprints.analysis()
    moved = sorted(k for k in golden["fingerprints"] if now.get(k) != golden["fingerprints"][k])
    assert not moved, (
        f"the analysis of tests/golden/records.csv.gz changed in {', '.join(moved)}; "
        + BUMP.format(name="ANALYSIS_VERSION")
    )
