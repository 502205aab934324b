"""Predicted makespan of a run's work on N workers: whole notebooks as jobs (today) against training programs.

Reads a run folder (default ``executed/default``) and schedules its measured work on N workers with LPT
(longest processing time first, each job to the least loaded worker), then the summary notebook, which the
runner starts only after every job:

- notebook-level, measured: each notebook is one indivisible job lasting its wall time in
  ``.jobs/<stem>.json`` (the runner's unit of work today);
- notebook-level, modelled: each notebook lasts its training seconds plus its overhead (below). The two agree
  for a cold run (unless the floor below lifts one); in a warm rerun, whose trainings came from the cache,
  only this one says what a cold run's notebooks would take, so it is the one to compare with programs;
- program-level: every training program (one (model, task, budget) batch of seeds; its seconds are the sum of
  its records' ``seconds``, each replica's share of its batch's wall time) is a job of its own, and so is
  each notebook's overhead, which runs in the notebook's own process and can overlap.

A training is one replica with its own cache entry; several notebooks report the same one (a shared
baseline) and it is counted once. In the notebook-level model it is charged to the first notebook in the
profile's order (the runner's submission order) that reports it. A notebook's overhead is its wall time
minus the training it did (kernel start, imports, analysis, figures, the uncached retraining for figures),
floored at 0; in a warm run it did none, so the overhead is its whole wall time.

It prints the jobs of each model (count, median, longest, total), then per N the makespan of each, the lower
bound max(longest job, total / N) + summary and the makespan's ratio to it, and notebook ÷ program; then what
today's runner does on one N-core machine, where a notebook's kernel gets N ÷ kernels threads and
``Study.run`` trains that many of its programs at once; then, for N = 2, the notebook-level prediction
against the run's measured wall time. Last: ``pooling: X.XX``, modelled notebook-level over program-level
makespan at the largest N.

    .venv/bin/python benchmarks/scaling.py [--run-dir executed/default] [--workers 1 2 8 32 128]
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml

from rnlib.paths import REPO_ROOT, SUMMARY_STEM

RUN_DIR = "executed/default"  # the committed canonical run
WORKERS = (1, 2, 8, 32, 128)  # one core, this 2-core machine, a workstation, a 32-core server, a cluster
# what decides one replica's cached result, as a record shows it (rnlib.training.cache.cache_key)
TRAINING = ("neuron", "task", "budget", "omega", "init", "width", "seed", "total_steps", "lr", "depth")
PROGRAM = tuple(c for c in TRAINING if c != "seed")  # seeds that train together as one batch
NUMBERS = ("budget", "omega", "width", "seed", "total_steps", "lr", "depth")  # TRAINING's numeric columns
# why the capacity search is one job per (neuron, kind): its budgets run in order, each one's first guess
# extrapolated from the answers at the smaller ones (rnlib.training.capacity_search.next_guess)
CHAINED = {"capacity": ("neuron", "task", "omega", "init", "total_steps", "lr", "depth")}
CHECK_WORKERS = 2  # the committed run's workers: its 2 cores, the runner's default


@dataclass(frozen=True)
class Job:
    """One indivisible piece of work and its seconds on one core."""

    name: str
    seconds: float


@dataclass(frozen=True)
class Plan:
    """Jobs that may run side by side, then ``after`` seconds (the summary) once all of them are done."""

    jobs: tuple[Job, ...]
    after: float = 0.0

    @property
    def total(self) -> float:
        """Core-seconds, the summary included."""
        return sum(job.seconds for job in self.jobs) + self.after

    def makespan(self, workers: int) -> float:
        """Wall seconds under LPT on ``workers``, then the summary."""
        return lpt_makespan([job.seconds for job in self.jobs], workers) + self.after

    def bound(self, workers: int) -> float:
        """No schedule beats this: the longest job or an even split of the work, then the summary."""
        seconds = [job.seconds for job in self.jobs]
        return max(max(seconds, default=0.0), sum(seconds) / workers) + self.after


def list_makespan(durations: Iterable[float], workers: int) -> float:
    """Greedy list scheduling in the given order: each job starts on the first worker to become free."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    loads = [0.0] * workers
    for seconds in durations:
        heapq.heappush(loads, heapq.heappop(loads) + seconds)
    return max(loads)


def lpt_makespan(durations: Iterable[float], workers: int) -> float:
    """LPT: list scheduling longest job first (within 4/3 of the optimum; Graham 1969)."""
    return list_makespan(sorted(durations, reverse=True), workers)


