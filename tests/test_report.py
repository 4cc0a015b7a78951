"""The report on a synthetic sweep folder in the training side's format: figures, markdown, and the CLI."""

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis.fit_input import load
from analysis.fits.reference import HOFFMANN_2022, PUBLISHED_FIT_FLOPS
from analysis.fits.result import ApproachResult
from analysis.fits.synthetic import isoflop_runs, training_curves
from analysis.report import main
from analysis.reporting.document import SECTIONS, markers, split_sections, write_section
from analysis.reporting.fit_figures import _draw_published
from analysis.reporting.summary_section import unidentified
from tests.helpers import REPO, write_sweep

FIGURES = ["isoflop.png", "frontier.png", "contours.png", "curves.png", "observed_vs_predicted.png"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
START, END = markers("fit")
FAST = ["--n-boot", "30"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """results/NAME-like folder: 5 budgets x 7 sizes with curves, the last 2 runs diverged."""
    runs = isoflop_runs(HOFFMANN_2022, np.logspace(17, 19, 5), sizes=7, noise=0.005, seed=3)
    curves = training_curves(HOFFMANN_2022, runs, noise=0.005, seed=4)
    return write_sweep(tmp_path_factory.mktemp("results") / "synthetic", runs, curves, failed=2)


@pytest.fixture(scope="module")
def report(sweep) -> str:
    assert main([str(sweep), *FAST, "--budgets", "1e21,1e23"]) == 0
    return (sweep / "report.md").read_text()


def test_sweep_loader_drops_unfinished_runs_and_reads_curves(sweep):
    data = load(sweep)
    assert len(data.runs) == 33 and "left out: 2 diverged" in data.notes[0]
    assert set(data.curves["run"]) == set(data.runs["run"])
    nonembedding = load(sweep, params="nonembedding")
    assert (nonembedding.runs["N"] < data.runs["N"]).all()
    assert np.allclose(nonembedding.curves["C"], 6 * nonembedding.curves["N"] * nonembedding.curves["D"])


def test_report_writes_every_figure_as_png(sweep, report):
    for name in FIGURES:
        path = sweep / "figures" / name
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 20_000, name
        assert f"(figures/{name})" in report


def test_report_has_estimates_conventions_and_extrapolations(report):
    # The fit section is whole (one start, one end), and the report is nothing but its sections, in SECTIONS
    # order: the noise section, written last by the same command, now ends it.
    assert report.count(START) == 1 and report.count(END) == 1 and report.index(START) < report.index(END)
    names = [name for name, _ in split_sections(report)]
    assert None not in names  # no text outside a section
    assert names == sorted(names, key=SECTIONS.index) and {"summary", "fit", "noise"} <= set(names)
    assert report.rstrip().endswith(markers(names[-1])[1])
    for heading in (
        "## Compute-optimal allocation",
        "## Approach 3: L(N, D)",
        "## Parameter convention",
        "## Extrapolation",
        "## Frontier with a floor",
        "## Rollout: which predictor extrapolates",
        "## Warnings",
    ):
        assert heading in report
    for approach in ("Approach 1", "Approach 2", "Approach 3"):
        assert approach in report
    assert "| 1e+21 |" in report and "| 1e+23 |" in report
    assert "a, N = non-embedding" in report
    assert "Approach 1 uses the envelope from C =" in report and "more flexible than the profile estimator's" in report


def test_report_opens_with_the_answer_and_when_not_to_trust_it(sweep, report):
    """The summary comes first: the exponents with intervals, the law and how it was chosen, the flags; the
    rollout is drawn too."""
    summary_start, summary_end = markers("summary")
    assert report.startswith(summary_start) and report.index(summary_end) < report.index(START)
    summary = report[: report.index(summary_end)]
    for approach in ("Approach 1", "Approach 2", "Approach 3"):
        assert f"{approach}" in summary
    assert "a = 0.4" in summary and "the smallest rollout error" in summary
    assert "**When not to trust these numbers:**" in summary and "rolled out, `" in summary
    assert "(figures/rollout.png)" in report and (sweep / "figures" / "rollout.png").read_bytes()[:8] == PNG_MAGIC
    html = (sweep / "report.html").read_text()
    assert html.index("When not to trust these numbers") < html.index("Hoffmann et al. 2022: a")


def test_a_parameter_whose_interval_spans_a_decade_is_flagged_unidentified():
    """E = 2.65 [7e-9, 3.05] (the main job's fit in issue 23) is flagged; alpha [0.30, 0.38] is not."""
    result = ApproachResult(
        "approach3",
        "Approach 3",
        {"E": 2.65, "alpha": 0.34, "a": 0.45, "b": 0.55},
        {
            "E": np.array([7e-9, 3.05]),
            "alpha": np.array([0.30, 0.38]),
            "a": np.array([0.4, 0.5]),
            "b": np.array([0.5, 0.6]),
        },
        None,
        (),
        SimpleNamespace(law=SimpleNamespace(theta_keys=("E", "alpha"))),
    )
    flags = unidentified(result, 1.0)
    assert len(flags) == 1 and flags[0].startswith("E = 2.65") and "decades" in flags[0]


def test_report_section_replaces_its_own_and_keeps_other_text(tmp_path):
    path = tmp_path / "report.md"
    notes = "## Notes\n\nwritten by hand\n"
    write_section(path, "fit", "old fit")
    path.write_text(path.read_text() + "\n" + notes)
    write_section(path, "fit", "new fit")
    text = path.read_text()
    assert text.count(START) == 1 and "new fit" in text and "old fit" not in text and text.endswith(notes)


def test_sections_keep_their_order_whatever_order_they_are_written_in(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("## Notes\n")
    write_section(path, "tasks", "tasks")
    write_section(path, "probe", "probes")
    write_section(path, "fit", "fit")
    text = path.read_text()
    order = [text.index(markers(name)[0]) for name in ("fit", "probe", "tasks")]
    assert order == sorted(order) and text.endswith("## Notes\n")
    assert text.startswith(f"{START}\nfit\n{END}\n\n")


def test_split_sections_gives_every_piece_in_document_order(tmp_path):
    path = tmp_path / "report.md"
    write_section(path, "probe", "probes")
    write_section(path, "fit", "fit")
    path.write_text("# Title\n\n" + path.read_text() + "\nnotes\n")
    assert split_sections(path.read_text()) == [(None, "# Title"), ("fit", "fit"), ("probe", "probes"), (None, "notes")]


@pytest.mark.parametrize("lost", [END, START])
def test_a_section_that_lost_a_marker_is_refused_and_the_report_left_as_it_was(sweep, report, tmp_path, capsys, lost):
    """Rewriting it would add a second fit section beside the stale one, or swallow a person's text."""
    folder = tmp_path / "sweep"
    shutil.copytree(sweep, folder)
    damaged = (folder / "report.md").read_text().replace(lost, "") + "\nmy notes\n"
    (folder / "report.md").write_text(damaged)
    assert main([str(folder), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "report.md: the fit section's markers are broken" in err
    assert (folder / "report.md").read_text() == damaged


def test_published_fit_range_is_the_compute_of_hoffmanns_runs():
    """The range the published lines are drawn solid over is that of the data they were fitted on."""
    flops = pd.read_csv(REPO / "tests" / "data" / "svg_extracted_data.csv")["Training FLOP"]
    assert np.allclose(PUBLISHED_FIT_FLOPS, (flops.min(), flops.max()), rtol=0.01)


@pytest.mark.parametrize("low, high", [(1e11, 1e14), (1e17, 1e21), (1e19, 1e24)])
def test_published_lines_are_dashed_only_over_their_data_and_labelled_extrapolated_elsewhere(low, high):
    fig, axes = plt.subplots(1, 2)
    labels = [label for _, label in _draw_published(axes, np.geomspace(low, high, 50))]
    plt.close(fig)
    first, last = PUBLISHED_FIT_FLOPS
    for handle, label in zip(axes[0].lines, labels):
        x = handle.get_xdata()[np.isfinite(handle.get_ydata())]
        if "within its data" in label:
            assert x.min() >= first and x.max() <= last and handle.get_linestyle() == "--", label
        elif "extrapolated" in label:
            assert ((x <= first) | (x >= last)).all() and handle.get_linestyle() == ":", label
        else:
            assert "rule of thumb" in label
    assert any("extrapolated" in label for label in labels)  # every range above reaches outside the data
    assert any("within its data" in label for label in labels) == (high > first and low < last)


def test_table_input_reports_beside_it_and_leaves_it_alone(tmp_path):
    table = tmp_path / "runs.csv"
    isoflop_runs(HOFFMANN_2022, np.logspace(18, 21, 4), sizes=6, noise=0.005, seed=5).to_csv(table, index=False)
    before = table.read_bytes()
    assert main([str(table), *FAST, "--budget-col", "budget"]) == 0
    assert table.read_bytes() == before
    text = (tmp_path / "runs_report" / "report.md").read_text()
    assert "final point" in text  # approach 1 says why it needs curves
    assert not (tmp_path / "runs_report" / "figures" / "curves.png").exists()


def test_report_cli_exits_2_on_a_bad_path(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_report_cli_runs_as_a_module_without_traceback(tmp_path):
    """The real entry point, in a fresh interpreter: exit code 2 and one line on stderr."""
    result = subprocess.run([sys.executable, "-m", "analysis.report", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "runs.parquet" in result.stderr


def test_fit_and_report_import_no_training_code():
    """The fit and report commands read files by the contract's names; they never load JAX or the trainer."""
    code = "import sys, analysis.fit, analysis.report; print(sorted(m for m in sys.modules if m.split('.')[0] in ('scaling', 'jax')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == [
        "['scaling',",
        "'scaling.contract',",
        "'scaling.errors',",
        "'scaling.files',",
        "'scaling.runtime']",
    ]


def test_report_on_too_few_runs_still_draws_the_runs_and_says_why(tmp_path, capsys):
    """A sweep too small for any fit (the `tiny` sweep) gets its runs figure and the reasons, exit 0."""
    runs = isoflop_runs(HOFFMANN_2022, np.array([1e17, 2e17]), sizes=2, noise=0.0, seed=0)
    folder = write_sweep(tmp_path / "small", runs, training_curves(HOFFMANN_2022, runs, noise=0.0, seed=1))
    assert main([str(folder), *FAST]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: nothing could be fitted") and err.count("\n") == 1
    assert (folder / "figures" / "runs.png").read_bytes().startswith(PNG_MAGIC)
    assert not any((folder / "figures" / name).exists() for name in FIGURES)
    text = (folder / "report.md").read_text()
    assert "No approach could be fitted" in text and "(figures/runs.png)" in text and "- approach2:" in text


def test_a_law_choice_the_runs_barely_make_is_flagged():
    """The rollout's choice gets a flag when another law scored within 25% of it, and a chosen law that fixes
    the exponents (tied: a = b = 1/2) says its interval for them is no measurement."""
    from analysis.fits.rollout import LawChoice
    from analysis.reporting.summary_section import law_choice_flags

    close = law_choice_flags(LawChoice("tied", (), {"chinchilla": 0.0224, "tied": 0.0222, "kaplan": 0.0297}, ""))
    assert len(close) == 2
    assert "`chinchilla` (2.24%)" in close[0] and "`kaplan`" not in close[0] and "`tied` (2.22%)" in close[0]
    assert "`tied` fixes a = 0.5, b = 0.5" in close[1]
    apart = law_choice_flags(LawChoice("kaplan", (), {"chinchilla": 0.0224, "tied": 0.0222, "kaplan": 0.0097}, ""))
    assert apart == []
    assert law_choice_flags(LawChoice("chinchilla", (), {}, "law chinchilla (--law)")) == []
