"""Write report.md, report.html and figures/ for a sweep folder or a table: `python -m analysis.report PATH`.

For a folder the report goes into it; for a CSV/parquet file into `<stem>_report/` beside it, so user
data is never overwritten. A sweep that varies the learning rate gets the learning-rate transfer section
instead of a scaling fit; one that trains several pre-training families (sweep=objectives) the families
section: each family's frontier on its own loss and compute, and the task scores that compare them; and one
whose runs differ in another swept switch (model.norm_position: pre,post) the comparison of its variants
(analysis.compare). Only that one section of report.md is rewritten; the other
sections (probes, tasks) and any text a person added are kept. report.html is the whole report.md as one page with the
figures embedded, to open in a browser or share as one file.
"""

import argparse
import sys
from pathlib import Path

from analysis.command import run
from analysis.compare import report_variants
from analysis.failures import InputError
from analysis.fits.analyse import Analysis
from analysis.fitting import fit_parser, load_and_analyse, read_and_analyse
from analysis.reporting.document import check_markers, write_section
from analysis.reporting.family_section import families
from analysis.reporting.family_section import section as family_section
from analysis.reporting.fit_figures import make_figures
from analysis.reporting.fit_section import render
from analysis.reporting.noise_section import section as noise_section
from analysis.reporting.page import write_page
from analysis.reporting.placement_section import section as placement_section
from analysis.reporting.prediction_section import predictions, predictor
from analysis.reporting.prediction_section import section as prediction_section
from analysis.reporting.summary_section import section as summary_section
from analysis.reporting.transfer_section import lr_sweep
from analysis.reporting.transfer_section import section as transfer_section
from analysis.variants import sweep_table
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


def transfer_report(args: argparse.Namespace, folder: Path) -> bool:
    """For a sweep that varies the learning rate: its transfer section (True), instead of a scaling fit,
    which needs one learning rate per size."""
    table = sweep_table(Path(args.path))
    runs = lr_sweep(table) if table is not None else None
    if runs is None:
        return False
    (folder / contract.FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    write_section(folder / contract.REPORT_FILE, "transfer", transfer_section(runs, folder / contract.FIGURES_DIR))
    return True


def family_report(args: argparse.Namespace, folder: Path) -> bool:
    """For a sweep that trains several pre-training families: the families section (True), instead of one fit
    across losses that measure different things."""
    table = sweep_table(Path(args.path))
    several = table is not None and len(families(table)) > 1
    if several:
        write_section(folder / contract.REPORT_FILE, "families", family_section(args, Path(args.path), folder))
    return several


def report(args: argparse.Namespace) -> int:
    folder = report_folder(Path(args.path))
    check_markers(folder / contract.REPORT_FILE)  # before any fitting: a broken report.md is refused at once
    if transfer_report(args, folder) or family_report(args, folder) or report_variants(args, folder):
        print(folder / contract.REPORT_FILE)
        print(write_page(folder / contract.REPORT_FILE))
        return 0
    analysis = read_and_analyse(args)
    figures = make_figures(analysis, folder / contract.FIGURES_DIR)
    write_section(folder / contract.REPORT_FILE, "fit", render(analysis, other_convention(args, analysis), figures))
    held = predictions(analysis, predictor(analysis))
    written = {
        "summary": summary_section(analysis, held),
        "prediction": prediction_section(analysis, Path(args.path), folder / contract.FIGURES_DIR, held),
        "placement": placement_section(analysis, folder / contract.FIGURES_DIR),
        "noise": noise_section(analysis, report_folder(Path(args.path))),
    }
    for name, text in written.items():
        if text is not None:
            write_section(folder / contract.REPORT_FILE, name, text)
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
