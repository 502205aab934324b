"""The declared versions against golden fingerprints (tests/golden/fingerprints.py says how they are made).

A failure here means the arithmetic of training (numerics) or what the analysis shows from fixed records
(analysis) changed: if on purpose, bump the version in rnlib/provenance.py and run ``make golden``; if not,
the change has a bug. Either way every cached result and job id would otherwise keep a stale identity.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import warnings

import pytest
from golden import fingerprints  # tests/golden, on sys.path via tests/conftest.py

from rnlib.provenance import ANALYSIS_VERSION, NUMERICS_VERSION

BUMP = "bump {name} in rnlib/provenance.py and run `make golden` if the change is deliberate"


def stored(path) -> dict:
    """A golden file's content."""
    return json.loads(path.read_text())


@functools.cache
def computed(which: str, *args: str) -> dict:
    """Fingerprints computed now, in a fresh process with the pinned environment (``fingerprints.ENV``)."""
    command = [sys.executable, str(fingerprints.__file__), "--print", which, *args]
    env = {**os.environ, **fingerprints.ENV}
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def numerics_golden() -> dict:
    """numerics.json, checked to be for the declared NUMERICS_VERSION."""
    golden = stored(fingerprints.NUMERICS_FILE)
    assert golden["numerics_version"] == NUMERICS_VERSION, (
        f"tests/golden/numerics.json is for NUMERICS_VERSION {golden['numerics_version']}, rnlib declares "
        f"{NUMERICS_VERSION}: run `make golden`"
    )
    return golden


def moved_values(now: dict, want: dict) -> list[str]:
    """The cases whose loss, metric or weight movement left ``fingerprints.TOLERANCE`` of the stored ones,
    as ``case: field stored -> now``."""
    return [
        f"{k}: {field} {want[k][field]!r} -> {now[k][field]!r}"
        for k in sorted(now.keys() & want.keys())
        for field in fingerprints.VALUES
        if not math.isclose(now[k][field], want[k][field], rel_tol=fingerprints.TOLERANCE, abs_tol=1e-12)
    ]


def test_numerics_values_hold_on_every_machine() -> None:
    golden = numerics_golden()
    now, want = computed("numerics")["fingerprints"], golden["fingerprints"]
    new = sorted(now.keys() - want.keys())
    if new:  # a neuron added since: nothing of it is pinned yet, and nothing pinned moved
        note = f"no golden fingerprint yet for {len(new)} cases ({new[0]}, ...): `make golden` pins them"
        warnings.warn(note, stacklevel=1)
    fused_here = any(key.endswith("|fused") for key in now)
    missing = sorted(k for k in want.keys() - now.keys() if fused_here or not k.endswith("|fused"))
    assert not missing, f"golden cases no longer trained: {missing[:3]}"
    moved = moved_values(now, want)
    assert not moved, (
        f"training arithmetic changed: {moved[0]} ({len(moved)} values moved beyond "
        f"{fingerprints.TOLERANCE:g}); " + BUMP.format(name="NUMERICS_VERSION")
    )


def test_numerics_bits_hold_on_a_pinned_platform() -> None:
    golden = numerics_golden()
    here = computed("numerics")
    pinned = golden["platforms"].get(here["platform"])
    if pinned is None:
        pytest.skip(f"bits not pinned on this platform ({here['platform']}; pinned: "
                    f"{', '.join(golden['platforms'])}); `make golden` here pins them")  # fmt: skip
    now = here["fingerprints"]
    moved = sorted(k for k in now.keys() & pinned.keys() if now[k]["sha256"] != pinned[k])
    if moved:
        k = moved[0]
        neuron, task, step = k.split("|")
        raise AssertionError(
            f"training arithmetic changed: {neuron} on {task} ({step}): sha256 {pinned[k]!r} -> "
            f"{now[k]['sha256']!r} ({len(moved)} of {len(now)} cases moved on {here['platform']}); "
            + BUMP.format(name="NUMERICS_VERSION")
        )


def test_numerics_values_catch_a_small_real_change() -> None:
    """A 0.1% larger learning rate moves every case beyond the tolerance: the values check can fail."""
    want = numerics_golden()["fingerprints"]
    changed = computed("numerics", "--lr-factor", "1.001")["fingerprints"]
    caught = {line.split(":")[0] for line in moved_values(changed, want)}
    assert caught == set(want) & set(changed), sorted(set(want) & set(changed) - caught)[:3]


def test_pinning_keeps_other_platforms_and_stored_values_until_the_version_changes() -> None:
    case = {"loss": 1.5, "value": 2.0, "moved": 3.0}  # its loss moved since `before` was written
    now = {"platform": "B", "fingerprints": {"n|t|s": {**case, "sha256": "b"}}}
    stored_values = {"n|t|s": {**case, "loss": 1.0}}
    before = {**fingerprints.versions(), "fingerprints": stored_values, "platforms": {"A": {"n|t|s": "a"}}}
    kept = fingerprints.pinned(now, before)
    assert kept["platforms"] == {"A": {"n|t|s": "a"}, "B": {"n|t|s": "b"}}
    assert kept["fingerprints"] == stored_values  # so the values check still fails until a bump
    bumped = fingerprints.pinned(now, {**before, "numerics_version": before["numerics_version"] - 1})
    assert bumped["platforms"] == {"B": {"n|t|s": "b"}}
    assert bumped["fingerprints"] == {"n|t|s": case}


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
