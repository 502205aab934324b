"""Training programs on a real Dask cluster (rnlib.training.pool): the same bits as training here, a killed
worker's programs rescheduled, and no server at all without a scheduler address."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import LocalDask

from rnlib.provenance import SCHEDULER_ENV
from rnlib.training import capacity_search, pool
from rnlib.training.cache import ResultCache
from rnlib.training.study import Study

NUMBERS = ["model", "task", "seed", "params", "width", "value", "train_value", "id_value", "trivial_value"]


def study(tmp_path: Path, name: str, scheduler: str, steps: int = 60) -> Study:
    """Two neurons × two tasks × two seeds on a result cache of its own (nothing shared between runs)."""
    return Study(
        "vpool", seeds=[0, 1], tasks=["nested2d", "spiral"], steps=steps, records=tmp_path / f"{name}.csv",
        cache=ResultCache(tmp_path / f"{name}-cache"), workers=1, scheduler=scheduler, progress=False,
    )  # fmt: skip


def numbers(s: Study) -> pd.DataFrame:
    return s.records[NUMBERS].sort_values(["model", "task", "seed"]).reset_index(drop=True)


@pytest.fixture
def cluster(tmp_path: Path):
    c = LocalDask(tmp_path, workers=2)
    try:
        yield c
    finally:
        c.close()


@pytest.mark.slow
def test_programs_on_two_workers_give_the_records_of_a_local_run(tmp_path: Path, cluster: LocalDask) -> None:
    local = study(tmp_path, "local", scheduler="")
    local.run(["vanilla", "singlu"])
    remote = study(tmp_path, "remote", scheduler=cluster.address)
    remote.run(["vanilla", "singlu"])
    pd.testing.assert_frame_equal(numbers(remote), numbers(local), check_exact=True)
    workers = {w for _, _, w in remote.placements}
    assert len(remote.placements) == 4 and workers and all(w.startswith("tcp://127.0.0.1:") for w in workers)
    assert local.placements == []  # no scheduler: trained in this process


@pytest.mark.slow
def test_a_killed_worker_loses_no_program(tmp_path: Path, cluster: LocalDask) -> None:
    from distributed import Client

    reference = study(tmp_path, "reference", scheduler="", steps=1500)
    reference.run(["vanilla", "singlu"])
    remote = study(tmp_path, "remote", scheduler=cluster.address, steps=1500)
    runner = threading.Thread(target=remote.run, args=(["vanilla", "singlu"],))
    runner.start()
    with Client(cluster.address, timeout="30s", set_as_default=False) as client:
        deadline, victim = time.monotonic() + 60, None
        while victim is None and time.monotonic() < deadline:
            busy = [w for w, tasks in client.processing().items() if tasks]
            victim = busy[0] if busy else None
            time.sleep(0.02)
        assert victim, "no program reached a worker"
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)  # mid-program: the scheduler reschedules it on the other worker
        cluster.add_worker()  # as a cluster would replace it
    runner.join(timeout=300)
    assert not runner.is_alive()
    pd.testing.assert_frame_equal(numbers(remote), numbers(reference), check_exact=True)
    assert len(remote.placements) == 4  # each program's result came back exactly once


def test_without_a_scheduler_a_study_trains_here_and_starts_no_server(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom rnlib.training.study import Study\nfrom rnlib.training.cache import ResultCache\n"
        f"s = Study('x', seeds=[0], tasks=['nested2d'], steps=5, records={str(tmp_path / 'r.csv')!r}, "
        f"cache=ResultCache({str(tmp_path / 'c')!r}), progress=False)\n"
        "s.run(['vanilla'])\nprint(s.scheduler == '', s.placements == [], 'distributed' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != SCHEDULER_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "False"]


def test_an_unreachable_scheduler_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "CONNECT_TIMEOUT", "1s")
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://127.0.0.1:9")
    s = Study("x", seeds=[0], tasks=["nested2d"], steps=5, records=tmp_path / "r.csv",
              cache=ResultCache(tmp_path / "c"), progress=False)  # fmt: skip
    assert s.scheduler == "tcp://127.0.0.1:9"  # read from the environment, as the runner's kernels do
    with pytest.raises(ConnectionError, match=r"tcp://127\.0\.0\.1:9 .*unreachable.*unset RNLIB_SCHEDULER"):
        s.run(["vanilla"])


@pytest.mark.slow
def test_the_runner_sends_a_real_notebooks_programs_to_a_local_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # v10 on the smoke profile: kernels here, programs on a LocalCluster of 2 workers; a cache of its own each
    from rnlib.batch.profiles import load_profile
    from rnlib.batch.runner import run_profile
    from rnlib.paths import PARAMETERS_DIR
    from rnlib.records import read_records

    profile = load_profile(PARAMETERS_DIR / "smoke.run.yaml")
    runs = {}
    for name, scheduler in (("here", None), ("pool", "local")):
        monkeypatch.setenv("RNLIB_CACHE", str(tmp_path / f"cache-{name}"))  # nothing cached: all trains
        results = run_profile(profile, tmp_path / name, workers=2, scheduler=scheduler, only=["v10"])
        assert [(r.stem, r.status) for r in results] == [("v10_free_phase", "done"), ("summary", "done")]
        runs[name] = read_records(tmp_path / name / "v10_free_phase.records.csv")
        executed = (tmp_path / name / "v10_free_phase.ipynb").read_text()
        assert ("replicas trained on the Dask cluster tcp://127.0.0.1:" in executed) == (
            scheduler is not None
        )
    numbers = [c for c in NUMBERS if c in runs["here"]]
    pd.testing.assert_frame_equal(runs["pool"][numbers], runs["here"][numbers], check_exact=True)


@pytest.mark.slow
def test_capacity_probes_on_the_cluster_give_the_local_answer(tmp_path: Path, cluster: LocalDask) -> None:
    """measure_capacity with a scheduler: every probe (with its stop rule) trains on the workers and the
    records, checks and chosen lr are those of the local run, bit for bit."""
    from rnlib.training.capacity_search import measure_capacity

    kwargs = dict(kinds=["binary"], steps=80, patience=25, max_points=1024, records=None, workers=1)
    local = measure_capacity(
        ["vanilla", "singlu"], [120], [0, 1], cache=ResultCache(tmp_path / "l"), **kwargs
    )
    remote = measure_capacity(["vanilla", "singlu"], [120], [0, 1], cache=ResultCache(tmp_path / "r"),
                              scheduler=cluster.address, **kwargs)  # fmt: skip
    columns = ["neuron", "seed", "value", "upper", "train_value", "steps", "lr", "lower_bound"]
    pd.testing.assert_frame_equal(remote.records[columns], local.records[columns], check_exact=True)
    pd.testing.assert_frame_equal(remote.checks, local.checks, check_exact=True)
    assert remote.trained == local.trained > 0


def test_a_program_whose_scheduler_connection_was_lost_is_submitted_again(monkeypatch) -> None:
    """A cancelled future (the client lost its scheduler) is resubmitted on a fresh client; a program's own
    error is raised at once; after pool.ATTEMPTS losses the error names the program and the scheduler."""
    import concurrent.futures

    class Future:
        def __init__(self, outcome):
            self.outcome = outcome

        def result(self):
            if isinstance(self.outcome, BaseException):
                raise self.outcome
            return self.outcome

    outcomes: list = []
    clients: list = []
    submitted: list = []

    class Client:
        def __init__(self):
            clients.append(self)

        def submit(self, *args, **kwargs):
            submitted.append(kwargs)
            return Future(outcomes.pop(0))

        def close(self):
            pass

    monkeypatch.setattr(pool, "CLIENTS", {})
    monkeypatch.setattr(pool, "client", lambda address: pool.CLIENTS.setdefault(address, Client()))
    outcomes[:] = [concurrent.futures.CancelledError(), ([], "tcp://w")]
    assert pool.train_remote("tcp://s", "vanilla", "spiral", [0]) == ([], "tcp://w") and len(clients) == 2
    assert [k["priority"] for k in submitted] == [0, 0]  # resubmitted as it was
    outcomes[:] = [([], "tcp://w")]
    pool.train_remote("tcp://s", "vanilla", "spiral", [0], priority=capacity_search.CHAIN)
    assert submitted[-1]["priority"] == capacity_search.CHAIN > 0  # a capacity probe goes first
    outcomes[:] = [ValueError("diverged badly")]
    with pytest.raises(ValueError, match="diverged badly"):
        pool.train_remote("tcp://s", "vanilla", "spiral", [0])
    outcomes[:] = [concurrent.futures.CancelledError()] * pool.ATTEMPTS
    with pytest.raises(
        RuntimeError, match=f"vanilla on spiral: lost the Dask scheduler tcp://s {pool.ATTEMPTS}"
    ):
        pool.train_remote("tcp://s", "vanilla", "spiral", [0])
