"""Tests for ``Study.run``'s progress bar: programs done of total and replicas trained vs from the cache, on
stderr; hidden under the batch runner's environment; never part of a record or a cache key."""

from pathlib import Path

import pytest

from rnlib.batch.runner import kernel_env
from rnlib.provenance import PROGRESS_ENV
from rnlib.training.cache import ResultCache
from rnlib.training.study import Study, show_progress


def study(tmp_path: Path, name: str, **kwargs: object) -> Study:
    """A tiny study (one seed, nested2d, 5 steps) on a result cache of its own in ``tmp_path``."""
    return Study(
        "vp", seeds=[0], tasks=["nested2d"], steps=5, records=tmp_path / f"{name}.records.csv",
        cache=ResultCache(tmp_path / "cache"), workers=1, **kwargs,
    )  # fmt: skip


def final_frame(err: str) -> str:
    """The bar as last drawn (tqdm redraws a text bar in place with carriage returns)."""
    return err.replace("\r", "\n").strip().splitlines()[-1]


def test_progress_counts_programs_done_and_replicas_trained_and_cached(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    study(tmp_path, "first").run(["vanilla"], progress=False)  # vanilla's replica is now cached
    assert capsys.readouterr().err == ""
    study(tmp_path, "second", progress=True).run(["vanilla", "singlu"])  # two programs, one trains
    err = capsys.readouterr().err
    frame = final_frame(err)
    assert frame.startswith("vp: 100%") and "2/2 [" in frame, err
    assert frame.endswith("replicas: 1 trained, 1 from cache]"), err


def test_the_runners_environment_hides_it_and_nothing_recorded_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = study(tmp_path, "shown", progress=True)
    shown.run(["vanilla"])
    assert "1/1" in final_frame(capsys.readouterr().err)
    monkeypatch.setenv(PROGRESS_ENV, kernel_env(1)[PROGRESS_ENV])  # what a runner's kernel gets
    assert not show_progress() and show_progress(True)
    hidden = study(tmp_path, "hidden")
    hidden.run(["vanilla"])
    assert capsys.readouterr().err == ""
    assert (hidden.trained, hidden.reused) == (0, 1)  # the same cache key with the bar shown or hidden
    assert (tmp_path / "hidden.records.csv").read_bytes() == (tmp_path / "shown.records.csv").read_bytes()
    hidden.run(["vanilla"], progress=True)  # asked for, it shows even under the runner
    assert "replicas: 0 trained, 1 from cache" in final_frame(capsys.readouterr().err)
