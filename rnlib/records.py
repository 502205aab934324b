"""The result record (protocol §7): one row per (version, model, task, seed, budget), tidy, written
atomically. The one record format: ``rnlib.training`` writes it, ``rnlib.analysis`` reads it.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from rnlib.paths import atomic_write_text, repo_path

# protocol §7's required columns (``trivial_value``: the task's trivial reference for this seed, §4), then
# what a reader needs to tell variants apart.
COLUMNS = (
    "version", "neuron", "task", "seed", "budget", "params", "width", "metric", "value", "train_value",
    "steps", "diverged", "seconds", "id_value", "trivial_value",
    "model", "kind", "omega", "init", "depth", "lr", "total_steps", "diverged_step",
)  # fmt: skip
KEY = ("version", "model", "task", "seed", "budget")  # unique per record
# notebooks/tuned's columns after COLUMNS (protocol §9): the validation metric, and which part of the track a
# row is: a trial on a tuning seed, the chosen setting on the final seeds, or the untuned protocol on them
TUNING_COLUMNS = ("val_value", "role")
TUNING_ROLES = ("trial", "tuned", "untuned")


def write_records(df: pd.DataFrame, path: str | Path, extra: tuple[str, ...] = ()) -> Path:
    """Write records (COLUMNS, then ``extra`` ones) as CSV atomically: a kill never leaves half a file.

    A relative ``path`` is under the repository root, not the working directory (``rnlib.paths.repo_path``).
    """
    missing = [c for c in (*COLUMNS, *extra) if c not in df.columns]
    if missing:
        raise ValueError(f"records lack column(s) {', '.join(missing)}; required: {', '.join(COLUMNS)}")
    if df.duplicated(list(KEY)).any():
        dup = df[df.duplicated(list(KEY), keep=False)][list(KEY)].head(2).to_dict("records")
        raise ValueError(f"duplicate records for key {KEY}: {dup}")
    path = repo_path(path)
    atomic_write_text(path, df[[*COLUMNS, *extra]].to_csv(index=False, float_format="%.9g"))
    return path


def read_records(paths: str | Path | list[str | Path]) -> pd.DataFrame:
    """Read and concatenate record CSVs (a directory means every ``*.records.csv`` in it); relative paths are
    under the repository root, as ``write_records`` writes them."""
    if isinstance(paths, (str, Path)):
        p = repo_path(paths)
        paths = sorted(p.glob("*.records.csv")) if p.is_dir() else [p]
    frames = [pd.read_csv(io.StringIO(repo_path(p).read_text())) for p in paths]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)
