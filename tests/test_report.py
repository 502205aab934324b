"""Tests for rnlib.analysis.report: README's Results section rendered from a run's summary.json and
results.csv."""

import shutil
from pathlib import Path

import nbformat
import pytest
from matplotlib.figure import Figure
from test_summary import build_run_dir

from rnlib.analysis import report
from rnlib.paths import EXECUTED_DIR, REPO_ROOT

README = (
    "# Project\n\n{answer}\nold answer\n{answer_end}\n\nIntro.\n\n{versions}\n{versions_end}\n\n"
    "## Results\n\n{start}\nold text\n{end}\n\n## Tests\n\nmake test\n"
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory exported as the summary notebook does (blank figures: rendering is not under test)."""
    path = build_run_dir(tmp_path_factory.mktemp("report") / "default")
    report.export(report.load_run(path), path, {n: Figure() for n in ("heatmap", "seeds", "widths")})
    return path


def readme(tmp_path: Path, start: str = report.START, end: str = report.END) -> Path:
    path = tmp_path / "README.md"
    (answer, answer_end), (versions, versions_end) = report.markers("answer"), report.markers("versions")
    text = README.format(start=start, end=end, answer=answer, answer_end=answer_end, versions=versions,
                         versions_end=versions_end)  # fmt: skip
    path.write_text(text)
    return path


def test_render_results_shows_verdicts_regime_table_notes_links_and_time(run_dir: Path) -> None:
    text = report.render_results(run_dir)
    rel = Path(report.os.path.relpath(run_dir, REPO_ROOT)).as_posix()
    assert "| 1 | SinGLU stores more per parameter than ReLU | **supported** |" in text
    assert text.count("| **supported** |") == 6 and "| control | SinGLU's gain is the sine" in text
    assert (
        "| regression | singlu | 3 of 4 | complex4d: singlu over vanilla (Δlog10 -1.00 [-1.00, -1.00], 3 "
        in text
    )
    assert "| model | complex4d | nested2d | hifreq | memorize |" in text
    assert "| trivial reference | 1 | 1 | 1 | 1 | 50.0% |" in text
    assert "| singlu | ≈ 0.00101 ×/÷ 1 (n=3) |" in text  # ≈: its ω=30 variant has the same numbers
    assert "- memorize: 6 of 6 neurons reach test MSE at or below 1e-08" in text
    assert f"![heatmap]({rel}/figures/heatmap.png)" in text and "widths.png" not in text
    assert "2 min 35 s in total, 1 min 40 s wall clock; slowest v01_rich (1 min 40 s)" in text
    assert report.render_results(run_dir) == text  # deterministic


def test_update_readme_is_idempotent_and_keeps_the_rest(run_dir: Path, tmp_path: Path) -> None:
    path = readme(tmp_path)
    assert report.update_readme(run_dir, path) is True
    first = path.read_text()
    assert report.update_readme(run_dir, path) is False
    assert path.read_text() == first
    head, section, tail = report.split_readme(first, path)
    assert section == report.render_results(run_dir) and "old text" not in first
    assert head.startswith("# Project\n\n<!-- rnlib:answer:start -->\n- **Does a richer neuron store")
    assert "old answer" not in first and tail == f"{report.END}\n\n## Tests\n\nmake test\n"


@pytest.mark.parametrize("markers", [("", report.END), (report.START, ""), (report.END, report.START)])
def test_readme_without_markers_raises_a_clear_error(run_dir: Path, tmp_path: Path, markers: tuple) -> None:
    path = readme(tmp_path, *markers)
    with pytest.raises(ValueError, match="results:start"):
        report.update_readme(run_dir, path)
    assert report.main(["--run-dir", str(run_dir), "--readme", str(path), "--check"]) == 1


def test_main_check_fails_on_a_stale_readme_and_passes_after_update(run_dir: Path, tmp_path: Path) -> None:
    args = ["--run-dir", str(run_dir), "--readme", str(readme(tmp_path))]
    assert report.main([*args, "--check"]) == 1
    assert report.main(args) == 0
    assert report.main([*args, "--check"]) == 0


def test_missing_summary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"summary\.json"):
        report.render_results(tmp_path)
    assert report.main(["--run-dir", str(tmp_path), "--readme", str(readme(tmp_path))]) == 1


def test_a_run_of_the_capacity_notebook_alone_is_a_clear_error_for_the_summary(tmp_path: Path) -> None:
    """``rnlib run --only capacity`` leaves a run folder without version records: say so, don't KeyError."""
    shutil.copy(EXECUTED_DIR / "default" / "capacity.records.csv", tmp_path)
    with pytest.raises(FileNotFoundError, match="no version notebook's") as err:
        report.load_run(tmp_path)
    assert "\n" not in str(err.value)


def test_committed_readme_matches_the_canonical_run() -> None:
    canonical = EXECUTED_DIR / "default"
    if not (canonical / "summary.json").exists():
        pytest.skip("executed/default/summary.json does not exist yet: run `make study`, then `make readme`")
    readme_path = REPO_ROOT / "README.md"
    text = readme_path.read_text(encoding="utf-8")
    assert report.generated(text, readme_path, canonical) == text, (
        "README's blocks are stale: run `make readme`"
    )


def test_versions_block_reads_each_executed_notebook_and_the_catalog(run_dir: Path, tmp_path: Path) -> None:
    """A version notebook's title, hypothesis and verdict come from the executed copy, its neurons' equations
    from the catalog."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# V10: free phase\n\n**Hypothesis.** A free phase beats both baselines."
        ),
        nbformat.v4.new_code_cell("display(...)"),
    ]
    verdict = "**Verdict: the hypothesis did not hold.** v10 beats vanilla on 2 of 9 tasks."
    nb.cells[-1].outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": verdict})]
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    nbformat.write(nb, folder / "v10_free_phase.ipynb")
    row = next(line for line in report.render_versions(folder).splitlines() if line.startswith("| v10 |"))
    assert "| free phase | `v10_free_phase`: $\\sin(\\omega g+\\pi\\tanh\\varphi)\\odot v$ |" in row
    assert "| A free phase beats both baselines. |" in row
    assert row.endswith("| the hypothesis did not hold |")


def test_the_answer_says_which_findings_survive_tuning() -> None:
    """summary.json's after_tuning rows become one sentence: kept, changed (from → to) and not tested."""
    rows = [
        {"finding": "1", "original protocol": "supported", "after tuning": "not tested"},
        {"finding": "2", "original protocol": "supported", "after tuning": "contradicted"},
        {"finding": "3", "original protocol": "undecided", "after tuning": "undecided"},
        {"finding": "control", "original protocol": "undecided", "after tuning": "undecided"},
    ]
    text = report.survival(rows)
    assert "the same verdict: finding 3, the control;" in text
    assert "changed: finding 2 supported → contradicted; not tested: finding 1." in text
    assert report.survival([]) == ""
