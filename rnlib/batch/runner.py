"""Execute a profile's jobs with papermill on a local process pool, resumably; with ``--scheduler`` the
kernels send their training programs to a Dask cluster (``rnlib.training.pool``) and more of them run at once.

A run folder (``executed/<profile name>`` unless ``--out``) holds::

    <stem>.ipynb, <stem>.records.csv  a completed job's outputs, moved in only after its run succeeded
    <stem>.failed.ipynb               a failed job's partial notebook, kept for reading
    .jobs/<stem>.json                 written last, atomically: job id, status, seconds, cell, error
    .jobs/profile.yaml                the run profile, as run (and .jobs/parameters.yaml, the file it names)
    .jobs/kernels.log                 what kernels wrote to stdout/stderr
    .jobs/pool.log                    what the local pool's scheduler and workers wrote
    .tmp/<stem>-<token>/              where a job runs; nothing in it looks complete

A job is complete only when its status file says ``done`` for the job's current id. Local kernels run in the
repository root and get repository-relative paths (``records``, the summary's ``run_dir``), so neither the
executed notebooks nor their papermill metadata name this machine's folders.
"""

from __future__ import annotations

import fcntl
import json
import math
import multiprocessing
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import papermill
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from papermill.exceptions import PapermillExecutionError
from tqdm import tqdm

from rnlib.batch.profiles import Job, Profile, expand_jobs, job_id, profile_version, select_jobs
from rnlib.paths import EXECUTED_DIR, REPO_ROOT, SUMMARY_STEM, atomic_write_text, repo_relative
from rnlib.provenance import PROGRESS_ENV, SCHEDULER_ENV, STEP_ENV

KERNEL = "python3"
START_ATTEMPTS = 3  # kernels started together can race for ZMQ ports or die before replying
START_BACKOFF = 1.0  # seconds before the first retry of a kernel start; doubled after each
START_ERRORS = ("Kernel died before replying", "Kernel didn't respond", "Address already in use")
# with --scheduler the kernels only submit programs and wait, so more of them run than there are cores
MAX_KERNELS = 16
LOCAL_POOL = "local"  # --scheduler local (the default): a scheduler and --workers workers for the run
NO_POOL = "none"  # --scheduler none: each kernel trains its own programs (notebook-level parallelism)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RNLIB_THREADS")
ADDED_TAGS = {"injected-parameters", "papermill-error-cell-tag"}  # cells papermill adds to a notebook


class RunError(RuntimeError):
    """A run that cannot start: its folder is in use by another run, or the scheduler is unreachable."""


@dataclass(frozen=True)
class Outcome:
    """How one execution ended; ``cell`` indexes the source notebook's cells from 0."""

    status: str  # "done" or "failed"
    seconds: float
    cell: int | None = None
    error: str = ""  # one line, e.g. "cell 3: ValueError: boom"


@dataclass(frozen=True)
class Task:
    """A job with the temp folder it executes in."""

    job: Job
    folder: Path

    @property
    def executed(self) -> Path:
        """Where papermill writes the executed notebook."""
        return self.folder / f"{self.job.stem}.ipynb"

    @property
    def records(self) -> Path:
        """Where the notebook writes its records."""
        return self.folder / f"{self.job.stem}.records.csv"


