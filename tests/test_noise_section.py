"""The report's noise and placement sections on a synthetic sweep in the training side's format: 4 budgets x
5 sizes x 3 seeds drawn from a known law with seed noise of 0.01 nats, each run's per-window evaluation
losses over 60 documents that every run finds alike hard, and a held-out run at 4x the largest budget."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import report
from analysis.fit_input import load
from analysis.fits.lossmodel import LossParams, compute_optimal, predict_loss
from analysis.fits.synthetic import isoflop_runs, training_curves
from scaling import contract
from tests.helpers import write_sweep

TRUTH = LossParams(E=1.7, A=80.0, B=900.0, alpha=0.36, beta=0.35)
BUDGETS = [1e11, 2e11, 4e11, 8e11]
SEED_SD, DOCUMENTS, WINDOWS_PER_DOCUMENT = 0.01, 60, 8


@pytest.fixture(scope="module")
def seeded_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results") / "demo"
    rng = np.random.default_rng(0)
    grid = isoflop_runs(TRUTH, np.array(BUDGETS), sizes=5, span_decades=0.6)
    runs = pd.concat([grid.assign(run=grid["run"] + f",seed={s}", seed=s) for s in range(3)], ignore_index=True)
    runs["loss"] += rng.normal(0, SEED_SD, len(runs))
    n_opt, d_opt, _ = compute_optimal(4 * BUDGETS[-1], **TRUTH.as_dict())
    held = {"run": "holdout,point=0", "N": float(n_opt), "D": float(d_opt), "C": 6 * float(n_opt * d_opt),
            "loss": float(predict_loss(n_opt, d_opt, **TRUTH.as_dict())), "budget": 4 * BUDGETS[-1], "seed": 0}  # fmt: skip
    everything = pd.concat([runs, pd.DataFrame([held])], ignore_index=True)
    write_sweep(folder, everything, training_curves(TRUTH, runs, noise=0.002, seed=1))
    table = pd.read_parquet(folder / contract.RUNS_TABLE)
    table[contract.HOLDOUT] = table[contract.RUN_NAME] == held["run"]
    table[contract.SEED] = everything["seed"].to_numpy()
    difficulty = rng.normal(0, 0.3, DOCUMENTS)  # every run finds the same documents hard
    document = np.repeat(np.arange(DOCUMENTS), WINDOWS_PER_DOCUMENT)
    errors = []
    for name, loss in zip(table[contract.RUN_NAME], table[contract.FINAL_EVAL_LOSS]):
        windows = loss + difficulty[document] + rng.normal(0, 0.05, document.size)
        windows += loss - windows.mean()  # the run's loss is the mean of its windows
        run_dir = folder / contract.RUNS_SUBDIR / name
        run_dir.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"document": document, "loss": windows}).to_parquet(run_dir / contract.EVAL_WINDOWS_FILE)
        sums = np.bincount(document, windows)
        errors.append(np.sqrt(np.sum((sums - loss * WINDOWS_PER_DOCUMENT) ** 2) * 60 / 59) / document.size)
    table[contract.FINAL_EVAL_LOSS_SE] = errors
    extra = {contract.EVAL_SET: "documents", contract.EVAL_DIGEST: "abc", "eval_windows": document.size,
             "eval_documents": DOCUMENTS, "eval_largest_document_share": 1 / DOCUMENTS, "eval_s": 0.5,
             "eval_s_median": 0.05, "eval_count": 10}  # fmt: skip
    table = table.assign(**extra)
    table.to_parquet(folder / contract.RUNS_TABLE)
    (folder / contract.HOLDOUT_FILE).write_text(
        json.dumps({"budget": held["budget"], "point": 0, "n_opt_predicted": held["N"], "approach": "approach3"})
    )
    assert report.main([str(folder), "--n-boot", "60"]) == 0
    return folder, (folder / contract.REPORT_FILE).read_text()


def number_after(text: str, phrase: str) -> float:
    return float(text.split(phrase, 1)[1].split()[0].strip("*(),:;"))


def test_the_noise_section_measures_seed_noise_and_tests_the_law_against_it(seeded_report):
    _, text = seeded_report
    noise = text.split("## Noise: seeds and the evaluation set", 1)[1]
    assert number_after(noise, "by") == pytest.approx(SEED_SD, rel=0.25)  # the pooled seed sd
    law = next(line for line in noise.splitlines() if line.startswith("| approach 3"))
    ratio, p = (float(cell) for cell in law.strip("|").split("|")[-2:])
    assert 0.4 < ratio < 2.0 and p > 0.01  # the law holds: its misfit is seed noise
    parabolas = [line for line in noise.splitlines() if line.startswith("| parabola at C")]
    assert len(parabolas) == 4


def test_the_noise_section_sets_the_paired_error_below_a_runs_own(seeded_report):
    _, text = seeded_report
    noise = text.split("## Noise: seeds and the evaluation set", 1)[1]
    own, paired = number_after(noise, "documents of"), number_after(noise, "paired, error:")
    assert own == pytest.approx(0.3 / np.sqrt(DOCUMENTS), rel=0.35)  # the documents' spread, shared by all runs
    assert paired < own / 3
    assert "Cost: 0.05 s per evaluation" in noise


def test_the_placement_section_places_the_held_out_run_and_leaves_each_point_out(seeded_report):
    folder, text = seeded_report
    placed = text.split("## Where the held-out run sits", 1)[1]
    # this law's optimum moves to more tokens per parameter with compute (alpha > beta): at 4x the largest
    # budget it lies just beyond what the grid's runs of its size reached, and the section says so
    assert "**outside** what they reached" in placed and (folder / "figures" / "placement.png").is_file()
    reached = float(placed.split("its size reached ", 1)[1].split(" to ", 1)[1].split(":")[0])
    assert number_after(placed, " at ") > reached
    assert "of the 20 grid points in turn" in placed
    assert number_after(placed, "a spread of") < 0.06


def test_with_one_seed_the_noise_section_still_gives_the_residuals_size(tmp_path):
    """One seed per point: no seed noise to test against, but the RMS of the law's and of each budget's
    parabola's residuals is still stated. The sweep's loss is the true law's times exp(0.002 x normal), so
    the law (the true one) misses by about 0.002 x the loss, and no curve by ten times that."""
    from tests.test_prediction_section import held_out_sweep

    folder, _ = held_out_sweep(tmp_path / "demo")
    noise_nats = 0.002 * load(folder).runs["loss"].mean()
    assert report.main([str(folder), "--n-boot", "30"]) == 0
    noise = (folder / contract.REPORT_FILE).read_text().split("## Noise: seeds and the evaluation set", 1)[1]
    assert "seed noise is not measured" in noise
    rows = [line for line in noise.splitlines() if line.startswith(("| parabola at C", "| approach 3"))]
    rms = {row.strip("|").split("|")[0].strip(): float(row.strip("|").split("|")[-1]) for row in rows}
    assert len(rms) == 5 and all(0 < value < 10 * noise_nats for value in rms.values())
    assert 0.5 * noise_nats < rms["approach 3, law `chinchilla`"] < 2 * noise_nats
