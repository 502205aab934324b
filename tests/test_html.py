"""Tests for rnlib.analysis.html (``rnlib report``): a run folder as static HTML pages and an index whose
every link resolves, with figures embedded and nothing loaded from the network."""

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from rnlib.__main__ import main
from rnlib.analysis.html import build_report
from rnlib.paths import REPO_ROOT

# a 1x1 PNG
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
NETWORK = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=["']?(?:https?:)?//""", re.I)


def notebook(path: Path, title: str) -> None:
    """An executed notebook: a title with a link relative to notebooks/ and an equation, a figure output."""
    nb = new_notebook()
    text = f"# {title}\n\nSee [the protocol](../docs/protocol.md#s6) and $\\sin(\\omega x)$."
    figure = new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})
    nb.cells = [new_markdown_cell(text), new_code_cell("fig", outputs=[figure], execution_count=1)]
    nbformat.write(nb, path)


def fake_run(folder: Path) -> Path:
    """A run folder as the runner leaves it: two notebooks and a failed one, status files, exports."""
    run = folder / "run"
    (run / ".jobs").mkdir(parents=True)
    (run / "figures").mkdir()
    notebook(run / "summary.ipynb", "Summary")
    notebook(run / "v01_fixture.ipynb", "V01: a fixture")
    notebook(run / "v02_broken.failed.ipynb", "V02: broken")
    statuses = {
        "summary": {"status": "done", "seconds": 3.25, "error": ""},
        "v01_fixture": {"status": "done", "seconds": 12.5, "error": ""},
        "v02_broken": {"status": "failed", "seconds": 1.0, "error": "cell 2: ValueError: boom"},
        "v03_lost": {"status": "failed", "seconds": 0.0, "error": "BrokenProcessPool: died"},  # no notebook
    }
    for stem, status in statuses.items():
        (run / ".jobs" / f"{stem}.json").write_text(json.dumps({"id": "x", **status}))
    (run / ".jobs" / "profile.yaml").write_text("name: run\n")
    (run / "figures" / "heatmap.png").write_bytes(b"\x89PNG")
    (run / "results.csv").write_text("version,value\nv01,1\n")
    return run


class Links(HTMLParser):
    """Every href and src of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("href", "src") and value]


def links(page: Path) -> list[str]:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.links


def test_every_index_link_resolves_and_pages_embed_their_figures_offline(tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    written = build_report(run)
    out = run / "html"
    index = out / "index.html"
    assert written[-1] == index
    assert sorted(p.name for p in written) == [
        "index.html", "summary.html", "v01_fixture.html", "v02_broken.failed.html"
    ]  # fmt: skip
    hrefs = links(index)
    for link in hrefs:
        assert (out / link).is_file(), f"index.html links {link}, which does not exist"
    assert hrefs.index("summary.html") < hrefs.index("v01_fixture.html")  # the summary comes first
    assert {"../results.csv", "../figures/heatmap.png", "../v01_fixture.ipynb"} <= set(hrefs)
    text = index.read_text()
    assert "12.5" in text and "cell 2: ValueError: boom" in text and "v03_lost" in text
    assert "No <code>summary.json</code>" in text  # the headline needs the summary's export
    for page in written:
        html = page.read_text()
        assert not NETWORK.findall(html), f"{page.name} loads from the network"
        assert "<script" not in html or page == index, page.name  # no require.js, MathJax or widgets
        if page != index:
            assert f"data:image/png;base64,{PNG}" in html
            protocol = [link for link in links(page) if "protocol.md" in link]
            assert protocol and all((out / link.split("#")[0]).resolve().is_file() for link in protocol)
    assert not list((run / "html").glob("*.ipynb")) and not list((run / "html").glob("*.records.csv"))


def test_cli_writes_where_asked_and_refuses_a_folder_without_notebooks(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run, site = fake_run(tmp_path), tmp_path / "site"
    assert main(["report", str(run), "--out", str(site)]) == 0
    assert "3 notebook pages and the index" in capsys.readouterr().out
    for link in links(site / "index.html"):
        assert (site / link).is_file(), link
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: {empty} holds no executed notebook (*.ipynb); valid: ")
        and err.count("\n") == 1
    )
    assert str(REPO_ROOT) not in err.split("valid: ")[1]  # run folders are named, not this machine's paths
