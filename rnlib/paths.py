"""Filesystem locations shared by the library, the batch runner and the tests, and the one atomic write."""

import contextlib
import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"  # source notebooks, committed without outputs
PARAMETERS_DIR = REPO_ROOT / "parameters"  # papermill parameters (smoke.yaml), run profiles (smoke.run.yaml)
EXECUTED_DIR = REPO_ROOT / "executed"  # papermill outputs; executed/default is the canonical run
VERSION_GLOB = "v[0-9][0-9]_*.ipynb"  # the fifteen version notebooks, in notebooks/ and in a run folder
SUMMARY_STEM = "summary"  # notebooks/summary.ipynb: runs after a profile's jobs, never as a job of its own

__all__ = [
    "EXECUTED_DIR",
    "NOTEBOOKS_DIR",
    "PARAMETERS_DIR",
    "REPO_ROOT",
    "SUMMARY_STEM",
    "VERSION_GLOB",
    "atomic_write_text",
    "repo_path",
    "repo_relative",
]


def repo_path(path: str | Path) -> Path:
    """``path`` as given when absolute, else under the repository root: a notebook's path parameters mean
    the same file whatever the kernel's working directory (JupyterLab starts it in ``notebooks/``)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository when inside it, so parameters and provenance name no machine's
    folders; as an absolute path otherwise."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(resolved)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
