"""IsoFLOP grids: log-spaced sizes around the optimum, D = C / 6N, dropped points with reasons, the shipped designs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from scaling import isoflop
from scaling.config import ModelConfig, register_configs
from scaling.model.sizing import param_count
from scaling.planning.grids import (
    expected_optimum,
    grid_point,
    isoflop_grid,
    offsets,
    sweep_grid,
)


def _compose_sweep(name: str, overrides: list[str] = ()) -> object:
    register_configs()
    with initialize_config_module(config_module="sweeps", version_base="1.3"):
        return compose(config_name="config", overrides=[f"sweep={name}", *overrides], return_hydra_config=True)


def test_offsets_are_symmetric_around_the_optimum():
    assert offsets(5) == [-2, -1, 0, 1, 2]
    assert offsets(4) == [-2, -1, 0, 1]


def test_grid_points_are_ladder_rungs_with_d_from_c_over_6n():
    model = ModelConfig(seq_len=256)
    grid = isoflop_grid([1e17, 1e18], offsets(5), model, 4096, 256 * 64, spacing=math.sqrt(2))
    for g in grid:
        assert g.dropped is None
        assert (
            g.n_params
            == param_count(
                ModelConfig(d_model=g.shape[0], n_layers=g.shape[1], n_heads=g.shape[2], seq_len=256), 4096
            ).total
        )
        assert abs(g.n_params / g.n_target - 1) <= 0.10
        assert 0 <= g.budget / (6 * g.n_params) - g.tokens < 256 * 64  # whole steps, at most one short
    for budget in (1e17, 1e18):
        points = [g for g in grid if g.budget == budget]
        assert [g.rung for g in points] == list(range(points[0].rung, points[0].rung + 5))  # consecutive rungs
        np.testing.assert_allclose(np.diff(np.log([g.n_target for g in points])), math.log(math.sqrt(2)))
        centre = next(g for g in points if g.point == 0)
        assert abs(math.log(centre.n_target / expected_optimum(budget))) <= math.log(math.sqrt(2)) / 2 + 1e-9


def test_budgets_share_the_shapes_of_one_ladder():
    """A shape appears once in the ladder, so two budgets that reach the same size train the same shape."""
    grid = isoflop_grid(
        [1e11, 2e11, 4e11, 8e11],
        offsets(5),
        ModelConfig(seq_len=64, head_dim=4, aspect_ratio=16),
        512,
        1024,
        spacing=math.sqrt(2),
    )
    by_rung = {}
    for g in grid:
        by_rung.setdefault(g.rung, set()).add(g.shape)
    assert all(len(shapes) == 1 for shapes in by_rung.values())
    assert len(by_rung) < len(grid)  # budgets reuse rungs


def test_grid_drops_points_with_reasons():
    model = ModelConfig(seq_len=64)
    too_small = grid_point(1e9, -2, model, 512, 1024)
    assert too_small.dropped and "smallest model" in too_small.dropped
    under_a_step = grid_point(1e10, 10, model, 512, 1024)
    assert under_a_step.dropped and "one step" in under_a_step.dropped
    beyond_data = grid_point(1e13, 0, model, 512, 1024, max_tokens=1_000_000)
    assert beyond_data.dropped and "exceeds" in beyond_data.dropped
    assert grid_point(1e12, 0, model, 512, 1024, max_tokens=10**9).dropped is None


def test_chinchilla_isoflop_grid_matches_hoffmann_design():
    grid = sweep_grid(_compose_sweep("chinchilla_isoflop"))
    budgets = sorted({g.budget for g in grid})
    assert budgets == [6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21]
    for c in budgets:
        points = [g for g in grid if g.budget == c]
        assert len(points) == 7 and all(g.dropped is None for g in points)
        n = sorted(g.n_params for g in points)
        optimum = expected_optimum(c)
        assert n[0] < optimum / 3 and n[-1] > optimum * 3  # spans the optimum on both sides
        assert n == sorted(set(n))  # distinct sizes
        for g in points:
            assert g.tokens * 6 * g.n_params == pytest.approx(c, rel=0.01)


def test_demo_grid_spans_8x_of_compute_around_the_optimum():
    grid = sweep_grid(_compose_sweep("demo"))
    budgets = sorted({g.budget for g in grid})
    assert len(budgets) >= 4 and budgets[-1] >= 8 * budgets[0]
    for c in budgets:
        kept = [g for g in grid if g.budget == c and g.dropped is None]
        # five sizes, but at the smallest budget the lowest would fall below the family's smallest member
        assert len(kept) >= (4 if c == budgets[0] else 5)
        assert min(g.point for g in kept) < 0 < max(g.point for g in kept)
    rungs = {g.rung: g.n_params for g in grid if g.dropped is None}
    assert len(rungs) == len({g.shape for g in grid if g.dropped is None})  # budgets reuse the ladder's shapes


def test_pythia_suite_shares_budget_and_data_order():
    config = _compose_sweep("pythia_suite")
    sizes = str(config.hydra.sweeper.params["model.n_params"]).split(",")
    assert len(sizes) >= 3
    assert config.train.tokens and config.train.data_seed is not None
    assert config.checkpoint.log_spaced


@pytest.mark.parametrize("point", [-4, -3, -2, -1, 0, 2])
def test_one_job_places_its_point_on_the_rung_of_the_whole_grid(point):
    """A sweep job computes its own point alone; far below the centre it must still find the centre
    (a ladder that stopped below it put the demo's held-out run at point -3 one rung too low)."""
    model = ModelConfig(seq_len=64, head_dim=4, aspect_ratio=16)
    budget, spacing = 1.6e12, math.sqrt(2)
    alone = grid_point(budget, point, model, 512, 1024, spacing=spacing)
    together = isoflop_grid([budget], [-4, -3, -2, -1, 0, 1, 2], model, 512, 1024, spacing=spacing)
    assert alone == next(g for g in together if g.point == point)


@pytest.mark.parametrize(
    "argv, named", [(["sweep=dmeo"], "did you mean sweep=demo?"), (["model.widht=3"], "model.widht")]
)
def test_the_grid_command_refuses_a_bad_override_in_one_line(argv, named, capsys):
    with pytest.raises(SystemExit) as caught:
        isoflop.main(argv)
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.count("\n") == 1 and err.startswith("error:") and named in err


def test_each_family_centres_its_grid_on_its_own_tokens_per_parameter():
    """sweep.family_tokens_per_param: the objectives sweep centres each family where its optimum was
    measured; a job computing its own point alone lands on the point of that family's whole grid."""
    from scaling.config import run_config
    from scaling.planning.plan import isoflop_point

    config = _compose_sweep("objectives")
    centres = {"decoder": 25.0, "encoder": 120.0, "encoder_decoder": 90.0}
    assert {
        family: config.sweep.family_tokens_per_param.get(family, config.sweep.tokens_per_param) for family in centres
    } == centres
    for family, centre in centres.items():
        grid = sweep_grid(config, family)
        for budget in sorted({g.budget for g in grid}):
            middle = next(g for g in grid if g.budget == budget and g.point == 0)
            # point 0 is the rung nearest sqrt(C / 6 centre); rungs are up to 1.6x apart, so D/N within 1.6^2
            assert centre / 2.6 < middle.tokens / middle.n_params < centre * 2.6, (family, budget)
            job = run_config(
                _compose_sweep("objectives", [f"model.family={family}", f"train.flops={budget:g}", "sweep.point=-1"])
            )
            assert isoflop_point(job, 512) == next(g for g in grid if g.budget == budget and g.point == -1)
    # the encoder's grid sits at smaller models than the decoder's at the same budget
    decoder, encoder = (
        next(g for g in sweep_grid(config, f) if g.budget == 4e11 and g.point == 0) for f in ("decoder", "encoder")
    )
    assert encoder.n_params < decoder.n_params
