"""Test-session settings shared by every test file (pytest puts tests/ on sys.path: ``golden`` imports)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

# One thread per process: the models here are tiny, and several test processes (papermill kernels, Dask
# workers) share the 2 cores of the CI machine; oversubscribed OpenMP threads spin and slow everything down.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RNLIB_THREADS", "1")
torch.set_num_threads(1)


class LocalDask:
    """A real Dask scheduler and single-threaded workers on 127.0.0.1, one process each, so a test can kill
    one worker; ``close`` tears everything down."""

    def __init__(self, folder: Path, workers: int) -> None:
        bin_dir = Path(sys.executable).parent
        file = folder / "scheduler.json"
        self.flags = ["--host", "127.0.0.1", "--no-dashboard"]
        self.quiet = {"cwd": folder, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.dask = str(bin_dir / "dask")
        scheduler = [self.dask, "scheduler", "--port", "0", "--scheduler-file", str(file), *self.flags]
        self.processes = [subprocess.Popen(scheduler, **self.quiet)]
        self.workers: list[subprocess.Popen] = []
        try:
            deadline = time.monotonic() + 60
            while not file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            self.address = json.loads(file.read_text())["address"]
            assert self.address.startswith("tcp://127.0.0.1:")
            for _ in range(workers):
                self.add_worker()
            self.wait(workers)
        except BaseException:
            self.close()
            raise

    def add_worker(self) -> subprocess.Popen:
        """Start one more single-threaded worker process."""
        cmd = [self.dask, "worker", self.address, "--no-nanny", "--nthreads", "1", *self.flags]
        process = subprocess.Popen(cmd, **self.quiet)
        self.workers.append(process)
        self.processes.append(process)
        return process

    def wait(self, workers: int) -> None:
        """Block until ``workers`` workers are connected."""
        from distributed import Client

        with Client(self.address, timeout="30s", set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=60)

    def close(self) -> None:
        from rnlib.training import pool

        pool.close()  # this process's clients, before their scheduler goes
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a worker still reconnecting to a scheduler that is gone
                process.kill()
                process.wait(timeout=10)
