"""Tests for the study runner on tiny fixture notebooks: resume, faults, interrupts, Dask, the CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import zmq
from conftest import LocalDask
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from rnlib import paths
from rnlib.__main__ import main
from rnlib.batch import runner
from rnlib.batch.profiles import Job, expand_jobs, load_profile
from rnlib.batch.runner import (
    Outcome,
    RunError,
    Task,
    execute_job,
    failed_cell,
    finalize,
    is_kernel_start_error,
    kernel_env,
    locked,
    run_profile,
    summary_job,
)
from rnlib.paths import EXECUTED_DIR, PARAMETERS_DIR, REPO_ROOT
from rnlib.records import COLUMNS, read_records, write_records
from rnlib.training import pool

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parents[1]
VENV_BIN = Path(sys.executable).parent
STEMS = ["ok__budget-1", "ok__budget-2", "ok__budget-3"]
# The profile every end-to-end test runs: 3 jobs of the fixture `ok` notebook, then the fixture summary.
SMOKE = f"""
notebooks: [ok]
notebooks_dir: {FIXTURES}
parameters: {{seeds: [0, 1], steps: 10, lr: 0.5, delay: 0.2}}
grid: {{budget: [1, 2, 3]}}
"""


def write(folder: Path, text: str, name: str = "smoke.yaml") -> Path:
    """A profile file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def expected_records(budget: int) -> str:
    """The records CSV the `ok` fixture writes for SMOKE's parameters (an independent reference)."""
    rows = [f"all,{seed},{budget},{(seed + 1) * 0.5 * 1.0 * 10 + budget}" for seed in (0, 1)]
    return "\n".join(["task,seed,budget,value", *rows]) + "\n"  # read_text turns csv's \r\n into \n


def records(out: Path) -> dict[str, str]:
    """Every records CSV of a run folder, by file name."""
    return {path.name: path.read_text() for path in sorted(out.glob("*.records.csv"))}


def status(out: Path, stem: str) -> dict:
    """A job's status file."""
    return json.loads((out / ".jobs" / f"{stem}.json").read_text())


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m rnlib`` in a subprocess."""
    command = [sys.executable, "-m", "rnlib", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted local run of SMOKE with two workers."""
    folder = tmp_path_factory.mktemp("reference")
    results = run_profile(load_profile(write(folder, SMOKE)), folder / "out", workers=2)
    assert [(r.stem, r.status) for r in results] == [(s, "done") for s in STEMS] + [("summary", "done")]
    return folder / "out"


@pytest.mark.slow
def test_smoke_run_writes_records_for_every_job_and_a_summary(reference: Path) -> None:
    assert records(reference) == {f"{s}.records.csv": expected_records(i + 1) for i, s in enumerate(STEMS)}
    for stem in [*STEMS, "summary"]:
        assert status(reference, stem)["status"] == "done"
        assert (reference / f"{stem}.ipynb").exists()
    summary = (reference / "summary.ipynb").read_text()
    assert "summary: 3 records files, 6 rows" in summary
    assert not (reference / ".tmp").exists()
    threads = kernel_env(2)["RNLIB_THREADS"]  # two workers share the cores
    executed = (reference / f"{STEMS[0]}.ipynb").read_text()
    assert f"RNLIB_THREADS={threads} OMP_NUM_THREADS={threads}" in executed


@pytest.mark.slow
def test_rerun_skips_completed_jobs_and_force_reruns(reference: Path, capsys: pytest.CaptureFixture) -> None:
    profile = load_profile(reference.parent / "smoke.yaml")
    before = {s: status(reference, s) for s in STEMS}
    results = run_profile(profile, reference, workers=2)
    assert {r.status for r in results} == {"skipped"}
    assert {s: status(reference, s) for s in STEMS} == before
    assert f"skip {STEMS[0]} (done earlier)" in capsys.readouterr().out
    results = run_profile(profile, reference, workers=1, only=[STEMS[1]], force=True)
    assert [(r.stem, r.status) for r in results] == [(STEMS[1], "done"), ("summary", "done")]
    assert status(reference, STEMS[0]) == before[STEMS[0]]
    assert status(reference, STEMS[1])["seconds"] != before[STEMS[1]]["seconds"]


