"""Result cache: one JSON file per trained replica, keyed by everything that decides its numbers.

A baseline trained by one notebook is reused by the next. The key holds the neuron and its options, the
task, seed, budget or width, depth, the whole ``TrainConfig`` and ``result_version()`` (the declared
numerics version, torch's version and the step that trains the neuron here), so any change there trains
afresh; an edit of the source that leaves the arithmetic alone keeps every key. Files are written atomically,
and a lock per training batch keeps two processes from training the same replicas at once.
``ResultCache.fill`` is the one way replicas enter the cache: it trains them on one intra-op thread, so a
cached number never depends on the machine's core count (``rnlib.training.runtime``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rnlib.paths import REPO_ROOT, atomic_write_text
from rnlib.provenance import result_version
from rnlib.training import fused, runtime
from rnlib.training.trainer import RunResult, TrainConfig


def default_cache_dir() -> Path:
    """``$RNLIB_CACHE`` when set (e.g. a disk shared by Dask workers), else ``.cache/rnlib`` in the repo."""
    return Path(os.environ.get("RNLIB_CACHE", REPO_ROOT / ".cache" / "rnlib")).expanduser()


def cache_key(
    neuron: str, task: str, seed: int, sizing: dict[str, Any], options: dict[str, Any], config: TrainConfig
) -> str:
    """sha256 of every input that decides one replica's result."""
    payload = {
        "neuron": neuron,
        "task": task,
        "seed": seed,
        "sizing": sizing,  # budget or width, and depth
        "options": options,  # omega, init
        "config": {k: v for k, v in asdict(config).items() if k not in ("device", "step")},
        # the declared numerics, torch's version, and the step that trains this neuron here
        "version": result_version(fused.step_for(neuron, config.step, config.device)),
        "device": config.device.split(":")[0],  # cpu and cuda agree to float tolerance, not bitwise
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class ResultCache:
    """Trained replicas on disk, one JSON per key, under ``root/<key[:2]>/<key>.json``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives."""
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> RunResult | None:
        """The cached replica, or None (a corrupt entry counts as missing and will be retrained)."""
        try:
            data = json.loads(self.path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        data["curve"] = [tuple(p) for p in data["curve"]]
        return RunResult(**data)

    def put(self, key: str, result: RunResult) -> None:
        """Store one replica atomically."""
        atomic_write_text(self.path(key), json.dumps(asdict(result), allow_nan=True))

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold an exclusive lock named ``name`` (a batch's identity) across processes on this machine."""
        lock_path = self.root / "locks" / f"{hashlib.sha256(name.encode()).hexdigest()[:24]}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def fill(
        self, keys: Mapping[int, str], batch: str, train: Callable[[list[int]], Sequence[RunResult]]
    ) -> tuple[dict[int, RunResult], list[int]]:
        """Each seed's replica (``keys``: seed -> key) from the cache, training the missing seeds together.

        ``train(seeds)`` trains one batch on one intra-op thread, under the lock named ``batch``; its replicas
        are stored as they return. Returns every seed's replica and the seeds trained here.
        """
        found = {seed: self.get(key) for seed, key in keys.items()}
        missing = [seed for seed, r in found.items() if r is None]
        if missing:
            with self.lock(batch):
                found.update({seed: self.get(keys[seed]) for seed in missing})  # another process may have won
                missing = [seed for seed, r in found.items() if r is None]
                if missing:
                    with runtime.single_threaded():
                        trained = train(missing)
                    for r in trained:
                        self.put(keys[r.seed], r)
                        found[r.seed] = r
        return found, missing