def read_statuses(run_dir: Path) -> dict[str, dict]:
    """Each job's status file in ``.jobs`` by stem (the summary's included)."""
    statuses = {}
    for path in sorted((run_dir / ".jobs").glob("*.json")):
        try:
            status = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # half a file from a killed run counts as no status
            continue
        if isinstance(status, dict) and "seconds" in status:
            statuses[path.stem] = status
    return statuses


def read_trainings(run_dir: Path) -> pd.DataFrame:
    """Every record of every notebook, with its notebook's stem (``notebook``), the program it belongs to
    (``program``, a key) and that program's name (``label``)."""
    frames = []
    for path in sorted(run_dir.glob("*.records.csv")):
        stem = path.name.removesuffix(".records.csv")
        frame = pd.read_csv(path, usecols=[*TRAINING, "seconds"])
        frames.append(frame.assign(notebook=stem))
    if not frames:
        return pd.DataFrame(columns=[*TRAINING, "seconds", "notebook", "program", "label"])
    records = pd.concat(frames, ignore_index=True)
    for column in TRAINING:  # one spelling per value (a file of ints reads 1, one with 0.5 reads 1.0)
        values = records[column].astype(float) if column in NUMBERS else records[column]
        records[column] = values.map("{:.9g}".format) if column in NUMBERS else values.astype(str)
    records["program"] = records[list(PROGRAM)].agg("|".join, axis=1)
    records["label"] = records["neuron"] + " on " + records["task"] + ", budget " + records["budget"]
    for stem, columns in CHAINED.items():
        chained = records["notebook"] == stem
        records.loc[chained, "program"] = records.loc[chained, list(columns)].agg("|".join, axis=1)
        records.loc[chained, "label"] = records["neuron"] + " on " + records["task"] + ", every budget"
    return records


