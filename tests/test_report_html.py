"""report.html: every section and figure of report.md in one self-contained page, markup in the text
shown and never obeyed, and the real page checked in a headless Chromium."""

import base64
import re
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from analysis.fits.reference import HOFFMANN_2022
from analysis.fits.synthetic import isoflop_runs, training_curves
from analysis.report import main
from analysis.reporting.document import figure, markers, write_section
from analysis.reporting.page import write_page
from tests.helpers import write_sweep

FIGURE_REF = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")
DATA_IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def draw_png(path: Path) -> Path:
    """A small real PNG, as the report's figures are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    fig.savefig(path, dpi=50)
    plt.close(fig)
    return path


def test_page_has_every_section_in_order_with_tables_and_a_persons_notes(tmp_path):
    report = tmp_path / "report.md"
    draw_png(tmp_path / "figures" / "probe_loss.png")
    report.write_text("# My sweep\n\nnotes written by hand\n")
    write_section(report, "tasks", "## Tasks\n\n| task | accuracy |\n|---|---|\n| copy | 0.75 |")
    write_section(report, "probe", "## Checkpoint probes\n\n" + figure("probe_loss.png", "loss through training"))
    write_section(report, "fit", "# Scaling-law fit\n\n| approach | a |\n|---|---|\n| Approach 2 | 0.49 |")
    page = write_page(report).read_text()
    assert page.index("My sweep") < page.index('id="fit"') < page.index('id="probe"') < page.index('id="tasks"')
    assert "notes written by hand" in page and "<!--" not in page  # the section markers are not shown
    assert page.count("<table>") == 2 and "<td>0.75</td>" in page and "<td>Approach 2</td>" in page
    assert len(DATA_IMG.findall(page)) == 1 and "<em>Loss through training.</em>" in page
    for heading in ("My sweep", "Scaling-law fit", "Checkpoint probes", "Tasks"):  # the contents list links them
        assert re.search(rf'<li class="h[12]"><a href="#s\d+">{heading}</a>', page), heading


def test_markup_in_the_report_is_shown_as_text_and_never_obeyed(tmp_path):
    report = tmp_path / "report.md"
    hostile = (
        "# run <script>alert(1)</script>\n\n| run | note |\n|---|---|\n| <img src=x onerror=alert(2)> | ok |\n\n"
        "[click](javascript:alert(3)) <iframe src='http://example.com'></iframe>"
    )
    write_section(report, "fit", hostile)
    page = write_page(report).read_text()
    assert "<script" not in page and "<iframe" not in page and "onerror=alert(2)>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert 'href="javascript' not in page
    assert "default-src 'none'; img-src data:" in page  # and were anything to slip through, the policy blocks it


def test_every_figure_is_embedded_and_one_that_cannot_be_is_said_in_red(tmp_path):
    folder = tmp_path / "sweep"
    png = draw_png(folder / "figures" / "frontier.png")
    draw_png(tmp_path / "outside.png")  # exists, but outside the report's folder
    body = "\n\n".join(
        [
            figure("frontier.png", "the frontier"),
            figure("deleted.png", "a deleted figure"),
            "![outside](../outside.png)",
            "![remote](http://example.com/a.png)",
        ]
    )
    write_section(folder / "report.md", "fit", body)
    page = write_page(folder / "report.md").read_text()
    assert [base64.b64decode(uri) for uri in DATA_IMG.findall(page)] == [png.read_bytes()]
    notices = re.findall(r'<p class="missing">\[figure missing: ([^ ]+) ', page)
    assert notices == ["figures/deleted.png", "../outside.png", "http://example.com/a.png"]
    assert page.count("<img") == 1


# ---- the real report of a synthetic sweep, and the page in a real browser ----


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A sweep's report.md with the fit section from analysis.report and a probe section after it."""
    runs = isoflop_runs(HOFFMANN_2022, np.logspace(17, 19, 4), sizes=6, noise=0.005, seed=11)
    folder = write_sweep(
        tmp_path_factory.mktemp("results") / "synthetic",
        runs,
        training_curves(HOFFMANN_2022, runs, noise=0.005, seed=12),
    )
    draw_png(folder / "figures" / "probe_icl.png")
    write_section(folder / "report.md", "probe", "## Checkpoint probes\n\n" + figure("probe_icl.png", "ICL score"))
    assert main([str(folder), "--n-boot", "20", "--budgets", "1e21"]) == 0  # rewrites the fit section and the page
    return folder


def test_report_command_writes_a_page_with_every_figure_of_report_md(sweep):
    text, page = (sweep / "report.md").read_text(), (sweep / "report.html").read_text()
    references = FIGURE_REF.findall(text)
    assert len(references) >= 6 and len(DATA_IMG.findall(page)) == len(references) == page.count("<img")
    assert page.index('id="fit"') < page.index('id="probe"')
    assert page.count("<table>") == len(re.findall(r"^\|---", text, re.M)) and "figure missing" not in page
    start, _ = markers("summary")
    assert text.startswith(start) and page.index('id="summary"') < page.index('id="fit"')


chromium = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)"
)


@chromium
def test_page_opens_in_chromium_without_errors_and_shows_every_figure(sweep, tmp_path):
    browser = pytest.importorskip("tests.browser", reason="needs playwright (pip install -e '.[test]')")
    shot = tmp_path / "report.png"
    check = browser.check_page(sweep / "report.html", shot)
    assert check.errors == []
    assert len(check.images) == len(FIGURE_REF.findall((sweep / "report.md").read_text())) and not check.broken
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


@chromium
def test_the_browser_check_sees_a_broken_image_and_a_console_error(tmp_path):
    """The check above can fail: an image that does not decode and a script's error are both reported."""
    browser = pytest.importorskip("tests.browser", reason="needs playwright (pip install -e '.[test]')")
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><img alt="broken" src="data:image/png;base64,iVBORw0KGgo=">'
        '<script>console.error("boom")</script>'
    )
    check = browser.check_page(page)
    assert check.broken == ["broken"] and check.errors == ["boom"]
