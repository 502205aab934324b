"""A run's report: read its records and notebooks, draw and export the summary, render README's Results.

``load_run`` reads ``<run_dir>/*.records.csv``, the executed notebooks' papermill metadata and the runner's
``.jobs/<stem>.json``; ``export`` writes ``results.csv``, ``figures/*.png`` and ``summary.json`` beside them;
``render_results`` turns ``summary.json`` + ``results.csv`` into the Markdown between README's markers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from rnlib.analysis import plots
from rnlib.analysis.capacity import capacity_figure
from rnlib.analysis.summary import (
    NOT_TESTED,
    Summary,
    budget_sweep,
    core,
    is_capacity,
    is_tuned,
    relative_to_vanilla,
    side_by_side,
    standard_budgets,
    summarize,
    widths,
)
from rnlib.core.catalog import BASELINES, NEURONS
from rnlib.paths import REPO_ROOT, SUMMARY_STEM, VERSION_GLOB, atomic_write_text
from rnlib.provenance import environment_info
from rnlib.records import COLUMNS, read_records

BLOCKS = ("answer", "versions", "results")  # README's generated blocks, in the order they appear


def markers(block: str) -> tuple[str, str]:
    """The lines that open and close a generated README block."""
    return f"<!-- rnlib:{block}:start -->", f"<!-- rnlib:{block}:end -->"


START, END = markers("results")
README_FIGURES = ("heatmap", "seeds", "ood")  # the figures README links; all are in <run_dir>/figures


def resolve_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as given when absolute, else under the repository root (what the runner passes, whatever
    the kernel's working directory); a relative folder found only under the working directory, as typed."""
    path = Path(run_dir)
    if path.is_absolute() or (path.exists() and not (REPO_ROOT / path).exists()):
        return path
    return REPO_ROOT / path


def read_run_records(run_dir: Path) -> pd.DataFrame:
    """Every ``*.records.csv`` of a run, each row tagged with the notebook (file stem) that wrote it."""
    paths = sorted(run_dir.glob("*.records.csv"))
    frames = [read_records(p).assign(notebook=p.name.removesuffix(".records.csv")) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*COLUMNS, "notebook"])


def notebook_runs(run_dir: Path) -> pd.DataFrame:
    """Per executed notebook: status, start, end, seconds, error, parameters (papermill and .jobs/*.json)."""
    rows: dict[str, dict] = {}
    for path in sorted(run_dir.glob("*.ipynb")):
        stem = path.name.removesuffix(".ipynb").removesuffix(".failed")
        if stem == SUMMARY_STEM:
            continue
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
        pm = meta.get("papermill", {})
        failed = path.name.endswith(".failed.ipynb") or bool(pm.get("exception"))
        rows[stem] = {"notebook": stem, "status": "failed" if failed else "done", "error": "",
                      "start": pm.get("start_time"), "end": pm.get("end_time"), "seconds": pm.get("duration"),
                      "parameters": pm.get("parameters", {}), "papermill": pm.get("version"),
                      "python": meta.get("language_info", {}).get("version")}  # fmt: skip
    for path in sorted((run_dir / ".jobs").glob("*.json")):
        job = json.loads(path.read_text(encoding="utf-8"))
        if path.stem == SUMMARY_STEM or not isinstance(job, dict):
            continue
        row = rows.setdefault(path.stem, {"notebook": path.stem, "parameters": job.get("parameters", {})})
        row.update(status=job.get("status", row.get("status")), error=job.get("error") or "")
        row["seconds"] = row["seconds"] if row.get("seconds") is not None else job.get("seconds")
    columns = ["notebook", "status", "start", "end", "seconds", "error", "parameters", "papermill", "python"]
    return pd.DataFrame(list(rows.values()), columns=columns)


