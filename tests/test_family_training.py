"""Every family trains end to end through the one trainer: its loss falls from ln(vocabulary), its summary
states its honest accounting, and a run cut back to an earlier checkpoint resumes to the uninterrupted digest."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from analysis import probe
from analysis.command import run as run_command
from scaling.model.objectives import model_vocab
from scaling.model.sizing import flops_per_token, param_count
from scaling.training.checkpoint import load_model
from scaling.training.rundir import read_config
from scaling.training.trainer import train
from tests.helpers import compose_config
from tests.test_mesh import _losses, _run_on

# 24 steps of 8 x 32 tokens; checkpoints at 0, 1, 2, 4, 8, 16, 24
RUN_ARGS = ["train.tokens=6144", "train.log_every=4"]


@pytest.mark.parametrize("family", ["encoder", "encoder_decoder"])
def test_family_trains_and_resumes_bit_for_bit(family, tmp_path, tiny_overrides, capsys):
    args = [*tiny_overrides, *RUN_ARGS, f"model.family={family}"]
    reference = tmp_path / "reference"
    done = train(compose_config([f"run_dir={reference}", *args]))
    assert done["status"] == "completed" and done["steps_done"] == 24 and done["family"] == family
    model_cfg = load_model(reference).cfg
    assert model_cfg.family == family
    assert done["params_total"] == param_count(model_cfg, 300).total
    assert done["flops_6n"] == pytest.approx(6144 * flops_per_token(model_cfg, 300)["6n"])
    assert read_config(reference)["derived"]["vocab_size"] == 300  # the corpus's; the model adds its own ids
    evals = pd.read_parquet(reference / "metrics.parquet").dropna(subset=["eval_loss"]).eval_loss
    assert evals.iloc[0] == pytest.approx(np.log(model_vocab(model_cfg, 300)), abs=0.1)  # initialisation
    assert evals.iloc[-1] < evals.iloc[0] - 0.5

    # The probes measure decoders (KV-cache decoding, next-token loss): this family is refused in one line.
    capsys.readouterr()
    assert run_command(probe.probe, probe.parser().parse_args([str(reference)])) == 2
    assert capsys.readouterr().err.startswith(f"error: model.family: the runs under {reference} are {family} runs")

    run_dir = tmp_path / "interrupted"
    shutil.copytree(reference, run_dir)
    (run_dir / "summary.json").unlink()
    for step in (16, 24):
        shutil.rmtree(run_dir / "checkpoints" / str(step))
    resumed = train(compose_config([f"run_dir={run_dir}", *args]))
    assert resumed["status"] == "completed" and resumed["params_digest"] == done["params_digest"]
    columns = ["step", "tokens", "flops", "train_loss", "eval_loss"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(run_dir / "metrics.parquet")[columns], pd.read_parquet(reference / "metrics.parquet")[columns]
    )


@pytest.mark.slow
@pytest.mark.parametrize("family", ["encoder", "encoder_decoder"])
def test_family_on_eight_devices_matches_one(family, tmp_path, tiny_overrides):
    """Data and parameters sharded (data 2 x fsdp 4 over 8 fake CPU devices): the same losses as one device."""
    overrides = [*tiny_overrides, f"model.family={family}"]
    _run_on(1, tmp_path / "one", overrides)
    _run_on(8, tmp_path / "eight", overrides, ["mesh.data=2", "mesh.fsdp=4"])
    pd.testing.assert_frame_equal(_losses(tmp_path / "eight"), _losses(tmp_path / "one"), rtol=2e-4, atol=2e-4)
