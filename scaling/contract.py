"""The run-directory contract: every file, table and column that training writes and analysis reads.

Training (scaling/) writes these names and analysis (analysis/) reads them; both import them from
here, so a name is spelled once. Standard library and NumPy only, so the fits' loaders and the report can
use it without pulling in JAX or the trainer.

    RESULTS/SWEEP/                    a sweep folder
      runs.parquet                    one row per run: its summary.json plus the swept values
      launches.jsonl                  what each launch did with each run (trained, skipped, ...)
      report.md, figures/             written by analysis (report, probes, tasks)
      probes.parquet, tasks.parquet   written by analysis.probe and analysis.tasks
      runs/<run name>/                one run directory per grid point
    RUN_DIR/                          a run directory
      config.yaml                     sections: config (the RunConfig), derived (plan), data (corpus)
      metrics.parquet                 one row per logged step (METRIC_COLUMNS)
      eval_windows.parquet            the latest evaluation's loss per window and its document
      summary.json                    status and everything a scaling fit needs about the run
      checkpoints/<step>/             Orbax checkpoints; damaged ones move to checkpoints_damaged/
      training.lock                   held by the one process training the run (scaling/training/rundir.py)
      run_manifest.json               written first into a new or empty folder: the entries the run owns,
                                      the only ones overwrite=true may delete (tensorboard/ and wandb/ too)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# ---- one run directory ----
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.parquet"
# The latest evaluation's loss on every window of the eval set, with its document (columns EVAL_WINDOW_COLUMNS):
# runs evaluated on the same set (equal EVAL_DIGEST) compare window by window, so the error of a difference
# between two runs is their paired error over documents, far smaller than either loss's own.
EVAL_WINDOWS_FILE = "eval_windows.parquet"
EVAL_WINDOW_COLUMNS = ["document", "loss"]
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_CHECKPOINT_DIR = "checkpoints_damaged"
RUN_LOCK = "training.lock"
RUN_MANIFEST = "run_manifest.json"
# config.yaml holds three sections.
CONFIG_SECTION, DERIVED_SECTION, DATA_SECTION = "config", "derived", "data"

# grad_norm: the global gradient norm before clipping at the logged step; clipped_fraction: the share of
# the steps since the previous log whose gradients were clipped.
METRIC_COLUMNS = [
    "step",
    "tokens",
    "flops",
    "lr",
    "train_loss",
    "eval_loss",
    "grad_norm",
    "clipped_fraction",
    "tokens_per_s",
    "wall_s",
]

# summary.json: the run's status, and the names of the fields analysis reads.
COMPLETED, DIVERGED, FAILED, PREEMPTED = "completed", "diverged", "failed", "preempted"
# A run that ended one of these ways is finished: relaunching it trains nothing (a diverged run would
# diverge again, bit for bit). Only completed runs enter the fits.
FINISHED = (COMPLETED, DIVERGED)
# A diverged run's summary says where (scaling/training/divergence.py): the logged step at which its smoothed
# train loss first left its running best for good, and why.
DIVERGED_STEP, DIVERGED_REASON = "diverged_step", "diverged_reason"
# A preempted run's summary names the signal that stopped it (SIGTERM, SIGINT, SIGUSR2): the exit status is
# 128 + its number (scaling/errors.py).
STOP_SIGNAL = "stop_signal"
# The hash of the tokens a run trained on. One name everywhere: corpus metadata, config.yaml's data
# section, summary.json and runs.parquet.
CORPUS_HASH = "corpus_hash"
TOKENIZER_HASH = "tokenizer_hash"
PARAMS_TOTAL, PARAMS_NONEMBEDDING = "params_total", "params_nonembedding"
FINAL_EVAL_LOSS = "final_eval_loss"
# Its standard error over validation documents (scaling/data/eval_set.py), and which eval set gave it: runs whose
# EVAL_DIGEST differs were evaluated on different windows and their losses do not compare.
FINAL_EVAL_LOSS_SE, EVAL_SET, EVAL_DIGEST = "final_eval_loss_se", "eval_set", "eval_digest"
# The run's seed (initialisation; the data order follows it unless train.data_seed is set): a sweep with
# sweep.seeds=K trains every grid point at K of them.
SEED = "seed"
PARAMS_DIGEST = "params_digest"
# The pre-training family (scaling/model/families.py) in summary.json and runs.parquet; a run or table without it
# holds decoders (runs made before the families existed).
FAMILY, DEFAULT_FAMILY = "family", "decoder"

# ---- one sweep folder ----
RUNS_TABLE = "runs.parquet"
LAUNCH_LOG = "launches.jsonl"
RUNS_SUBDIR = "runs"
REPORT_FILE = "report.md"
FIGURES_DIR = "figures"
PROBES_TABLE = "probes.parquet"
TASKS_TABLE = "tasks.parquet"
# runs.parquet columns beyond the summary's: the run's folder name, its folder relative to the sweep
# folder, the sweep's name, the IsoFLOP budget (FLOPs) when it has one, and `swept.<key>` per swept value.
RUN_NAME, RUN_DIR, SWEEP, BUDGET, SWEPT_PREFIX = "run_name", "run_dir", "sweep", "budget", "swept."
# The predict-then-verify run (scaling/sweeping/holdout.py): marked in runs.parquet so fits leave it out, and
# the plan it was trained from (fitted optimum, budget, grid point) beside the table.
HOLDOUT, HOLDOUT_FILE = "holdout", "holdout.json"

# ---- the fit's JSON (`python -m analysis.fit --format json`), which the held-out step reads ----
# Training never imports analysis: scaling/sweeping/holdout.py runs the fit as a command and reads these keys.
# One entry per fitted approach (FIT_APPROACH2, FIT_APPROACH3, ...), each with an `extrapolation` list: one row
# per requested budget, holding the compute-optimal parameter count under `N_opt`.
FIT_APPROACH2, FIT_APPROACH3 = "approach2", "approach3"
FIT_EXTRAPOLATION, FIT_N_OPT = "extrapolation", "N_opt"


def run_dir_in_sweep(sweep_folder: Path | str, entry: str) -> Path:
    """The run directory a runs.parquet `run_dir` entry names: relative to the sweep folder (absolute as is)."""
    path = Path(entry)
    return path if path.is_absolute() else Path(sweep_folder) / path


def is_run_dir(path: Path | str) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def is_sweep_dir(path: Path | str) -> bool:
    return (Path(path) / RUNS_TABLE).is_file()


# ---- one evaluation (EVAL_WINDOWS_FILE): training logs it, the report's noise section pairs two runs' ----
def loss_and_se(window_losses_N: np.ndarray, document_N: np.ndarray) -> tuple[float, float]:
    """The mean loss over the windows and its standard error over documents.

    Every window holds seq_len targets, so the mean over windows is the mean over tokens. The error is
    that of a ratio estimator with documents as clusters: sum over documents of (S_d - L n_d)^2, S_d the
    document's summed window losses and n_d its windows, times K / (K - 1), over (sum n_d)^2."""
    losses = np.asarray(window_losses_N, np.float64)
    loss = float(losses.mean())
    sums_K = np.bincount(document_N, weights=losses)
    counts_K = np.bincount(document_N).astype(np.float64)
    used = counts_K > 0
    k = int(used.sum())
    if k < 2:
        return loss, float("nan")
    spread = np.sum((sums_K[used] - loss * counts_K[used]) ** 2) * k / (k - 1)
    return loss, float(np.sqrt(spread) / counts_K.sum())