def notebook_order(run_dir: Path, stems: Iterable[str]) -> list[str]:
    """``stems`` in the run profile's ``notebooks`` order (``.jobs/profile.yaml``), the rest after, sorted."""
    stems = sorted(stems)
    try:
        listed = yaml.safe_load((run_dir / ".jobs" / "profile.yaml").read_text(encoding="utf-8"))["notebooks"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        listed = []
    ordered = [s for name in listed or [] for s in stems if s == name or s.startswith(f"{name}_")]
    return list(dict.fromkeys(ordered)) + [s for s in stems if s not in ordered]


def distinct_trainings(run_dir: Path) -> pd.DataFrame:
    """Each training once, kept in the first notebook of the profile's order that reports it."""
    records = read_trainings(run_dir)
    rank = {stem: i for i, stem in enumerate(notebook_order(run_dir, records["notebook"].unique()))}
    records = records.assign(rank=records["notebook"].map(rank)).sort_values("rank", kind="stable")
    return records.drop_duplicates(list(TRAINING), keep="first").drop(columns="rank")


def notebook_seconds(run_dir: Path) -> dict[str, float]:
    """Each notebook's measured wall seconds (its ``.jobs`` status), the summary's left out."""
    return {s: float(v["seconds"]) for s, v in read_statuses(run_dir).items() if s != SUMMARY_STEM}


def summary_seconds(run_dir: Path) -> float:
    """The summary's wall seconds, 0 when the run has none."""
    return float(read_statuses(run_dir).get(SUMMARY_STEM, {}).get("seconds", 0.0))


def measured_wall(run_dir: Path) -> tuple[float, str] | None:
    """The run's wall seconds and where they came from: the jobs' start and end times when the status files
    hold them, else the summary's provenance (first notebook start to last end) plus the summary itself."""
    statuses = read_statuses(run_dir).values()
    if statuses and all("start" in s and "end" in s for s in statuses):
        start = min(datetime.fromisoformat(s["start"]) for s in statuses)
        end = max(datetime.fromisoformat(s["end"]) for s in statuses)
        return (end - start).total_seconds(), ".jobs start to end"
    try:
        provenance = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["provenance"]
        wall = float(provenance["wall_seconds"])
    except (OSError, KeyError, TypeError, ValueError):
        return None
    summary = summary_seconds(run_dir)
    return wall + summary, f"summary.json provenance {wall:.1f} s + summary {summary:.1f} s"


def run_cores(run_dir: Path) -> int | None:
    """The cores the run's machine had, from the summary's provenance, when recorded."""
    try:
        provenance = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["provenance"]
        return int(provenance["summary"]["cpus"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def is_warm(run_dir: Path) -> tuple[bool, str]:
    """Whether the run's trainings came from the cache: their seconds exceed the core-seconds the run had
    (its cores × its wall time when known, else its notebooks' wall seconds together). Why a whole-run test:
    a notebook of a cold run also reports trainings another notebook did, so one notebook cannot tell."""
    training = float(distinct_trainings(run_dir)["seconds"].sum())
    wall, cores = measured_wall(run_dir), run_cores(run_dir)
    if wall and cores:
        available, how = cores * wall[0], f"{cores} cores × {wall[0]:,.0f} s of wall"
    else:
        available, how = sum(notebook_seconds(run_dir).values()), "its notebooks' wall seconds together"
    warm = training > available
    verb = "exceed" if warm else "fit in"
    return warm, f"{training:,.0f} s of distinct training {verb} the {available:,.0f} s the run had ({how})"


def overheads(run_dir: Path) -> dict[str, float]:
    """Each notebook's seconds outside the trainings it did: all of its wall time in a warm run, else its wall
    time minus the distinct trainings charged to it, floored at 0."""
    walls = notebook_seconds(run_dir)
    if is_warm(run_dir)[0]:
        return walls
    charged = distinct_trainings(run_dir).groupby("notebook")["seconds"].sum()
    return {stem: max(0.0, wall - float(charged.get(stem, 0.0))) for stem, wall in walls.items()}


def notebook_jobs(run_dir: Path, modelled: bool = False) -> Plan:
    """One job per notebook: its measured wall time, or (``modelled``) its charged training plus overhead."""
    if not modelled:
        jobs = [Job(stem, seconds) for stem, seconds in notebook_seconds(run_dir).items()]
        return Plan(tuple(jobs), summary_seconds(run_dir))
    charged, extra = distinct_trainings(run_dir).groupby("notebook")["seconds"].sum(), overheads(run_dir)
    stems = sorted({*charged.index, *extra})  # a notebook with records but no status file still trains
    jobs = [Job(stem, float(charged.get(stem, 0.0)) + extra.get(stem, 0.0)) for stem in stems]
    return Plan(tuple(jobs), summary_seconds(run_dir))


def program_jobs(run_dir: Path) -> Plan:
    """One job per distinct training program, plus one per notebook for its overhead."""
    programs = (
        distinct_trainings(run_dir)
        .groupby("program")
        .agg(seconds=("seconds", "sum"), label=("label", "first"))
    )
    jobs = [Job(row.label, float(row.seconds)) for row in programs.itertuples()]
    jobs += [Job(f"{stem} overhead", seconds) for stem, seconds in overheads(run_dir).items() if seconds > 0]
    return Plan(tuple(jobs), summary_seconds(run_dir))


def runner_makespan(run_dir: Path, cores: int) -> tuple[float, int, int]:
    """Today's runner on one machine of ``cores`` cores: one kernel per notebook, at most ``cores`` at once,
    each training its programs ``cores // kernels`` at a time (``kernel_env``, then ``Study.run``'s
    ``map_programs``). Returns the makespan, the kernels and their threads each. Optimistic: a notebook's
    ``Study.run`` calls run one after another, here its programs are scheduled as one pool; the capacity
    search trains one program at a time whatever its threads."""
    distinct, extra = distinct_trainings(run_dir), overheads(run_dir)
    programs = distinct.groupby(["notebook", "program"])["seconds"].sum()
    stems = sorted({*programs.index.get_level_values("notebook"), *extra})
    kernels = max(1, min(cores, len(stems)))
    threads = max(1, cores // kernels)
    notebooks = []
    for stem in stems:
        own = programs[stem].tolist() if stem in programs.index.get_level_values("notebook") else []
        alone = stem in CHAINED  # measure_capacity loops over its searches in one thread
        notebooks.append(lpt_makespan(own, 1 if alone else threads) + extra.get(stem, 0.0))
    return lpt_makespan(notebooks, kernels) + summary_seconds(run_dir), kernels, threads


def describe(label: str, plan: Plan) -> str:
    """One row of the jobs table: count, median, longest and total seconds, and the longest job's name."""
    seconds = [job.seconds for job in plan.jobs]
    median = statistics.median(seconds) if seconds else 0.0
    longest = max(plan.jobs, key=lambda job: job.seconds, default=Job("-", 0.0))
    return (
        f"{label:26s} {len(seconds):6d} {median:9.1f} {longest.seconds:10.1f} {sum(seconds):10,.0f}  "
        f"{longest.name}"
    )


def print_check(run_dir: Path, measured: Plan) -> None:
    """The N = 2 notebook-level prediction on measured seconds against the run's measured wall time."""
    wall = measured_wall(run_dir)
    if wall is None:
        print(f"\nN = {CHECK_WORKERS} check: no measured wall time (no start/end in .jobs, no summary.json)")
        return
    seconds, source = wall
    predicted = measured.makespan(CHECK_WORKERS)
    by_name = {job.name: job.seconds for job in measured.jobs}
    in_order = list_makespan([by_name[s] for s in notebook_order(run_dir, by_name)], CHECK_WORKERS)
    in_order += measured.after  # the runner submits in the profile's order: list scheduling, not LPT
    print(f"\nN = {CHECK_WORKERS} check, notebook-level on measured seconds:")
    print(f"  predicted: LPT {predicted:,.1f} s; the profile's order (the runner's) {in_order:,.1f} s")
    print(f"  measured:  {seconds:,.1f} s ({source})")
    print(
        f"  predicted ÷ measured: {predicted / seconds:.2f} (LPT), {in_order / seconds:.2f} (profile order)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Print the jobs, the makespan table and the N = 2 check; ``pooling:`` last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=RUN_DIR, help=f"a run folder (default {RUN_DIR})")
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKERS))
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    run_dir = run_dir if run_dir.is_absolute() or run_dir.exists() else REPO_ROOT / run_dir
    if not (run_dir / ".jobs").is_dir():
        parser.error(f"{args.run_dir}: no .jobs folder, so not a run folder")
    if min(args.workers) < 1:
        parser.error("--workers: every value must be at least 1")
    plans = {
        "notebook, measured": notebook_jobs(run_dir),
        "notebook, modelled": notebook_jobs(run_dir, modelled=True),
        "program": program_jobs(run_dir),
    }
    records, distinct = read_trainings(run_dir), distinct_trainings(run_dir)
    print(
        f"run {args.run_dir}: {len(plans['notebook, measured'].jobs)} notebooks, {len(records)} training "
        f"records = {len(distinct)} distinct trainings in {distinct['program'].nunique()} programs; "
        f"summary {plans['program'].after:.1f} s, run last"
    )
    warm, why = is_warm(run_dir)
    print(f"cache: {'warm, trainings from the cache' if warm else 'cold, trainings done in this run'}: {why}")
    if warm:
        print("  so each notebook's overhead is its whole wall time; only 'notebook, modelled' is a cold run")

    print(f"\n{'jobs':26s} {'count':>6s} {'median s':>9s} {'longest s':>10s} {'total s':>10s}  longest")
    for label, plan in plans.items():
        print(describe(label + (" + overheads" if label == "program" else ""), plan))

    print("\n" + " " * 7 + "".join(f" | {label:>26s}" for label in plans) + " | notebook modelled")
    print("workers" + f" | {'makespan s':>10s} {'bound s':>9s} {'÷':>5s}" * len(plans) + " | ÷ program")
    for n in args.workers:
        cells = "".join(
            f" | {p.makespan(n):10,.0f} {p.bound(n):9,.0f} {p.makespan(n) / p.bound(n):5.2f}"
            for p in plans.values()
        )
        ratio = plans["notebook, modelled"].makespan(n) / plans["program"].makespan(n)
        print(f"{n:7d}{cells} | {ratio:16.2f}x")
    print("÷: makespan over its lower bound, max(longest job, total ÷ N) + summary")
    print("core-seconds: " + ", ".join(f"{label} {plan.total:,.0f}" for label, plan in plans.items()))

    print("\ntoday's runner on one N-core machine: min(N, notebooks) kernels, each training its programs")
    print("N // kernels at a time (optimistic: a notebook's Study.run calls run one after another)")
    print(f"{'workers':>7s} {'kernels':>7s} {'threads':>7s} {'makespan s':>10s} {'÷ program':>9s}")
    for n in args.workers:
        seconds, kernels, threads = runner_makespan(run_dir, n)
        ratio = seconds / plans["program"].makespan(n)
        print(f"{n:7d} {kernels:7d} {threads:7d} {seconds:10,.0f} {ratio:8.2f}x")

    print_check(run_dir, plans["notebook, measured"])
    n = max(args.workers)
    print(f"pooling: {plans['notebook, modelled'].makespan(n) / plans['program'].makespan(n):.2f}")


if __name__ == "__main__":
    main()
