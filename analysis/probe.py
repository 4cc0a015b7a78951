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
from pathlib import Path

import pandas as pd

from analysis.command import OneLineParser
from analysis.command import run as run_command
from analysis.failures import InputError
from analysis.measurements import TableSpec, measure_run, measured_runs, publish
from analysis.probes.measure import UNITS, CheckpointProbes, ProbeSettings
from analysis.probes.probe_figures import write_figures
from analysis.probes.probe_section import section
from analysis.probes.probe_table import measured, probe_table, rows
from analysis.trained_runs import RunInfo, find_run_dirs, open_data, read_run
from scaling import contract
from scaling.runtime import initialize
from scaling.training.tracking import ProbeLog


def todo(run: RunInfo, table: pd.DataFrame) -> dict[int, set[str]]:
    """Per saved step, the probe units it still lacks."""
    done = measured(table, run.name)
    missing = {
        step: {unit for unit, probes in UNITS.items() if (step, probes[0]) not in done} for step, _ in run.checkpoints
    }
    return {step: units for step, units in missing.items() if units}


def probe_run(run: RunInfo, table: pd.DataFrame, settings: ProbeSettings, spec: TableSpec) -> pd.DataFrame:
    """Measure what `run` still lacks (analysis/measurements.py writes the table after every checkpoint)."""
    missing = todo(run, table)
    if not missing:
        return table
    data, probes = open_data(run), None
    tensorboard = ProbeLog(run.run_dir, 6 * run.params)  # training's curves use 6N FLOPs per token

    def measure(step: int, tokens: int, graphdef, state) -> pd.DataFrame:
        nonlocal probes
        probes = probes or CheckpointProbes(run, data, settings, graphdef)
        measured_now = probes.measure(state, step, missing[step])
        for probe, values in measured_now.items():
            tensorboard.log(step, tokens, probe, values or {})
        new = [rows(run.name, step, tokens, probe, values) for probe, values in measured_now.items() if values]
        return pd.concat(new, ignore_index=True) if new else spec.empty()

    table = measure_run(run, missing, measure, table, spec, settings.as_dict(), "probed")
    tensorboard.close()
    return table


def probe_path(path: Path, settings: ProbeSettings) -> pd.DataFrame:
    """Probe every run under `path`, then redraw the figures and the report section from the whole table."""
    runs = decoder_runs(path, [read_run(run_dir) for run_dir in find_run_dirs(path)])
    for run in runs:
        settings.check(run)
    spec = probe_table(path)
    table = spec.read(settings.as_dict())
    for run in runs:
        table = probe_run(run, table, settings, spec)
    probed = measured_runs(path, runs, table)
    figures = write_figures(table, probed, path / contract.FIGURES_DIR)
    publish(path, "probe", section(table, probed, settings, figures))
    return table


def decoder_runs(path: Path, runs: list[RunInfo]) -> list[RunInfo]:
    """The probes measure decoders (next-token loss by position, KV-cache decoding of continuations): the other
    families' runs are left out, named; a path with none is refused in one line."""
    decoders = [run for run in runs if run.family == contract.DEFAULT_FAMILY]
    if not decoders:
        raise InputError(
            f"model.family: the runs under {path} are {runs[0].family} runs, and the probes measure decoders "
            "(next-token loss, KV-cache decoding); score any family with python -m analysis.tasks"
        )
    if len(decoders) < len(runs):
        print(f"probing the {len(decoders)} decoder runs of {len(runs)} (the probes measure decoders)", file=sys.stderr)
    return decoders


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
        f"{args.path / contract.PROBES_TABLE}, {args.path / contract.FIGURES_DIR}/probe_*.png, the probe section of "
        f"{args.path / contract.REPORT_FILE} and {(args.path / contract.REPORT_FILE).with_suffix('.html')}"
    )
    print(f"wrote {wrote}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(probe, parser().parse_args(argv), setup=lambda: initialize(plotting=True))


if __name__ == "__main__":
    raise SystemExit(main())