def load_run(run_dir: str | Path) -> Summary:
    """Read a run directory and compute its summary (rnlib.analysis.summary); nothing trains."""
    path = resolve_run_dir(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist; run `python -m rnlib run` first")
    records = read_run_records(path)
    if records.empty or (is_tuned(records) | is_capacity(records)).all():
        raise FileNotFoundError(f"{path} holds no version notebook's *.records.csv (the summary reads "
                                "v01-v15's); run them into it first")  # fmt: skip
    return summarize(records, notebook_runs(path), environment_info())


def heatmap_figure(rel: pd.DataFrame, metrics: dict[str, str]) -> Figure:
    """Neuron × task relative to vanilla: log10 MSE ratio, accuracy difference; blue = better than vanilla."""
    groups = [(t, label, cmap) for t, label, cmap in (
        ([c for c in rel.columns if metrics[c] == "mse"], "log10(MSE ÷ vanilla's)", "RdBu_r"),
        ([c for c in rel.columns if metrics[c] == "accuracy"], "accuracy − vanilla's (points)", "RdBu"),
    ) if t]  # fmt: skip
    fig = plots.plt.figure(figsize=(1.0 * len(rel.columns) + 4, 0.38 * len(rel) + 1.8))
    axes = fig.subplots(
        1, max(1, len(groups)), squeeze=False, width_ratios=[len(t) for t, _, _ in groups] or [1]
    )
    for ax, (tasks, label, cmap) in zip(axes[0], groups, strict=False):
        lim = np.nanmax(np.abs(rel[tasks].to_numpy())) if rel[tasks].notna().any().any() else 1.0
        sns.heatmap(rel[tasks], ax=ax, cmap=cmap, center=0, vmin=-lim, vmax=lim, annot=True, fmt=".2g",
                    cbar_kws={"label": label})  # fmt: skip
        ax.set(xlabel="", ylabel="")
    title = (
        "relative to vanilla, budget-matched default options; top row: the trivial reference "
        "(blank: both MSEs at float precision)"
    )
    return plots.finish(fig, title=title)


def seeds_figure(c: pd.DataFrame) -> Figure:
    """Per task every seed of every neuron as a dot, the mean as a black diamond."""
    tasks, models = list(dict.fromkeys(c["task"])), list(dict.fromkeys(c["model"]))
    colors = dict(zip(models, sns.color_palette("husl", len(models)), strict=True))
    fig, axes = plots.facets(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        d = c[(c["task"] == task) & ~c["diverged"].astype(bool)]
        sns.stripplot(d, x="model", y="value", hue="model", order=models, hue_order=models, palette=colors,
                      legend=False, size=3.5, jitter=0.15, ax=ax)  # fmt: skip
        sns.pointplot(d, x="model", y="value", order=models, errorbar=None, linestyle="none", markers="D",
                      color="black", markersize=3, ax=ax)  # fmt: skip
        ax.set_title(task)
        plots.metric_axis(ax, d["metric"].iloc[0])
        plots.label_ticks(ax)
    return plots.finish(fig)


def figures(s: Summary) -> dict[str, Figure]:
    """The summary's figures by file name: heatmap, seeds, widths, budget_sweep (if swept), ood (if run)."""
    c, rel = core(s.records), relative_to_vanilla(s.records)
    if c.empty:
        return {}
    metrics = dict(zip(c["task"], c["metric"], strict=True))
    figs = {"heatmap": heatmap_figure(rel, metrics)} if rel.size else {}
    figs["seeds"] = seeds_figure(c)
    w = widths(s.records)
    if len(w):
        figs["widths"] = plots.width_bars(w[w["budget"] == w["task"].map(standard_budgets(c))])
    sweep = budget_sweep(s.records)
    if len(sweep):
        figs["budget_sweep"] = plots.budget_sweep(sweep, list(dict.fromkeys(sweep["model"])))
    if (c["task"] == "ood").any():
        figs["ood"] = plots.ood_figure(c[c["task"] == "ood"])
    capacity = s.records[is_capacity(s.records)]
    if len(capacity):
        figs["capacity"] = capacity_figure(capacity)
    return figs


def findings_markdown(s: Summary) -> str:
    """The six verdicts as Markdown (claim, verdict in bold, the numbers), then the GLU control."""
    lines = [f"{f.number}. {f.finding}: **{f.verdict}**. {f.evidence}." for f in s.findings]
    c = s.control
    return "\n".join([*lines, f"\nControl: {c.finding}: **{c.verdict}**. {c.evidence}."])


def provenance_markdown(s: Summary) -> str:
    """Commit, packages, machine and date of the summary, and what the run's notebooks recorded."""
    p, env = s.provenance, s.provenance["summary"]
    packages = ", ".join(
        f"{k} {v}" for k, v in env.items() if k not in ("git_commit", "machine", "date", "cpus")
    )
    failed = "; ".join(p["failed"]) or "none"
    return (
        f"- summary: commit `{env['git_commit']}`, {env['machine']} ({env['cpus']} CPUs), {env['date']}\n"
        f"- packages: {packages}\n"
        f"- notebooks: {p['notebooks']} (failed: {failed}); papermill {', '.join(p['papermill']) or '?'}, "
        f"kernel Python {', '.join(p['kernel_python']) or '?'}, devices {', '.join(p['devices']) or '?'}\n"
        f"- time: {duration(p['total_seconds'])} of notebook runs, {duration(p['wall_seconds'])} wall clock "
        f"({p['first_start']} to {p['last_end']})"
    )


def frame_json(df: pd.DataFrame, orient: str = "records") -> object:
    """A DataFrame as plain JSON values (NaN and ±inf become null)."""
    return json.loads(df.replace([np.inf, -np.inf], np.nan).to_json(orient=orient, default_handler=str))


def summary_json(s: Summary, figure_files: list[str]) -> dict:
    """What README's generator reads: main table, regime map, verdicts, notes, timings and provenance."""
    findings = [{**vars(f), "table": frame_json(f.table)} for f in s.findings]
    control = {**vars(s.control), "table": frame_json(s.control.table)}
    timings = {k: s.provenance[k] for k in ("total_seconds", "wall_seconds")}
    return {
        "main_table": frame_json(s.main_table, orient="split"),
        "regime_map": frame_json(s.regime),
        "regime_by_kind": frame_json(s.regime_by_kind),
        "findings": findings,
        "control": control,
        "skill": frame_json(s.skill, orient="split"),
        "notes": s.notes,
        "timings": {"notebooks": frame_json(s.runs.drop(columns=["parameters"])), **timings},
        "provenance": s.provenance,
        "figures": figure_files,
        # the tuning track (notebooks/tuned, protocol §9): each finding's verdict after tuning, and its map
        "after_tuning": frame_json(side_by_side(s).reset_index().astype(str)) if s.tuned else [],
        "tuned_regime_map": frame_json(s.tuned_regime) if s.tuned else [],
    }


def export(s: Summary, run_dir: str | Path, figs: dict[str, Figure]) -> list[Path]:
    """Write results.csv, figures/<name>.png and (last) summary.json into the run directory."""
    out = resolve_run_dir(run_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    written = [out / "results.csv"]
    atomic_write_text(written[0], s.records.to_csv(index=False, float_format="%.9g"))
    for name, fig in figs.items():
        fig.savefig(out / "figures" / f"{name}.png", dpi=110, bbox_inches="tight")
        written.append(out / "figures" / f"{name}.png")
    files = [f"figures/{name}.png" for name in figs]
    atomic_write_text(out / "summary.json", json.dumps(summary_json(s, files), indent=1, default=str) + "\n")
    return [*written, out / "summary.json"]


def duration(seconds: float | None) -> str:
    """``2 h 05 min``, ``4 min 09 s`` or ``12.3 s``."""
    if seconds is None or not np.isfinite(seconds):
        return "unknown"
    m, s = divmod(round(seconds), 60)
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min {s:02d} s" if m else f"{seconds:.1f} s"


def md_table(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub Markdown table (its index becomes the first column)."""
    cell = lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).replace("|", "\\|")  # noqa: E731
    head = [str(df.index.name or ""), *map(str, df.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = zip(df.index, df.to_numpy().tolist(), strict=True)
    lines += ["| " + " | ".join(cell(v) for v in [i, *row]) + " |" for i, row in rows]
    return "\n".join(lines)


def run_line(data: dict, records: pd.DataFrame, rel: str) -> str:
    """Two sentences: what the run holds, where and when it ran, and how long it took."""
    env, timing = data["provenance"]["summary"], data["timings"]
    seeds = ", ".join(str(int(x)) for x in sorted(records["seed"].dropna().unique()))
    slowest = max(timing["notebooks"], key=lambda r: r.get("seconds") or 0, default=None)
    slow = f"; slowest {slowest['notebook']} ({duration(slowest['seconds'])})" if slowest else ""
    return (
        f"From `{rel}`: {len(records)} records (deduplicated) of {records['neuron'].nunique()} neurons on "
        f"{records['task'].nunique()} tasks, seeds {seeds}, from {len(timing['notebooks'])} notebooks; "
        f"commit `{env.get('git_commit')}`, torch {env.get('torch')}, {env.get('machine')}, "
        f"summarised {env.get('date')}."
        f" The notebooks took {duration(timing['total_seconds'])} in total, "
        f"{duration(timing['wall_seconds'])} wall clock{slow}."
    )


def render_results(run_dir: str | Path) -> str:
    """README's Results section, from ``<run_dir>/summary.json`` and ``results.csv``."""
    path, data = load_summary(run_dir)
    rel = Path(os.path.relpath(path, REPO_ROOT)).as_posix()
    findings = (
        pd.DataFrame([*data["findings"], data["control"]])
        .set_index("number")[["finding", "verdict", "evidence"]]
        .rename(index={0: "control"})
    )
    findings["verdict"] = "**" + findings["verdict"] + "**"
    if data.get("after_tuning"):  # a run with notebooks/tuned: each finding's verdict after tuning beside it
        tuned = {str(r["finding"]): r["after tuning"] for r in data["after_tuning"]}
        findings.insert(2, "after tuning", [tuned.get(str(n), "") for n in findings.index])
    notes = "\n".join(f"- {n}" for n in data["notes"])
    figures = [f for f in data["figures"] if Path(f).stem in README_FIGURES]
    parts = [
        run_line(data, pd.read_csv(path / "results.csv"), rel),
        "### Findings of the original study, checked\n\n" + md_table(findings),
        "### Which neuron wins which kind of task (a winner only where the paired rule decides it)\n\n"
        + md_table(pd.DataFrame(data["regime_by_kind"]).set_index("kind")),
        "### Test metric per model and task\n\nGeometric mean ×/÷ geometric std over seeds for MSE, "
        "mean ± std for accuracy, n seeds; the first row is each task's trivial reference (predicting 0 or "
        "the training mean; the majority class). ★ best and decided better than every other model; ≈ "
        "cannot be told from the best by the paired rule (docs/protocol.md §6).\n\n"
        + md_table(pd.DataFrame(**data["main_table"]).rename_axis("model")),
        f"Caveats (protocol §4):\n\n{notes}" if notes else "",
        "\n".join(f"![{Path(f).stem}]({rel}/{f})" for f in figures),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def load_summary(run_dir: str | Path) -> tuple[Path, dict]:
    """A run folder and its ``summary.json``."""
    path = resolve_run_dir(run_dir)
    if not (path / "summary.json").exists():
        raise FileNotFoundError(
            f"{path / 'summary.json'} does not exist; execute notebooks/summary.ipynb first"
        )
    return path, json.loads((path / "summary.json").read_text(encoding="utf-8"))


def render_answer(run_dir: str | Path) -> str:
    """The study's answer in three lines, from the run's findings and regime map."""
    _, data = load_summary(run_dir)
    findings = {f["number"]: f for f in data["findings"]}
    first = findings.get(1)
    cap = [r for r in (first or {}).get("table", []) if r.get("task") == "capacity"]
    ratios = ", ".join(
        f"×{10 ** r['diff']:.2f} [{10 ** r['low']:.2f}, {10 ** r['high']:.2f}] at {int(r['budget']):,} "
        f"({r['decision']})"
        for r in cap
    )
    base = [r["baseline_mean"] for r in sorted(cap, key=lambda r: r["budget"])]
    falling = len(base) > 1 and all(b2 < b1 for b1, b2 in itertools.pairwise(base))
    caveat = (
        "; vanilla's bits per parameter fall with the budget, a sign that its probes are under-trained, so "
        "read the ratios as provisional (docs/protocol.md §8)"
        if falling
        else ""
    )
    storage = (
        f"finding 1 ({first['finding']}) is **{first['verdict']}**: SinGLU's bits per parameter over "
        f"vanilla's, per budget: {ratios or 'not measured'} (geometric-mean ratio paired by seed, its 95% "
        f"interval, Holm decision){caveat}"
        if first
        else "this run measured no capacity"
    )
    regime = pd.DataFrame(data["regime_map"])
    won = regime[regime["winner"].fillna("").ne("")]
    open_ = regime["outcome"].value_counts()
    kinds = (
        f"with 3 seeds the paired rule of docs/protocol.md §6 names a winner on {len(won)} of {len(regime)} "
        f"tasks{': ' + ', '.join(f'{r.task} ({r.winner})' for r in won.itertuples()) if len(won) else ''}; "
        "on the others the best neuron cannot be told from the runner-up ("
        + ", ".join(f"{n} {o}" for o, n in open_.items() if o not in ("better",))
        + ")"
    )
    counts = pd.Series([f["verdict"] for f in data["findings"]]).value_counts()
    tally = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
    return (
        f"- **Does a richer neuron store more per parameter?** In capacity (random labels), {storage}.\n"
        f"- **Which neuron wins which kind of task?** {kinds[0].upper()}{kinds[1:]}.\n"
        f"- **The original study's six findings, checked at a matched budget:** {tally} (Results below)."
        f"{survival(data.get('after_tuning') or [])}\n"
    )


def survival(rows: list[dict]) -> str:
    """One sentence from summary.json's ``after_tuning``: which findings keep their verdict after tuning."""
    if not rows:
        return ""
    name = {str(r["finding"]): f"finding {r['finding']}" if r["finding"] != "control" else "the control"
            for r in rows}  # fmt: skip
    tested = [r for r in rows if r["after tuning"] not in (NOT_TESTED, "no tuned records")]
    kept = [name[str(r["finding"])] for r in tested if r["after tuning"] == r["original protocol"]]
    moved = [f"{name[str(r['finding'])]} {r['original protocol']} → {r['after tuning']}"
             for r in tested if r["after tuning"] != r["original protocol"]]  # fmt: skip
    untested = [name[str(r["finding"])] for r in rows if r not in tested]
    return (
        " After tuning each neuron's learning rate and ω on validation (docs/protocol.md §9), "
        f"the same verdict: {', '.join(kept) or 'none'}; changed: {', '.join(moved) or 'none'}"
        + (f"; not tested: {', '.join(untested)}" if untested else "")
        + "."
    )


def notebook_facts(notebook: Path) -> dict[str, str]:
    """An executed version notebook's title, hypothesis and verdict (its last cell's output)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    intro = "".join(cells[0]["source"]).splitlines() if cells else []
    title = intro[0].lstrip("# ").split(":", 1)[-1].strip() if intro else notebook.stem
    hypothesis = next((line for line in intro if line.startswith("**Hypothesis.**")), "")
    outputs = cells[-1].get("outputs", []) if cells else []
    text = "".join("".join(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    verdict = next((s for s in text.split("**") if s.startswith("Verdict:")), "no verdict recorded")
    return {
        "title": title,
        "hypothesis": hypothesis.removeprefix("**Hypothesis.**").strip(),
        "verdict": verdict.removeprefix("Verdict:").strip().rstrip("."),
    }


def render_versions(run_dir: str | Path) -> str:
    """v01–v15: each notebook's neurons and equations, hypothesis, link and verdict, from the executed run."""
    path, _ = load_summary(run_dir)
    rel = Path(os.path.relpath(path, REPO_ROOT)).as_posix()
    rows = []
    for notebook in sorted(path.glob(VERSION_GLOB)):
        facts = notebook_facts(notebook)
        records_file = notebook.with_suffix(".records.csv")
        trained = read_records(records_file)["neuron"].unique() if records_file.exists() else []
        version = notebook.stem.split("_")[0]  # v01
        own = [n for n in NEURONS if NEURONS[n].version == f"v{int(version[1:])}"] or [
            n for n in trained if n not in BASELINES
        ]
        equations = "<br>".join(f"`{n}`: ${NEURONS[n].equation}$" for n in own if n in NEURONS)
        link = f"[{notebook.stem}]({rel}/{notebook.name})"
        rows.append((version, facts["title"], equations or "(the neurons above)", facts["hypothesis"], link,
                     facts["verdict"]))  # fmt: skip
    table = pd.DataFrame(
        rows, columns=["version", "question", "neurons", "hypothesis", "executed", "verdict"]
    )
    return md_table(table.set_index("version")) + "\n"


RENDER = {"answer": render_answer, "versions": render_versions, "results": render_results}


def split_readme(text: str, readme: Path, block: str = "results") -> tuple[str, str, str]:
    """README as (up to and including the block's start line, the block, from its end line on)."""
    start, end = markers(block)
    lines = text.splitlines(keepends=True)
    idx = {m: [i for i, line in enumerate(lines) if line.strip() == m] for m in (start, end)}
    if len(idx[start]) != 1 or len(idx[end]) != 1 or idx[start][0] > idx[end][0]:
        raise ValueError(f"{readme} needs exactly one `{start}` line followed by one `{end}` line")
    a, b = idx[start][0], idx[end][0]
    return "".join(lines[: a + 1]), "".join(lines[a + 1 : b]), "".join(lines[b:])


def generated(text: str, readme: Path, run_dir: str | Path) -> str:
    """``text`` (a README) with every generated block rewritten from ``run_dir``."""
    for block in BLOCKS:
        head, _, tail = split_readme(text, readme, block)
        text = head + RENDER[block](run_dir) + tail
    return text


def update_readme(run_dir: str | Path, readme: str | Path = "README.md") -> bool:
    """Rewrite README's generated blocks from ``run_dir``; True when the file changed."""
    readme = Path(readme) if Path(readme).is_absolute() or Path(readme).exists() else REPO_ROOT / readme
    text = readme.read_text(encoding="utf-8")
    new = generated(text, readme, run_dir)
    if new == text:
        return False
    atomic_write_text(readme, new)
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m rnlib readme [--run-dir DIR] [--readme FILE] [--check]``; 1 on a stale README (--check)."""
    p = argparse.ArgumentParser(
        prog="python -m rnlib readme",
        description="Regenerate README's generated blocks (answer, versions, results) from a run.",
    )
    p.add_argument("--run-dir", default="executed/default", help="run directory holding summary.json")
    p.add_argument("--readme", default=str(REPO_ROOT / "README.md"), help="README to update")
    p.add_argument(
        "--check", action="store_true", help="exit 1 if README differs from what would be generated"
    )
    args = p.parse_args(argv)
    try:
        if args.check:
            readme = Path(args.readme)
            text = readme.read_text(encoding="utf-8")
            stale = generated(text, readme, args.run_dir) != text
            state = "out of date; run `python -m rnlib readme`" if stale else "up to date"
            print(f"{args.readme}: results {state}")
            return int(stale)
        changed = update_readme(args.run_dir, args.readme)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.readme}: {'results updated' if changed else 'already up to date'}")
    return 0