@dataclass(frozen=True)
class JobResult:
    """One row of the final report."""

    stem: str
    status: str  # "done", "failed" or "skipped"
    seconds: float | None
    note: str = ""


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def kernel_env(workers: int, available: int | None = None, step: str = "auto") -> dict[str, str]:
    """Thread limits that let ``workers`` parallel kernels share the cores without oversubscribing, the
    profile's training step, and no progress bars (an executed notebook would keep every redraw)."""
    env = dict.fromkeys(THREAD_VARS, str(max(1, (available or cores()) // max(1, workers))))
    return env | {PROGRESS_ENV: "0"} | ({STEP_ENV: step} if step != "auto" else {})


def failed_cell(executed: Path) -> int | None:
    """Source-notebook index of the cell a run stopped in (the last one papermill started), if any."""
    try:
        cells = json.loads(executed.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return None
    own = [c for c in cells if not ADDED_TAGS & set(c.get("metadata", {}).get("tags", []))]
    started = [i for i, c in enumerate(own) if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    return started[-1] if started else None


def is_kernel_start_error(exc: BaseException) -> bool:
    """Whether ``exc`` looks like a kernel failing to start (retried) rather than the notebook failing."""
    if isinstance(exc, CellTimeoutError | DeadKernelError | PapermillExecutionError):
        return False
    zmq = type(exc).__name__ == "ZMQError"
    return zmq or isinstance(exc, TimeoutError) or any(m in str(exc) for m in START_ERRORS)


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for a status file and the report."""
    if isinstance(exc, PapermillExecutionError):
        text = f"{exc.ename}: {exc.evalue}"
    else:
        lines = str(exc).strip().splitlines()
        text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return " ".join(text.split())[:300]


def execute_job(notebook: str, output: str, parameters: dict[str, Any], timeout: float | None) -> Outcome:
    """Run one notebook with papermill into ``output``; a failure is returned as an Outcome, not raised."""
    start = time.monotonic()
    for attempt in range(START_ATTEMPTS):
        try:
            papermill.execute_notebook(
                notebook,
                output,
                parameters=parameters,
                kernel_name=KERNEL,
                execution_timeout=math.ceil(timeout) if timeout else None,  # nbclient takes whole seconds
                log_output=False,
                progress_bar=False,
            )
            return Outcome("done", time.monotonic() - start)
        except Exception as exc:
            cell = failed_cell(Path(output))
            if is_kernel_start_error(exc) and cell is None and attempt + 1 < START_ATTEMPTS:
                time.sleep(START_BACKOFF * 2**attempt)
                continue
            where = f"cell {cell}: " if cell is not None else ""
            return Outcome("failed", time.monotonic() - start, cell, where + one_line(exc))
    raise AssertionError("unreachable: the last attempt returns")


def papermill_parameters(job: Job, records: Path) -> dict[str, Any]:
    """A job's parameters plus, when its notebook declares it, the ``records`` path (repository-relative when
    inside it: the notebook resolves it against the repository root, ``rnlib.paths.repo_path``)."""
    return {**job.parameters, "records": repo_relative(records)} if job.records else dict(job.parameters)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc: trust kill()
        return True


def _init_worker(env: dict[str, str], log: str, runner: int) -> None:
    """Pool worker setup: thread limits, the repository root as working directory (the kernels' too, and
    what the relative paths of ``_arguments`` mean), a log file for kernels; exit when the runner dies."""
    os.environ.update(env)
    os.chdir(REPO_ROOT)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (1, 2):  # kernels inherit these: their warnings go to the log, not the terminal
        os.dup2(fd, stream)
    os.close(fd)

    def exit_with_runner() -> None:  # a kernel exits when its parent, this worker, does
        while _alive(runner):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=exit_with_runner, daemon=True).start()


def _arguments(task: Task) -> tuple[str, str, dict[str, Any]]:
    """``execute_job``'s notebook, output and parameters for a local task, as repository-relative paths
    where they are inside it (papermill records both paths in the executed notebook's metadata)."""
    notebook, executed = repo_relative(task.job.notebook), repo_relative(task.executed)
    return notebook, executed, papermill_parameters(task.job, task.records)


def run_local(
    tasks: Sequence[Task],
    workers: int,
    timeout: float | None,
    on_done: Callable,
    log: Path,
    env: dict[str, str] | None = None,
) -> None:
    """Execute tasks on ``workers`` local processes, calling ``on_done(task, outcome)`` as each ends; ``env``
    adds to the kernels' environment."""
    workers = max(1, min(workers, len(tasks)))
    context = multiprocessing.get_context("forkserver")  # workers fork from a clean, single-threaded server
    context.set_forkserver_preload(["rnlib.batch.runner"])  # which imports papermill once for all of them
    setup = (kernel_env(workers, step=tasks[0].job.step) | (env or {}), str(log), os.getpid())
    pool = ProcessPoolExecutor(workers, context, _init_worker, setup)
    try:
        futures = {pool.submit(execute_job, *_arguments(t), timeout): t for t in tasks}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as exc:  # the worker process itself died
                outcome = Outcome("failed", 0.0, None, one_line(exc))
            on_done(futures[future], outcome)
    except BaseException:  # Ctrl-C or SIGTERM: stop the kernels now, not after their jobs
        for process in list((pool._processes or {}).values()):  # Python 3.14 has terminate_workers()
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


@contextmanager
def program_pool(scheduler: str, workers: int, folder: Path) -> Iterator[str]:
    """The scheduler address the kernels send programs to: ``scheduler`` itself (checked now), or for
    ``local`` a scheduler and ``workers`` single-threaded workers on 127.0.0.1 for the run, each a process of
    its own (``pool.LocalPool``), logging to ``folder``/pool.log."""
    if scheduler != LOCAL_POOL:
        connect(scheduler)
        yield scheduler
        return
    from rnlib.training.pool import LocalPool

    with open(folder / "pool.log", "a") as log, LocalPool(folder, workers, log) as local:
        yield local.address


def connect(address: str) -> None:
    """Fail now, in one line, when the scheduler the kernels will send their programs to is unreachable."""
    from rnlib.training import pool

    try:
        pool.client(address)
    except ConnectionError as exc:
        raise RunError(f"--scheduler {address}: cannot connect ({one_line(exc)})") from None
    finally:
        pool.close()


def read_status(out: Path, stem: str) -> dict[str, Any]:
    """A job's status file, or {} when it has none."""
    try:
        return json.loads((out / ".jobs" / f"{stem}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def job_state(out: Path, job: Job) -> str:
    """``done`` when the job (same id) finished and its outputs are there, else ``failed`` or ``pending``."""
    status = read_status(out, job.stem)
    if status.get("id") != job.id:
        return "pending"
    outputs = [out / f"{job.stem}.ipynb"] + ([out / f"{job.stem}.records.csv"] if job.records else [])
    if status.get("status") == "done":
        return "done" if all(path.exists() for path in outputs) else "pending"
    return "failed"


def prepare(out: Path, job: Job) -> Task:
    """Forget a job's earlier outputs (its status file first) and give it a fresh temp folder."""
    (out / ".jobs" / f"{job.stem}.json").unlink(missing_ok=True)
    for suffix in (".ipynb", ".records.csv", ".failed.ipynb"):
        (out / f"{job.stem}{suffix}").unlink(missing_ok=True)
    folder = out / ".tmp" / f"{job.stem}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    return Task(job, folder)


def finalize(out: Path, task: Task, outcome: Outcome) -> Outcome:
    """Move a finished task's outputs into ``out``, then write its status file last."""
    job = task.job
    if outcome.status == "done" and job.records and not task.records.exists():
        outcome = replace(outcome, status="failed", error="finished without writing its `records` CSV")
    if outcome.status == "done":
        if job.records:
            os.replace(task.records, out / f"{job.stem}.records.csv")
        os.replace(task.executed, out / f"{job.stem}.ipynb")
    elif task.executed.exists():
        os.replace(task.executed, out / f"{job.stem}.failed.ipynb")
    status = {"id": job.id, "notebook": job.notebook.name, "parameters": job.parameters, **asdict(outcome)}
    atomic_write_text(out / ".jobs" / f"{job.stem}.json", json.dumps(status, indent=1, default=str) + "\n")
    shutil.rmtree(task.folder, ignore_errors=True)
    return outcome


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold ``out/.jobs/lock`` so two runs cannot share a folder; a killed run releases it."""
    (out / ".jobs").mkdir(parents=True, exist_ok=True)
    with open(out / ".jobs" / "lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{out} is in use by another rnlib run") from None
        yield


def run_stage(
    out: Path,
    jobs: Sequence[Job],
    results: dict[str, JobResult],
    *,
    workers: int,
    scheduler: str | None,
    force: bool,
    timeout: float | None,
) -> None:
    """Skip complete jobs, execute the rest under one progress bar, and record a result for each."""
    for job in jobs:
        if not force and job_state(out, job) == "done":
            print(f"skip {job.stem} (done earlier)")
            results[job.stem] = JobResult(job.stem, "skipped", read_status(out, job.stem).get("seconds"))
    tasks = [prepare(out, job) for job in jobs if job.stem not in results]
    with tqdm(total=len(tasks), unit="job", desc="jobs", file=sys.stderr, disable=not tasks) as bar:

        def on_done(task: Task, outcome: Outcome) -> None:
            outcome = finalize(out, task, outcome)
            results[task.job.stem] = JobResult(task.job.stem, outcome.status, outcome.seconds, outcome.error)
            line = f"{outcome.status} {task.job.stem} {outcome.seconds:.1f}s"
            bar.write(line + (f"  {outcome.error}" if outcome.error else ""), file=sys.stdout)
            sys.stdout.flush()
            bar.update()

        if tasks and scheduler:  # kernels here, their training programs on the cluster (rnlib.training.pool)
            with program_pool(scheduler, workers, out / ".jobs") as address:
                kernels = max(workers, min(len(tasks), MAX_KERNELS))
                env = {SCHEDULER_ENV: address}
                run_local(tasks, kernels, timeout, on_done, out / ".jobs" / "kernels.log", env)
        elif tasks:
            run_local(tasks, workers, timeout, on_done, out / ".jobs" / "kernels.log")


def summary_job(profile: Profile, out: Path, jobs: Sequence[Job]) -> Job | None:
    """The summary's job; its id changes whenever a job it reads changes. None without summary.ipynb."""
    notebook = profile.notebooks_dir / f"{SUMMARY_STEM}.ipynb"
    if not notebook.exists():
        return None
    parameters = {"run_dir": repo_relative(out)}
    inputs = sorted((job.stem, job.id) for job in jobs if job_state(out, job) == "done")
    summary_id = job_id(notebook, {**parameters, "jobs": inputs}, profile_version(profile))
    return Job(notebook, SUMMARY_STEM, parameters, summary_id, records=False, step=profile.step)


def default_out(profile: Profile) -> Path:
    """``executed/<profile name>``."""
    return EXECUTED_DIR / profile.name


def run_profile(
    profile: Profile,
    out: Path | str | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    only: Sequence[str] = (),
    force: bool = False,
    timeout: float | None = None,
) -> list[JobResult]:
    """Run a profile's jobs (all, or those named in ``only``) and then its summary; one result per job."""
    out = Path(out).resolve() if out else default_out(profile)
    every = expand_jobs(profile)
    jobs = select_jobs(every, list(only))
    timeout = timeout or profile.timeout
    results: dict[str, JobResult] = {}
    options = {"force": force, "timeout": timeout}
    with locked(out):
        shutil.rmtree(out / ".tmp", ignore_errors=True)  # leftovers of killed runs
        atomic_write_text(out / ".jobs" / "profile.yaml", profile.path.read_text(encoding="utf-8"))
        if profile.parameters_file:
            text = profile.parameters_file.read_text(encoding="utf-8")
            atomic_write_text(out / ".jobs" / "parameters.yaml", text)
        run_stage(out, jobs, results, workers=workers or cores(), scheduler=scheduler, **options)
        failed = sum(result.status == "failed" for result in results.values())
        summary = summary_job(profile, out, every) if profile.summary else None
        if profile.summary and summary is None:
            print(f"summary: no {SUMMARY_STEM}.ipynb in {profile.notebooks_dir}; skipped")
        elif summary and failed:
            results[SUMMARY_STEM] = JobResult(
                SUMMARY_STEM, "skipped", None, f"not run: {failed} job(s) failed"
            )
        elif summary:  # always local: it only reads the run folder
            run_stage(out, [summary], results, workers=1, scheduler=None, **options)
        with suppress(OSError):
            (out / ".tmp").rmdir()
    return [results[stem] for stem in [job.stem for job in jobs] + [SUMMARY_STEM] if stem in results]
