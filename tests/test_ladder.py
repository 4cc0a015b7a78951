"""The model family and its ladder: monotone, at least two layers, a fixed head size, rungs within 10%
of a geometric sequence shared by every budget, and one-line errors for targets no shape reaches."""

from __future__ import annotations

import dataclasses
import math

import pytest

from scaling.config import ModelConfig
from scaling.errors import ConfigError
from scaling.model.sizing import param_count
from scaling.planning.ladder import SIZE_TOLERANCE, depths, ladder, preferred_layers, shape_for_params, smallest

# The shipped families: the CPU sweeps' (sweeps/sweep/isoflop_base.yaml), the default, and a GPU one.
FAMILIES = {
    "cpu-sweeps": (ModelConfig(seq_len=64, head_dim=4, aspect_ratio=16), 512, 3e6),
    "default": (ModelConfig(seq_len=256), 4096, 3e7),
    "gpu": (ModelConfig(seq_len=2048, head_dim=64, aspect_ratio=64), 32000, 2e10),
}


@pytest.fixture(scope="module", params=FAMILIES.values(), ids=FAMILIES.keys())
def rungs(request):
    model, vocab, top = request.param
    return model, vocab, ladder(model, vocab, math.sqrt(2), top)


def test_rungs_are_monotone_with_a_fixed_head_size_and_two_layers_or_more(rungs):
    model, _, ladder_rungs = rungs
    shapes = [r.shape for r in ladder_rungs]
    for smaller, larger in zip(shapes, shapes[1:]):
        assert smaller.params < larger.params
        assert smaller.d_model <= larger.d_model and smaller.n_layers <= larger.n_layers
    assert all(s.n_layers >= 2 and s.d_model % model.head_dim == 0 for s in shapes)


def test_rungs_are_within_ten_percent_of_a_geometric_sequence(rungs):
    model, vocab, ladder_rungs = rungs
    targets = [r.target for r in ladder_rungs]
    for a, b in zip(targets, targets[1:]):
        assert b / a == pytest.approx(math.sqrt(2))
    for rung in ladder_rungs:
        assert abs(rung.shape.params / rung.target - 1) <= SIZE_TOLERANCE
        counted = param_count(
            ModelConfig(
                **{
                    **model.__dict__,
                    "d_model": rung.shape.d_model,
                    "n_layers": rung.shape.n_layers,
                    "n_heads": rung.shape.d_model // model.head_dim,
                }
            ),
            vocab,
        )
        assert counted.total == rung.shape.params


def test_a_rung_does_not_depend_on_how_far_the_ladder_reaches():
    model, vocab, top = FAMILIES["cpu-sweeps"]
    long = ladder(model, vocab, math.sqrt(2), top)
    for reach in (3e4, 2e5, 1e6):
        short = ladder(model, vocab, math.sqrt(2), reach)
        assert [r.shape for r in short] == [r.shape for r in long[: len(short)]]


def test_depth_grows_with_width_as_the_aspect_ratio_says():
    model, vocab, _ = FAMILIES["gpu"]
    big = ladder(model, vocab, math.sqrt(2), 2e10)[-1].shape
    assert 0.7 < big.d_model / big.n_layers / model.aspect_ratio < 1.4


@pytest.mark.parametrize("target", [3e5, 1e6, 4e6, 2e7, 1.25e8, 1e9])
@pytest.mark.parametrize("vocab", [1024, 4096, 50304])
def test_a_parameter_target_gets_a_family_shape_within_ten_percent(target, vocab):
    model = ModelConfig(n_params=int(target))
    if smallest(model, vocab).params > target * (1 + SIZE_TOLERANCE):
        pytest.skip("target below the family's smallest model at this vocabulary")
    shaped = shape_for_params(model, vocab, target)
    assert abs(param_count(shaped, vocab).total / target - 1) <= SIZE_TOLERANCE
    assert shaped.n_heads * model.head_dim == shaped.d_model and shaped.n_layers >= 2 and shaped.n_params is None


def test_gpt2_small_is_the_125m_member_of_the_gpu_family():
    shaped = shape_for_params(ModelConfig(seq_len=1024, head_dim=64, aspect_ratio=64), 50257, 1.24e8)
    assert (shaped.d_model, shaped.n_layers, shaped.n_heads) == (768, 12, 12)


@pytest.mark.parametrize("target", [10, 30_000])
def test_an_unreachable_target_names_the_nearest_sizes(target):
    model = ModelConfig(head_dim=8, aspect_ratio=32)
    with pytest.raises(ConfigError) as caught:
        shape_for_params(model, 512, target)
    line = str(caught.value)
    assert line.startswith("error: model.n_params: ") and "nearest reachable sizes are" in line and "\n" not in line
    first = smallest(model, 512)
    assert f"{first.params:,} (d_model {first.d_model}, {first.n_layers} layers)" in line


def test_an_encoder_decoder_shares_the_depth_rule_between_its_two_stacks():
    """T5's parameter-matched split (L/2 + L/2): the encoder-decoder prefers half the decoder's n_layers at a
    width, its floor of two layers counts both stacks (1 + 1), and every rung's two stacks together take a
    depth the decoder's rule allows at that width."""
    decoder, vocab, top = FAMILIES["cpu-sweeps"]
    t5 = dataclasses.replace(decoder, family="encoder_decoder")
    for d_model in (16, 64, 256, 1024):
        assert preferred_layers(t5, d_model) == pytest.approx(preferred_layers(decoder, d_model) / 2)
    assert (smallest(decoder, vocab).n_layers, smallest(t5, vocab).n_layers) == (2, 1)
    for rung in ladder(t5, vocab, math.sqrt(2), top):
        assert 2 * rung.shape.n_layers in depths(decoder, rung.shape.d_model)
