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

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rnlib.provenance import SCHEDULER_ENV
from rnlib.training import runtime
from rnlib.training.trainer import RunResult, train

if TYPE_CHECKING:
    from distributed import Client

CONNECT_TIMEOUT = "15s"  # how long to keep trying to reach a scheduler before one clear error


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
    address: str, neuron: str, task: str, seeds: Sequence[int], **options: object
) -> tuple[list[RunResult], str]:
    """``train(neuron, task, seeds, **options)`` on the cluster at ``address``; waits for the result."""
    future = client(address).submit(run_program, neuron, task, list(seeds), options, pure=False)
    return future.result()
