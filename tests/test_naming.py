"""Run names: readable, passed unchanged through the tools a run is handed to (lm-eval's --model_args, Hydra
overrides, shells, URLs), and a run folder named the old way (`flops=6e10,point=-1`) is still found, so
relaunching an old sweep trains nothing it had finished."""

from __future__ import annotations

import importlib.util
import re
import shlex
import urllib.parse

import pandas as pd
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from scaling import contract
from scaling.sweeping.naming import extended, run_folder, run_name
from tests.helpers import run_cli

SWEPT = [
    {"train.flops": 6e10, "sweep.point": -1},
    {"train.flops": 1.6e12, "sweep.point": -3},
    {"train.lr": 1e-3, "model.mlp": "swiglu", "train.seed": 2},
    {"data.path": "corpus/**/*.txt", "model.lr": 3e-3, "train.lr": 0.5},  # clashing leaves: full keys
]


def test_names_are_readable_and_the_old_style_is_kept_for_old_runs():
    assert run_name({"train.flops": 6e10, "sweep.point": -1}) == "flops-6e10_point--1"
    assert run_name({"train.flops": 6e10, "sweep.point": -1}, legacy=True) == "flops=6e10,point=-1"
    assert run_name({}) == "default"
    assert extended("flops-6e10_point--1", "branch", 0.5) == "flops-6e10_point--1_branch-0.5"
    assert extended("flops=6e10,point=-1", "branch", 0.5) == "flops=6e10,point=-1,branch=0.5"  # as its main run


@pytest.mark.parametrize("swept", SWEPT)
def test_names_pass_unchanged_through_hydra_shells_and_urls(swept):
    name = run_name(swept)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name
    path = f"results/demo/runs/{name}"
    override = OverridesParser.create().parse_override(f"run_dir={path}")
    assert not override.is_sweep_override() and override.value() == path
    assert shlex.quote(path) == path and urllib.parse.quote(path) == path


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="needs the hf extra (lm-eval)")
@pytest.mark.parametrize("swept", SWEPT)
def test_names_pass_unchanged_through_lm_evals_model_args(swept):
    from lm_eval.utils import simple_parse_args_string

    path = f"results/demo/runs/{run_name(swept)}"
    assert simple_parse_args_string(f"path={path},step=4") == {"path": path, "step": 4}


def test_an_old_run_folder_is_used_when_only_it_exists(tmp_path):
    new, old = "flops-6e10_point--1", "flops=6e10,point=-1"
    assert run_folder(tmp_path, new, old) == tmp_path / new  # nothing yet: the new name
    (tmp_path / old).mkdir()
    assert run_folder(tmp_path, new, old) == tmp_path / old
    (tmp_path / new).mkdir()
    assert run_folder(tmp_path, new, old) == tmp_path / new


# Old folder names are resolved in the quick suite (test_an_old_run_folder_is_used_when_only_it_exists); this
# relaunches a whole old sweep.
@pytest.mark.slow
def test_relaunching_a_sweep_made_before_the_renaming_trains_nothing(tmp_path, tiny_overrides):
    """A real one-run IsoFLOP sweep; its folder and table then set back to the old names, as an old sweep has them."""
    args = [
        "--multirun",
        "sweep=tiny",
        *tiny_overrides,
        "sweep.tokens_per_param=1",  # a 11k-parameter model on 36k tokens: seconds
        "train.flops=2.4e9",
        "sweep.point=-1",
        f"results_root={tmp_path}",
    ]
    first = run_cli(args, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = tmp_path / "tiny" / contract.RUNS_SUBDIR
    assert [p.name for p in runs.iterdir()] == ["flops-2.4e9_point--1"]
    (runs / "flops-2.4e9_point--1").rename(runs / "flops=2.4e9,point=-1")
    (tmp_path / "tiny" / contract.RUNS_TABLE).unlink()
    again = run_cli(args, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 trained, 1 skipped, 0 failed" in again.stderr, again.stderr[-3000:]
    assert [p.name for p in runs.iterdir()] == ["flops=2.4e9,point=-1"]
    table = pd.read_parquet(tmp_path / "tiny" / contract.RUNS_TABLE)
    assert list(table[contract.RUN_NAME]) == ["flops=2.4e9,point=-1"]