@pytest.mark.slow
def test_kill_mid_run_then_resume_runs_only_unfinished_jobs(reference: Path, tmp_path: Path) -> None:
    profile, out = write(tmp_path, SMOKE), tmp_path / "out"
    # one kernel at a time, training its own programs: the kill lands between two jobs
    command = [sys.executable, "-m", "rnlib", "run", str(profile), "--out", str(out), "--workers", "1",
               "--scheduler", "none"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not list(out.glob(".jobs/ok__*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    finished = sorted(p.stem for p in out.glob(".jobs/ok__*.json"))
    assert len(finished) == 1, finished  # killed after the first job, with the others unfinished
    for path in out.glob("*.ipynb"):  # nothing looks complete that is not
        assert status(out, path.name.removesuffix(".ipynb"))["status"] == "done"
    for path in out.glob("*.records.csv"):
        assert status(out, path.name.removesuffix(".records.csv"))["status"] == "done"
    first = (out / ".jobs" / f"{finished[0]}.json").read_bytes()
    rerun = cli("run", str(profile), "--out", str(out), "--workers", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert f"skip {finished[0]} (done earlier)" in rerun.stdout
    for stem in set(STEMS) - set(finished):
        assert f"done {stem} " in rerun.stdout
    assert (out / ".jobs" / f"{finished[0]}.json").read_bytes() == first
    assert records(out) == records(reference)
    assert "IPKernelApp" not in rerun.stderr  # kernel chatter goes to .jobs/kernels.log
    assert (out / ".jobs" / "kernels.log").exists()


@pytest.mark.slow
def test_failures_are_recorded_with_cell_and_error_and_retried_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    text = f"notebooks: [ok, raises, hangs, dies]\nnotebooks_dir: {FIXTURES}\ntimeout: 3\n"
    profile, out = write(tmp_path, text), tmp_path / "out"
    results = {r.stem: r for r in run_profile(load_profile(profile), out, workers=2)}
    assert results["ok"].status == "done"
    assert results["raises"].note == "cell 3: ValueError: boom"
    assert results["hangs"].note.startswith("cell 2: CellTimeoutError: A cell timed out")
    assert results["dies"].note == "cell 2: DeadKernelError: Kernel died"
    assert results["summary"].status == "skipped" and "3 job(s) failed" in results["summary"].note
    for stem in ("raises", "hangs", "dies"):
        assert results[stem].status == "failed"
        assert status(out, stem)["status"] == "failed" and status(out, stem)["cell"] in (2, 3)
        assert (out / f"{stem}.failed.ipynb").exists() and not (out / f"{stem}.ipynb").exists()
    assert "ValueError" in (out / "raises.failed.ipynb").read_text()  # the traceback is kept for reading
    capsys.readouterr()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = main(["run", str(profile), "--out", str(out), "--workers", "2"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    output = capsys.readouterr().out
    assert code == 1
    assert "skip ok (done earlier)" in output
    assert all(f"failed {stem} " in output for stem in ("raises", "hangs", "dies"))
    assert "5 jobs: 0 done, 2 skipped, 3 failed" in output


@pytest.fixture
def dask_scheduler(tmp_path: Path):
    """A real Dask scheduler and one single-threaded worker on 127.0.0.1, torn down afterwards."""
    cluster = LocalDask(tmp_path, workers=1)
    try:
        yield cluster.address
    finally:
        cluster.close()


@pytest.mark.slow
def test_dask_run_gives_the_same_records_as_a_local_run(
    reference: Path, dask_scheduler: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    results = run_profile(load_profile(write(tmp_path, SMOKE)), out, scheduler=dask_scheduler)
    assert [(r.stem, r.status) for r in results] == [(s, "done") for s in STEMS] + [("summary", "done")]
    assert records(out) == records(reference)
    assert "summary: 3 records files, 6 rows" in (out / "summary.ipynb").read_text()


@pytest.mark.slow
def test_unreachable_scheduler_is_a_run_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pool, "CONNECT_TIMEOUT", "1s")
    profile = load_profile(write(tmp_path, SMOKE))
    with pytest.raises(RunError, match=r"--scheduler tcp://127\.0\.0\.1:9: cannot connect"):
        run_profile(profile, tmp_path / "out", scheduler="tcp://127.0.0.1:9")


def test_dry_run_lists_jobs_and_executes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    profile, out = write(tmp_path, SMOKE), tmp_path / "out"
    assert (
        main(["run", str(profile), "--out", str(out), "--dry-run", "--only", f"{STEMS[1]},{STEMS[2]}"]) == 0
    )
    output = capsys.readouterr().out
    assert "2 jobs -> " in output
    assert "pending  ok__budget-2  (ok.ipynb: seeds=[0, 1], steps=10, lr=0.5, delay=0.2, budget=2)" in output
    assert "ok__budget-1" not in output
    assert not out.exists()


@pytest.mark.slow
def test_cli_rejects_a_bad_profile_with_one_line_and_exit_2(tmp_path: Path) -> None:
    profile, out = write(tmp_path, SMOKE + "budget: [1]\n"), tmp_path / "out"
    result = cli("run", str(profile), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr == f"error: {profile}: unknown key 'budget'; valid keys: name, notebooks, " + (
        "notebooks_dir, parameters, grid, overrides, summary, timeout, step\n"
    )
    assert result.stdout == "" and not out.exists()


def test_missing_summary_is_skipped_with_a_message(reference: Path, tmp_path: Path, capsys) -> None:
    folder, out = tmp_path / "notebooks", tmp_path / "out"
    folder.mkdir()
    shutil.copy(FIXTURES / "ok.ipynb", folder / "ok.ipynb")  # same content, so the same job ids
    shutil.copytree(reference, out)
    profile = write(tmp_path, SMOKE.replace(str(FIXTURES), str(folder)))
    results = run_profile(load_profile(profile), out, workers=1)
    assert [r.status for r in results] == ["skipped"] * 3
    assert f"summary: no summary.ipynb in {folder}; skipped" in capsys.readouterr().out


def test_kernel_env_divides_cores_among_workers() -> None:
    assert kernel_env(1, available=2) == dict.fromkeys(
        ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "RNLIB_THREADS"], "2"
    ) | {"RNLIB_PROGRESS": "0"}  # no progress bar redrawn into an executed notebook
    assert kernel_env(2, available=2)["RNLIB_THREADS"] == "1"
    assert kernel_env(2, available=2, step="autograd")["RNLIB_STEP"] == "autograd"  # a profile's `step`
    assert "RNLIB_STEP" not in kernel_env(2, available=2)  # auto: the kernel decides
    assert kernel_env(8, available=2)["RNLIB_THREADS"] == "1"
    assert kernel_env(3, available=16)["OMP_NUM_THREADS"] == "5"


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (RuntimeError("Kernel died before replying to kernel_info"), True),
        (TimeoutError("Kernel didn't respond in 60 seconds"), True),
        (zmq.ZMQError(zmq.EADDRINUSE), True),
        (CellTimeoutError("A cell timed out"), False),
        (DeadKernelError("Kernel died"), False),
        (ValueError("boom"), False),
    ],
)
def test_only_kernel_start_errors_are_retried(monkeypatch, tmp_path: Path, error: Exception, retried: bool):
    calls = []

    def flaky(notebook: str, output: str, **kwargs) -> None:
        calls.append(output)
        if len(calls) < 3:
            raise error

    monkeypatch.setattr(runner.papermill, "execute_notebook", flaky)
    monkeypatch.setattr(runner, "START_BACKOFF", 0.0)
    assert is_kernel_start_error(error) is retried
    outcome = execute_job("in.ipynb", str(tmp_path / "out.ipynb"), {}, None)
    assert (outcome.status, len(calls)) == (("done", 3) if retried else ("failed", 1))
    if not retried:
        assert outcome.error == f"{type(error).__name__}: {error}"


def test_failed_cell_counts_source_cells_only(tmp_path: Path) -> None:
    def cell(tags: list[str], started: bool) -> dict:
        return {"metadata": {"tags": tags, "papermill": {"start_time": "t" if started else None}}}

    tags = [[], ["parameters"], ["injected-parameters"], [], ["papermill-error-cell-tag"], [], []]
    started = [True, True, True, True, False, True, False]
    cells = [cell(t, s) for t, s in zip(tags, started, strict=True)]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells}))
    assert failed_cell(path) == 3
    assert failed_cell(tmp_path / "missing.ipynb") is None


def test_finalize_fails_a_job_that_wrote_no_records(tmp_path: Path) -> None:
    out, folder = tmp_path / "out", tmp_path / "out" / ".tmp" / "ok-1"
    folder.mkdir(parents=True)
    (out / ".jobs").mkdir()
    job = Job(FIXTURES / "ok.ipynb", "ok", {}, "abc", records=True)
    task = Task(job, folder)
    task.executed.write_text("{}")
    outcome = finalize(out, task, Outcome("done", 1.0))
    assert outcome.status == "failed" and "without writing its `records` CSV" in outcome.error
    assert status(out, "ok")["status"] == "failed" and (out / "ok.failed.ipynb").exists()
    assert not (out / "ok.ipynb").exists() and not folder.exists()


def test_a_run_folder_is_locked_against_a_second_run(tmp_path: Path) -> None:
    with locked(tmp_path), pytest.raises(RunError, match="in use by another rnlib run"), locked(tmp_path):
        pass
    with locked(tmp_path):  # released when the first run ends
        pass


@pytest.mark.slow
def test_sigterm_stops_the_runner_and_keeps_finished_jobs(tmp_path: Path) -> None:
    text = f"notebooks: [hangs]\nnotebooks_dir: {FIXTURES}\n"
    profile, out = write(tmp_path, text), tmp_path / "out"
    command = [sys.executable, "-m", "rnlib", "run", str(profile), "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not list(out.glob(".tmp/hangs-*/hangs.ipynb")) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted: finished jobs are kept" in stderr
    assert not (out / ".jobs" / "hangs.json").exists() and not (out / "hangs.ipynb").exists()


def test_injected_parameters_and_papermill_paths_are_repository_relative(
    capsys: pytest.CaptureFixture,
) -> None:
    """What a job's notebook receives and papermill records in it names no folder of this machine."""
    profile = load_profile(PARAMETERS_DIR / "smoke.run.yaml")
    out = EXECUTED_DIR / "relative-paths"  # never created
    jobs = expand_jobs(profile)
    job = jobs[0]
    notebook, executed, parameters = runner._arguments(Task(job, out / ".tmp" / f"{job.stem}-1234abcd"))
    assert notebook == f"notebooks/{job.notebook.name}"
    assert executed == f"executed/relative-paths/.tmp/{job.stem}-1234abcd/{job.stem}.ipynb"
    assert parameters["records"] == f"executed/relative-paths/.tmp/{job.stem}-1234abcd/{job.stem}.records.csv"
    summary = summary_job(profile, out, jobs)
    assert summary is not None and summary.parameters == {"run_dir": "executed/relative-paths"}
    injected = [notebook, executed, *map(str, parameters.values()), *map(str, summary.parameters.values())]
    assert not [value for value in injected if Path(value).is_absolute() or str(REPO_ROOT) in value]
    assert main(["run", str(PARAMETERS_DIR / "smoke.run.yaml"), "--out", str(out), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "then summary.ipynb with run_dir=executed/relative-paths" in listing and not out.exists()


def test_relative_records_paths_are_under_the_repository_root_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr(paths, "REPO_ROOT", root)
    monkeypatch.chdir(elsewhere)  # JupyterLab starts a kernel in notebooks/, papermill in its caller's folder
    written = write_records(pd.DataFrame(columns=list(COLUMNS)), "executed/run/.tmp/v01.records.csv")
    assert written == root / "executed/run/.tmp/v01.records.csv" and written.exists()
    assert not (elsewhere / "executed").exists()
    assert list(read_records("executed/run/.tmp/v01.records.csv").columns) == list(COLUMNS)


def test_the_runner_pools_programs_locally_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """`rnlib run` defaults to the local program pool; `--scheduler none` leaves programs to the kernels."""
    from rnlib.batch import cli

    seen = {}
    monkeypatch.setattr(cli, "run_profile", lambda profile, out, **kw: seen.update(kw) or [])
    profile = str(PARAMETERS_DIR / "smoke.run.yaml")
    assert main(["run", profile]) == 0 and seen["scheduler"] == "local"
    assert main(["run", profile, "--scheduler", "none"]) == 0 and seen["scheduler"] is None
    assert main(["run", profile, "--scheduler", "tcp://127.0.0.1:1"]) == 0
    assert seen["scheduler"] == "tcp://127.0.0.1:1"
