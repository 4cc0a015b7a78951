"""Seeds: `sweep.seeds=K` trains every grid point at K seeds, each its own initialisation and data order,
named by its seed and recorded in the runs table; `sweep.seed_offset` gives a design sharing no seed with
the first; bad seed counts and a tokens_per_param that empties a budget are one line and exit 2."""

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from scaling.config import ModelConfig
from scaling.data.order import DataOrder
from scaling.model.transformer import build_model
from scaling.sweeping.jobs import seeded_runs
from scaling.sweeping.naming import run_name
from tests.helpers import compose_config, run_in_process

POINT = {"train.flops": 1e11, "sweep.point": 0}


def seeds(overrides: list[str]) -> list[tuple[int, int | None, str]]:
    cfg = compose_config(["train.tokens=100000", *overrides])
    return [(c.train.seed, c.train.data_seed, run_name(s)) for c, s in seeded_runs(cfg, POINT)]


def test_seeds_are_named_by_their_value_and_offsets_share_none():
    assert seeds([]) == [(0, None, "flops-1e11_point-0")]  # one seed: the run of a sweep without seeds
    first = seeds(["sweep.seeds=3"])
    assert first == [(0, None, "flops-1e11_point-0"), (1, None, "flops-1e11_point-0_seed-1"),
                     (2, None, "flops-1e11_point-0_seed-2")]  # fmt: skip
    second = seeds(["sweep.seeds=3", "sweep.seed_offset=1"])
    assert [s for s, _, _ in second] == [3, 4, 5] and not {s for s, _, _ in first} & {s for s, _, _ in second}
    assert all(name.endswith(f"seed-{s}") for s, _, name in second)
    # a data order set apart from the seed moves with it; a base seed other than 0 is the unnamed one
    assert seeds(["sweep.seeds=2", "train.seed=7", "train.data_seed=100"]) == [
        (7, 100, "flops-1e11_point-0"),
        (8, 101, "flops-1e11_point-0_seed-8"),
    ]


def test_seeds_give_distinct_initialisations_and_data_orders():
    cfg = ModelConfig(d_model=16, n_layers=2, n_heads=4, seq_len=16, compute_dtype="float32")
    params = [jax.tree.leaves(nnx.state(build_model(cfg, 64, seed), nnx.Param)) for seed in (0, 1)]
    assert not any(np.array_equal(a, b) for a, b in zip(*params) if a.ndim >= 2)
    orders = [DataOrder(seed=seed, batch_size=8, n_seqs=1000).indices(0) for seed in (0, 1)]
    assert not np.array_equal(*orders)


SMALL = [
    "--multirun",
    "sweep=tiny",
    "train.flops=1e9",
    "sweep.tokens_per_param=5",
    "data.vocab_size=300",
    "model.seq_len=32",
    "train.batch_size=8",
    "data.eval_tokens=2048",
]


def test_a_seeded_sweep_trains_every_seed_and_records_it(tmp_path, tiny_overrides, monkeypatch, capsys):
    data = [o for o in tiny_overrides if o.startswith("data")]
    args = [*SMALL, *data, "sweep.point=0", "sweep.seeds=2", f"results_root={tmp_path}"]
    code, err = run_in_process(args, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    table = pd.read_parquet(tmp_path / "tiny" / "runs.parquet").set_index("run_name")
    assert sorted(table.index) == ["flops-1e9_point-0", "flops-1e9_point-0_seed-1"]
    assert table["seed"].tolist() == [0, 1] and table["data_seed"].tolist() == [0, 1]
    assert table["params_total"].nunique() == 1 and table["final_eval_loss"].nunique() == 2
    assert table["params_digest"].nunique() == 2
    code, err = run_in_process(args, monkeypatch, capsys)
    assert code == 0 and "0 trained, 2 skipped" in err  # relaunched: every seed found again


@pytest.mark.parametrize(
    "bad, field",
    [
        (["sweep.point=0", "sweep.seeds=0"], "sweep.seeds"),
        (["sweep.point=0", "sweep.seed_offset=-1"], "sweep.seed_offset"),
        (["sweep.point=-2", "sweep.tokens_per_param=1e7"], "sweep.tokens_per_param"),
    ],  # fmt: skip
)
def test_bad_seed_or_grid_input_is_one_line_and_exit_2(bad, field, tmp_path, tiny_overrides, monkeypatch, capsys):
    data = [o for o in tiny_overrides if o.startswith("data")]
    code, err = run_in_process([*SMALL, *data, *bad, f"results_root={tmp_path}"], monkeypatch, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and errors[0].startswith(f"error: {field}:"), err[-2000:]
    assert "Traceback" not in err and not (tmp_path / "tiny" / "runs").exists()
