"""Write report.md, report.html and figures/ for a sweep folder or a table: `python -m analysis.report PATH`.

For a folder the report goes into it; for a CSV/parquet file into `<stem>_report/` beside it, so user
data is never overwritten. Only the fit section of report.md is rewritten; the other sections (probes,
tasks) and any text a person added are kept. report.html is the whole report.md as one page with the
figures embedded, to open in a browser or share as one file.
"""

import argparse
import sys
from pathlib import Path

from analysis.cli import fit_parser, load_and_analyse, read_and_analyse, run
from analysis.errors import InputError
from analysis.fits.analyse import Analysis
from analysis.reporting.document import write_section
from analysis.reporting.fit_figures import make_figures
from analysis.reporting.fit_section import render
from analysis.reporting.page import write_page
from scaling import contract
from scaling.runtime import initialize


def report_folder(path: Path) -> Path:
    """Where the report goes: the sweep folder itself, or `<stem>_report/` next to a table file."""
    return path if path.is_dir() else path.parent / f"{path.stem}_report"


def other_convention(args: argparse.Namespace, analysis: Analysis) -> Analysis | None:
    """For our own runs, the same fit with the other parameter count (total <-> non-embedding)."""
    if not analysis.data.ours:
        return None
    other = "nonembedding" if args.params == "total" else "total"
    try:
        return load_and_analyse(argparse.Namespace(**{**vars(args), "params": other}))
    except InputError:
        return None


def report(args: argparse.Namespace) -> int:
    analysis = read_and_analyse(args)
    folder = report_folder(Path(args.path))
    figures = make_figures(analysis, folder / contract.FIGURES_DIR)
    write_section(folder / contract.REPORT_FILE, "fit", render(analysis, other_convention(args, analysis), figures))
    page = write_page(folder / contract.REPORT_FILE)
    if not analysis.results:  # the report is still written (the runs figure), but say plainly that nothing was fitted
        print("warning: nothing could be fitted: " + "; ".join(analysis.skipped.values()), file=sys.stderr)
    print(folder / contract.REPORT_FILE)
    print(page)
    return 0


def main(argv: list[str] | None = None) -> int:
    initialize(compilation_cache=False, plotting=True)
    return run(report, fit_parser("python -m analysis.report", __doc__.split("\n")[0]).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
