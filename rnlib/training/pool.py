"""Training programs on a Dask cluster: the unit of parallel work is a program, not a notebook.

A program is one ``(model, task)`` batch of seeds (``Study.train_cached``'s missing seeds). With a scheduler
address (``Study(scheduler=...)`` or ``$RNLIB_SCHEDULER``, which the batch runner sets for its kernels), a
notebook's programs go to the cluster's workers and their ``RunResult``s come back to the notebook's process
and its cache: workers need the repository and ``.venv``, not a shared disk. Each worker trains one program at
a time on one intra-op thread, as a local run does, so the numbers are the same bits on the same kind of CPU.
A killed worker's programs are rescheduled by Dask on another worker. Without an address nothing here runs
and no server is needed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from rnlib.provenance import SCHEDULER_ENV
from rnlib.training import runtime
from rnlib.training.trainer import RunResult, train

if TYPE_CHECKING:
    from distributed import Client

CONNECT_TIMEOUT = "15s"  # how long to keep trying to reach a scheduler before one clear error
ATTEMPTS = 3  # a program whose connection to the scheduler was lost is submitted again, on a new client
IN_FLIGHT = 64  # programs a notebook keeps submitted at once: enough to fill a cluster, few threads to wait
START_TIMEOUT = 60.0  # seconds for a local pool's scheduler and workers to come up


def scheduler_address(address: str | None = None) -> str:
    """``address`` when given (``""`` forces local training), else ``$RNLIB_SCHEDULER``, else ``""``."""
    return (os.environ.get(SCHEDULER_ENV, "") if address is None else address).strip()


CLIENTS: dict[str, Client] = {}  # one client per scheduler and process; map_programs' threads share it
_LOCK = threading.Lock()


def client(address: str) -> Client:
    """The process's client of the scheduler at ``address``, connected on first use."""
    from distributed import Client

    with _LOCK:
        if address not in CLIENTS:
            try:
                CLIENTS[address] = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
            except OSError as exc:
                raise ConnectionError(
                    f"Dask scheduler {address} ({SCHEDULER_ENV} or Study(scheduler=...)) is unreachable: "
                    f"{exc}; unset {SCHEDULER_ENV} to train locally"
                ) from None
        return CLIENTS[address]


def close() -> None:
    """Close every client of this process (a scheduler that went away would otherwise be retried)."""
    with _LOCK:
        for c in CLIENTS.values():
            c.close()
        CLIENTS.clear()


def run_program(neuron: str, task: str, seeds: Sequence[int], options: dict) -> tuple[list[RunResult], str]:
    """Dask task: train one program on this worker with one intra-op thread; the worker's address beside
    the results (which worker trained what is recorded by ``Study.placements``)."""
    from distributed import get_worker

    with runtime.single_threaded():
        runs = train(neuron, task, list(seeds), **options)
    return runs, get_worker().address


def train_remote(
    address: str, neuron: str, task: str, seeds: Sequence[int], priority: int = 0, **options: object
) -> tuple[list[RunResult], str]:
    """``train(neuron, task, seeds, **options)`` on the cluster at ``address``; waits for the result. Of the
    programs waiting for a worker, those of higher ``priority`` start first (Dask's user priority).

    A killed worker's program is rescheduled by Dask; a lost connection to the scheduler (a busy machine can
    starve its heartbeats) cancels the future, so the program is submitted again on a fresh client, up to
    ``ATTEMPTS`` times. An error raised by the program itself is raised here.
    """
    from distributed.comm.core import CommClosedError

    for attempt in range(1, ATTEMPTS + 1):
        c = client(address)  # an unreachable scheduler raises here, at once
        try:
            future = c.submit(run_program, neuron, task, list(seeds), options, pure=False, priority=priority)
            return future.result()
        except (concurrent.futures.CancelledError, CommClosedError) as exc:  # Dask's cancels subclass it
            if attempt == ATTEMPTS:
                raise RuntimeError(f"{neuron} on {task}: lost the Dask scheduler {address} {ATTEMPTS} times "
                                   f"({exc!r})") from exc  # fmt: skip
            drop(address, c)
    raise AssertionError("unreachable")


def drop(address: str, lost: Client) -> None:
    """Forget (and close) the client ``lost`` of ``address`` unless another thread already replaced it, so
    the next call connects again; the threads that shared it see their own futures cancelled and retry."""
    with _LOCK:
        c = CLIENTS.pop(address) if CLIENTS.get(address) is lost else None
    if c is not None:
        with contextlib.suppress(
            Exception
        ):  # a client whose scheduler is gone may fail to close: dropped anyway
            c.close()


class LocalPool:
    """A Dask scheduler and ``workers`` single-threaded workers on 127.0.0.1, one process each, for a run
    (``rnlib run``'s default) or a test. The scheduler has a process of its own, so a busy runner never
    starves it; every process writes to ``log``. ``close`` (or leaving the ``with``) stops them all."""

    def __init__(self, folder: Path, workers: int, log: IO | int = subprocess.DEVNULL) -> None:
        dask = str(Path(sys.executable).parent / "dask")
        file = Path(folder) / "scheduler.json"
        file.unlink(missing_ok=True)
        self.flags = ["--host", "127.0.0.1", "--no-dashboard"]
        self.quiet = {"cwd": folder, "stdout": log, "stderr": log}
        self.dask = dask
        command = [dask, "scheduler", "--port", "0", "--scheduler-file", str(file), *self.flags]
        self.processes = [subprocess.Popen(command, **self.quiet)]
        self.workers: list[subprocess.Popen] = []
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not file.exists() and time.monotonic() < deadline:
                if self.processes[0].poll() is not None:
                    raise RuntimeError(f"the local Dask scheduler exited with {self.processes[0].returncode}")
                time.sleep(0.1)
            self.address = json.loads(file.read_text())["address"]
            for _ in range(workers):
                self.add_worker()
            self.wait(workers)
        except BaseException:
            self.close()
            raise

    def add_worker(self) -> subprocess.Popen:
        """Start one more single-threaded worker process."""
        command = [self.dask, "worker", self.address, "--no-nanny", "--nthreads", "1", *self.flags]
        process = subprocess.Popen(command, **self.quiet)
        self.workers.append(process)
        self.processes.append(process)
        return process

    def wait(self, workers: int) -> None:
        """Block until ``workers`` workers are connected."""
        from distributed import Client

        with Client(self.address, timeout="30s", set_as_default=False) as c:
            c.wait_for_workers(workers, timeout=START_TIMEOUT)

    def close(self) -> None:
        """Stop every process (this process's clients first, before their scheduler goes)."""
        close()
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a worker still reconnecting to a scheduler that is gone
                process.kill()
                process.wait(timeout=10)

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
