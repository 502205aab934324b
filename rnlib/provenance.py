"""Where a result came from: hashes of the code that decides it, and the machine and packages it ran on."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from rnlib.paths import REPO_ROOT

PACKAGE_DIR = Path(__file__).resolve().parent
# The modules that decide a trained number; notebooks, plots and the runner do not.
RESULT_MODULES = (
    "neurons.py",
    "models.py",
    "tasks.py",
    "trainer.py",
    "metrics.py",
    "diagnostics.py",
    "kernels.py",
    "kernels.c",
)
REPORTED_PACKAGES = ("torch", "numpy", "pandas", "papermill", "matplotlib", "seaborn", "distributed")


def source_hash(files: Iterable[Path]) -> str:
    """A short sha256 over the names and contents of ``files``."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@functools.cache
def code_version() -> str:
    """Hash of the result-deciding modules, the torch version and the step this machine trains with: part of
    every cache key."""
    import torch

    return f"{source_hash(PACKAGE_DIR / m for m in RESULT_MODULES)}-torch{torch.__version__}-{trainer_step()}"


@functools.cache
def package_version() -> str:
    """Hash of every module of the package (and its C source) and the trainer's step: part of every job id."""
    return f"{source_hash([*PACKAGE_DIR.glob('*.py'), *PACKAGE_DIR.glob('*.c')])}-{trainer_step()}"


def trainer_step() -> str:
    """``fused`` where this machine builds ``rnlib.kernels``' C passes, else ``autograd``: the two train the
    same models to float32 rounding only, so a result records which one made it."""
    from rnlib import kernels

    return "fused" if kernels.load()[0] is not None else "autograd"


def git_commit() -> str:
    """The repository's HEAD commit (with ``-dirty`` when the work tree has changes), or ``unknown``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "rnlib", "notebooks", "parameters"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def environment_info() -> dict[str, str]:
    """Commit, package versions, machine and date of this process: a run's provenance."""
    info = {
        "git_commit": git_commit(),
        "code_version": code_version(),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": str(os.cpu_count()),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for name in REPORTED_PACKAGES:
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = "not installed"
    return info
