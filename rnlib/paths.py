"""Filesystem locations shared by the library, the batch runner and the tests."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"  # source notebooks, committed without outputs
PARAMETERS_DIR = REPO_ROOT / "parameters"  # YAML run profiles (default.yaml, smoke.yaml)
EXECUTED_DIR = REPO_ROOT / "executed"  # papermill outputs; executed/default is the canonical run

__all__ = ["EXECUTED_DIR", "NOTEBOOKS_DIR", "PARAMETERS_DIR", "REPO_ROOT"]
