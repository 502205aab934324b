"""Command line: ``python -m rnlib run PROFILE.run.yaml | readme | report`` (the ``rnlib`` console script).

Each subcommand is one ``add_<name>_command(subparsers)`` function that adds its parser and sets
``handler``; list it in ``COMMANDS``. Exit codes: 0 ok, 1 a job failed, 2 bad profile or usage,
130 interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rnlib.batch.profiles import Job, ProfileError, expand_jobs, load_profile, select_jobs
from rnlib.batch.runner import LOCAL_POOL, NO_POOL, JobResult, RunError, default_out, job_state, run_profile
from rnlib.paths import SUMMARY_STEM, repo_relative


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handler: stop like Ctrl-C, so running kernels are stopped and finished jobs kept."""
    raise KeyboardInterrupt


def format_report(results: Sequence[JobResult], seconds: float) -> str:
    """The end-of-run table: one row per job, then the counts."""
    width = max([len(r.stem) for r in results] + [3])
    rows = [f"{'job':<{width}}  status   seconds  note"]
    for r in results:
        took = f"{r.seconds:7.1f}" if r.seconds is not None else "      -"
        rows.append(f"{r.stem:<{width}}  {r.status:<7}  {took}  {r.note}".rstrip())
    counts = ", ".join(f"{sum(r.status == s for r in results)} {s}" for s in ("done", "skipped", "failed"))
    return "\n".join([*rows, f"{len(results)} jobs: {counts}; {seconds:.1f}s"])


def format_plan(jobs: Sequence[Job], out: Path, summary: bool) -> str:
    """The dry-run listing: each job's state, output stem, notebook and parameters."""
    lines = [f"{len(jobs)} jobs -> {repo_relative(out)}"]
    for job in jobs:
        params = ", ".join(f"{k}={v!r}" for k, v in job.parameters.items())
        lines.append(f"  {job_state(out, job):<7}  {job.stem}  ({job.notebook.name}: {params})")
    lines.append(f"then {SUMMARY_STEM}.ipynb with run_dir={repo_relative(out)}" if summary else "no summary")
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    """``rnlib run``: validate the profile, run its jobs, print the report; 1 if any job failed."""
    start = time.monotonic()
    try:
        profile = load_profile(args.profile)
        only = [name for name in (args.only or "").split(",") if name]
        if args.dry_run:
            out = args.out.resolve() if args.out else default_out(profile)
            print(format_plan(select_jobs(expand_jobs(profile), only), out, profile.summary))
            return 0
        signal.signal(signal.SIGTERM, _interrupt)
        scheduler = None if args.scheduler == NO_POOL else args.scheduler
        options = {"workers": args.workers, "scheduler": scheduler, "force": args.force}
        results = run_profile(profile, args.out, only=only, timeout=args.timeout, **options)
    except (ProfileError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished jobs are kept; run the same command again to resume", file=sys.stderr)
        return 130
    print(format_report(results, time.monotonic() - start))
    return 1 if any(r.status == "failed" for r in results) else 0


def add_run_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``rnlib run``."""
    parser = subparsers.add_parser(
        "run",
        help="execute a profile's notebooks with papermill",
        description="Run every job of a profile (one papermill execution per notebook and grid combination), "
        "skipping completed ones, then the summary notebook.",
    )
    parser.add_argument("profile", type=Path, help="YAML run profile, e.g. parameters/smoke.run.yaml")
    parser.add_argument("--out", type=Path, help="run folder (default: executed/<profile name>)")
    parser.add_argument("--workers", type=_positive_int, help="parallel kernels (default: number of cores)")
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=LOCAL_POOL,
        help="where the notebooks' training programs run: 'local' (default), one pool of --workers processes "
        "started for the run and shared by every notebook; a Dask scheduler's address, its workers; "
        f"'{NO_POOL}', each kernel trains its own programs",
    )
    parser.add_argument(
        "--only", metavar="NAMES", help="comma-separated notebooks or job stems, e.g. v10,v15"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the job list and exit")
    parser.add_argument("--force", action="store_true", help="rerun completed jobs too")
    parser.add_argument("--timeout", type=_positive_float, metavar="SECONDS", help="limit per cell")
    parser.set_defaults(handler=run_command)


def readme_command(args: argparse.Namespace) -> int:
    """``rnlib readme``: hand the remaining arguments to rnlib.analysis.report (imported here: matplotlib)."""
    from rnlib.analysis import report

    return report.main(args.extra)


def add_readme_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``rnlib readme``: its options are rnlib.analysis.report's (``rnlib readme --help``)."""
    parser = subparsers.add_parser(
        "readme", add_help=False, help="regenerate README's generated blocks from a run (--check to verify)"
    )
    parser.set_defaults(handler=readme_command, takes_extra=True)


def report_command(args: argparse.Namespace) -> int:
    """``rnlib report``: a run folder as static HTML (nbconvert, imported here); 2 when it has no notebook."""
    from rnlib.analysis import html

    try:
        written = html.build_report(args.run_dir, args.out)
    except html.ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(written) - 1} notebook pages and the index: {repo_relative(written[-1])}")
    return 0


def add_report_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``rnlib report``."""
    parser = subparsers.add_parser(
        "report",
        help="render a run folder's executed notebooks and an index as static HTML that opens offline",
        description="Render every executed notebook of a run folder to HTML (figures embedded, no script "
        "from the network) and write index.html: the summary's headline, each notebook's status and "
        "seconds, links to its page, the figures and results.csv.",
    )
    parser.add_argument(
        "run_dir", nargs="?", default="executed/default", help="run folder (default: executed/default)"
    )
    parser.add_argument("--out", type=Path, help="where the pages go (default: RUN_DIR/html)")
    parser.set_defaults(handler=report_command)


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_run_command,
    add_readme_command,
    add_report_command,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``rnlib`` parser with every subcommand in COMMANDS."""
    parser = argparse.ArgumentParser(prog="rnlib", description="RichNeuron study tools.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and dispatch to the subcommand's handler; return the exit code."""
    parser = build_parser()
    args, args.extra = parser.parse_known_args(argv)
    if args.extra and not getattr(args, "takes_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(args.extra)}")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
