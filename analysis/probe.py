"""`python -m analysis.probe PATH`: Pythia-style probes of every saved checkpoint of a run or a sweep.

PATH is a run folder (config.yaml) or a sweep folder (runs.parquet). Every checkpoint of every run
is measured (analysis/probes/measure.py) into PATH/probes.parquet, then PATH/figures/probe_*.png and
the probe section of PATH/report.md are redrawn from that table, and PATH/report.html from report.md.
A re-run measures only the (run, checkpoint, probe) triples not yet in the table, so it is cheap after
a sweep adds checkpoints.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
from flax import nnx

from analysis.cli import OneLineParser
from analysis.cli import run as run_command
from analysis.errors import InputError
from analysis.probes.measure import UNITS, CheckpointProbes, ProbeSettings
from analysis.probes.runs import RunInfo, find_run_dirs, open_data, read_run
from analysis.probes.table import TABLE_FILE, measured, read_table, rows, write_table
from analysis.reporting.document import write_section
from analysis.reporting.page import write_page
from analysis.reporting.probe_figures import write_figures
from analysis.reporting.probe_section import section
from scaling import contract
from scaling.checkpoint import DamagedCheckpoint, load_model
from scaling.runtime import initialize
from scaling.tracking import ProbeLog


def todo(run: RunInfo, table: pd.DataFrame) -> dict[int, set[str]]:
    """Per saved step, the probe units it still lacks."""
    done = measured(table, run.name)
    missing = {
        step: {unit for unit, probes in UNITS.items() if (step, probes[0]) not in done} for step, _ in run.checkpoints
    }
    return {step: units for step, units in missing.items() if units}


def probe_run(run: RunInfo, table: pd.DataFrame, settings: ProbeSettings, table_path: Path) -> pd.DataFrame:
    """Measure what `run` still lacks, saving the table after every checkpoint so a kill loses little."""
    missing = todo(run, table)
    if not missing:
        return table
    start, data, probes = time.perf_counter(), open_data(run), None
    tensorboard = ProbeLog(run.run_dir, 6 * run.params)  # training's curves use 6N FLOPs per token
    for step, tokens in run.checkpoints:
        if step not in missing:
            continue
        try:
            graphdef, state = nnx.split(load_model(run.run_dir, step))
        except DamagedCheckpoint as err:  # verified as training verifies it; the files are left as they are
            warnings.warn(f"{run.name}: {err}; not probed")
            continue
        probes = probes or CheckpointProbes(run, data, settings, graphdef)
        measured_now = probes.measure(state, step, missing[step])
        new = [rows(run.name, step, tokens, probe, values) for probe, values in measured_now.items() if values]
        for probe, values in measured_now.items():
            tensorboard.log(step, tokens, probe, values or {})
        table = pd.concat([table, *new], ignore_index=True)
        write_table(table_path, table, settings.as_dict())
    tensorboard.close()
    print(f"{run.name}: probed {len(missing)} checkpoints in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return table


def probe_path(path: Path, settings: ProbeSettings) -> pd.DataFrame:
    """Probe every run under `path`, then redraw the figures and the report section from the whole table."""
    runs = [read_run(run_dir) for run_dir in find_run_dirs(path)]
    for run in runs:
        settings.check(run)
    table_path = path / TABLE_FILE
    table = read_table(table_path, settings.as_dict())
    for run in runs:
        table = probe_run(run, table, settings, table_path)
    probed = [run for run in runs if (table.run == run.name).any()]
    if not probed:
        raise InputError(f"PATH: no run under {path} has a saved checkpoint; train with checkpoint.enabled=true")
    figures = write_figures(table, probed, path / contract.FIGURES_DIR)
    write_section(path / contract.REPORT_FILE, "probe", section(table, probed, settings, figures))
    write_page(path / contract.REPORT_FILE)
    return table


def _forget_steps(text: str) -> tuple[int, ...]:
    if text == "auto":
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'auto' or a comma-separated list of steps, e.g. 64,256"
        ) from None


def parser() -> OneLineParser:
    defaults = ProbeSettings()
    parser = OneLineParser(prog="python -m analysis.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a run folder or a sweep folder (results/NAME)")
    parser.add_argument("--eval-tokens", type=int, default=defaults.eval_tokens, help="held-out tokens per checkpoint")
    parser.add_argument(
        "--memo-samples", type=int, default=defaults.memo_samples, help="training sequences sampled for memorisation"
    )
    parser.add_argument("--k", type=int, default=defaults.k, help="prompt tokens for memorisation")
    parser.add_argument("--continuation", type=int, default=defaults.continuation, help="greedy tokens to match")
    parser.add_argument(
        "--forget-steps", type=_forget_steps, default=(), help="'auto' or checkpoint steps, e.g. 64,256"
    )
    return parser


def probe(args: argparse.Namespace) -> int:
    settings = ProbeSettings(args.eval_tokens, args.memo_samples, args.k, args.continuation, args.forget_steps)
    for name in ("eval_tokens", "memo_samples", "k", "continuation"):
        if getattr(settings, name) < 1:
            raise InputError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(settings, name)}")
    probe_path(args.path, settings)
    wrote = (
        f"{args.path / TABLE_FILE}, {args.path / contract.FIGURES_DIR}/probe_*.png, the probe section of "
        f"{args.path / contract.REPORT_FILE} and {(args.path / contract.REPORT_FILE).with_suffix('.html')}"
    )
    print(f"wrote {wrote}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    initialize(plotting=True)
    return run_command(probe, parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
