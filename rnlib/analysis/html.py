"""A run folder as static HTML that opens offline: every executed notebook as a page, and an index.

``build_report(run_dir, out)`` writes ``<out>/<notebook>.html`` for each ``*.ipynb`` of the run (a failed
job's ``<stem>.failed.ipynb`` too) with nbconvert's lab template, its figures embedded as the inline PNG
outputs they already are, and ``<out>/index.html``: the summary's headline (``summary.json``, as README's
answer block), the notebooks with the status and seconds of the runner's ``.jobs/<stem>.json``, each linked
to its page, and links to ``figures/*.png``, ``results.csv`` and ``summary.json``. No page loads anything
from the network: require.js, MathJax, the widget manager and mermaid, which the template takes from CDNs,
are left out (equations show as their TeX source). Nothing here reads or writes records.
"""

from __future__ import annotations

import json
import os
import re
from html import escape
from pathlib import Path
from typing import Any

import nbformat
from jinja2 import DictLoader
from nbconvert import HTMLExporter
from nbconvert.filters import markdown2html

from rnlib.paths import EXECUTED_DIR, NOTEBOOKS_DIR, SUMMARY_STEM, atomic_write_text, repo_path, repo_relative

OFFLINE = "rnlib-offline.html.j2"
# nbconvert's lab page without the blocks that load scripts from CDNs
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
LINK = re.compile(r"(\]\()([^)\s]+)(\))")  # a Markdown link's target
STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.3rem .8rem;text-align:left}
td.n{text-align:right}.failed{color:#b00}.figures img{max-width:18rem;border:1px solid #ddd;margin:.3rem}"""


class ReportError(ValueError):
    """A run folder that cannot be rendered, as one line naming it and what is valid."""


def exporter() -> HTMLExporter:
    """nbconvert's HTML exporter on the lab template, with no script from the network."""
    return HTMLExporter(
        template_name="lab",
        template_file=OFFLINE,
        extra_loaders=[DictLoader({OFFLINE: OFFLINE_TEMPLATE})],
        embed_images=True,  # images a Markdown cell links, as data URIs like the outputs' PNGs
    )


def run_folder(run_dir: str | Path) -> Path:
    """``run_dir`` as typed (relative to the working directory) when it exists, else under the repository."""
    path = Path(run_dir).expanduser()
    return path if path.exists() else repo_path(path)


def relink(nb: nbformat.NotebookNode, source: Path, out: Path) -> nbformat.NotebookNode:
    """The notebook with its Markdown cells' relative links (written from ``source``, the folder the
    notebook was authored in) pointing to the same files from ``out``."""

    def move(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:|^[#/]", target, re.IGNORECASE):  # a URL, an anchor, absolute
            return match.group(0)
        path, hash_, anchor = target.partition("#")
        moved = Path(os.path.relpath(source / path, out)).as_posix()
        return f"{match.group(1)}{moved}{hash_}{anchor}{match.group(3)}"

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = LINK.sub(move, cell.source)
    return nb


def notebook_order(path: Path) -> tuple[int, str]:
    """The summary first, then the version notebooks, then the rest (capacity), each by name."""
    stem = path.name.removesuffix(".ipynb").removesuffix(".failed")
    return (0 if stem == SUMMARY_STEM else 1 if re.match(r"v\d\d_", stem) else 2, path.name)


def render_page(notebook: Path, out: Path, html: HTMLExporter, source: Path = NOTEBOOKS_DIR) -> Path:
    """``notebook`` rendered to ``out/<its stem>.html``; returns the page's path."""
    nb = relink(nbformat.read(notebook, as_version=4), source, out)
    name = notebook.name.removesuffix(".ipynb")
    body, _ = html.from_notebook_node(nb, resources={"metadata": {"name": name}})
    page = out / f"{name}.html"
    write_page(page, body)
    return page


def write_page(path: Path, text: str) -> None:
    """Write ``text`` atomically, readable by all (a web server serving the folder runs as another user)."""
    atomic_write_text(path, text)
    path.chmod(0o644)


def job_status(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each job's status file (``.jobs/<stem>.json``), by stem."""
    statuses = {}
    for path in sorted((run_dir / ".jobs").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            statuses[path.stem] = data
    return statuses


def headline(run_dir: Path) -> str:
    """The run's answer in three lines as HTML (README's answer block), or why there is none."""
    from rnlib.analysis import report  # matplotlib and seaborn: only when an index is built

    if not (run_dir / "summary.json").exists():
        return "<p>No <code>summary.json</code>: the summary notebook has not run in this folder.</p>"
    try:
        return markdown2html(report.render_answer(run_dir))
    except (KeyError, TypeError, ValueError) as exc:  # a summary.json written by another version
        why = escape(f"{type(exc).__name__}: {exc}"[:200])
        return f"<p>This version cannot read the headline of this run's summary.json ({why}).</p>"


def href(path: Path, out: Path) -> str:
    """``path`` as a link from a page in ``out``."""
    return escape(Path(os.path.relpath(path, out)).as_posix(), quote=True)


def notebook_table(run_dir: Path, out: Path, pages: dict[str, Path]) -> str:
    """One row per notebook (linked to its page and its file) or job without one: the status and seconds
    of its status file."""
    statuses = job_status(run_dir)
    shown = {name.removesuffix(".failed") for name in pages}
    names = [*pages, *(stem for stem in statuses if stem not in shown)]
    rows = ["<tr><th>notebook</th><th>status</th><th>seconds</th><th>file</th></tr>"]
    for name in names:
        job = statuses.get(name.removesuffix(".failed"), {})
        status = "failed" if name.endswith(".failed") else str(job.get("status", "not run by the runner"))
        seconds = job.get("seconds")
        took = f"{seconds:.1f}" if isinstance(seconds, int | float) else ""
        page = f'<a href="{href(pages[name], out)}">{escape(name)}</a>' if name in pages else escape(name)
        error = f"<br><small>{escape(str(job['error']))}</small>" if job.get("error") else ""
        file = run_dir / f"{name}.ipynb"
        link = f'<a href="{href(file, out)}">{escape(file.name)}</a>' if file.exists() else ""
        rows.append(
            f'<tr class="{escape(status, quote=True)}"><td>{page}{error}</td><td>{escape(status)}</td>'
            f'<td class="n">{took}</td><td>{link}</td></tr>'
        )
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def data_links(run_dir: Path, out: Path) -> str:
    """Links to the run's exports (results.csv, summary.json) and its figures, each figure as a thumbnail."""
    files = [run_dir / name for name in ("results.csv", "summary.json") if (run_dir / name).exists()]
    items = "".join(f'<li><a href="{href(f, out)}">{escape(f.name)}</a></li>' for f in files)
    figures = sorted((run_dir / "figures").glob("*.png"))
    thumbs = "".join(
        f'<a href="{href(f, out)}"><img src="{href(f, out)}" alt="{escape(f.stem)}" title="{escape(f.stem)}">'
        "</a>"
        for f in figures
    )
    return (f"<ul>{items}</ul>" if items else "<p>No results.csv or summary.json yet.</p>") + (
        f'<div class="figures">{thumbs}</div>' if thumbs else ""
    )


def index_page(run_dir: Path, out: Path, pages: dict[str, Path]) -> str:
    """The index: headline, notebooks table, exports and figures."""
    title = f"rnlib run {escape(repo_relative(run_dir))}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{STYLE}</style></head>
<body>
<h1>{title}</h1>
<h2>Answer</h2>
{headline(run_dir)}
<h2>Notebooks</h2>
{notebook_table(run_dir, out, pages)}
<h2>Results and figures</h2>
{data_links(run_dir, out)}
</body></html>
"""


def build_report(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Render every executed notebook of ``run_dir`` and write the index (default ``<run_dir>/html``);
    returns the pages written, the index last."""
    run_dir = run_folder(run_dir).resolve()
    notebooks = sorted(run_dir.glob("*.ipynb"), key=notebook_order) if run_dir.is_dir() else []
    if not notebooks:
        runs = sorted(p.name for p in EXECUTED_DIR.glob("*") if any(p.glob("*.ipynb")))
        raise ReportError(
            f"{run_dir} holds no executed notebook (*.ipynb); valid: {', '.join(runs) or 'none yet'} "
            "under executed/, or a folder `rnlib run --out` wrote"
        )
    out = Path(out).expanduser().resolve() if out else run_dir / "html"
    html = exporter()
    pages = {nb.name.removesuffix(".ipynb"): render_page(nb, out, html) for nb in notebooks}
    index = out / "index.html"
    write_page(index, index_page(run_dir, out, pages))
    return [*pages.values(), index]
