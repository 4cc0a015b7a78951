"""muP (Yang et al. 2022): the table's learning rates and initialisation, weight decay as the reference
implementation's MuAdamW applies it, a coordinate check on the sweeps' configuration (tied embeddings, no
biases) that fails on a broken muP, muP at the base width equal to SP bit for bit, and muP runs that resume
exactly."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.config import ModelConfig, TrainConfig
from scaling.data.eval_set import run_eval_windows
from scaling.data.load import load_corpus
from scaling.model import mup, transformer
from scaling.model.attention import rope_tables
from scaling.model.transformer import build_model, token_losses
from scaling.training.checkpoint import load_model
from scaling.training.optimizer import make_optimizer, optimizer_factory
from scaling.training.schedule import schedule_values
from scaling.training.step import eval_chunks, make_train_step
from scaling.training.trainer import train
from tests.helpers import compose_config
from tests.test_checkpoint import _assert_same_run, _preempted_then_resumed

# The sweeps' configuration: tied embeddings (the output layer is the embedding, times 1/m), no biases.
BASE = ModelConfig(
    d_model=16,
    n_layers=2,
    n_heads=4,
    head_dim=4,
    seq_len=16,
    parametrization="mup",
    base_width=16,
    compute_dtype="float32",
    tie_embeddings=True,
    use_bias=False,
)
UNTIED = dataclasses.replace(BASE, tie_embeddings=False, use_bias=True)  # a separate readout, with biases
VOCAB = 64
WIDTHS = (32, 64, 128, 256)


def _params(cfg: ModelConfig, seed: int = 0) -> dict:
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(build_model(cfg, VOCAB, seed), nnx.Param)))


def test_learning_rate_multipliers_follow_the_table():
    cfg = dataclasses.replace(UNTIED, d_model=64, n_heads=16)  # m = 4
    multipliers = mup.lr_multipliers(_params(cfg), cfg)
    flat = {jax.tree_util.keystr(path): value for path, value in jax.tree_util.tree_leaves_with_path(multipliers)}
    for name, value in flat.items():
        if name.startswith(("['embed']", "['head']")) or "bias" in name or "scale" in name:
            assert value == 1.0, name  # input and output weights, biases and norm scales: lr unscaled
        else:
            assert value == 0.25, name  # hidden matrices: lr / m
    assert {n for n, v in flat.items() if v == 0.25} >= {
        "['blocks'][0]['attn']['qkv']['kernel']",
        "['blocks'][1]['mlp']['down']['kernel']",
    }
    sp = dataclasses.replace(cfg, parametrization="sp")
    assert mup.optimizer_multipliers(_params(sp), sp) is None


def test_initialisation_and_multipliers_follow_the_table():
    wide = dataclasses.replace(UNTIED, d_model=256, n_heads=64)  # m = 16: hidden std / 4
    params, base = _params(wide), _params(UNTIED)
    for name, expected in (("qkv", 0.02 / 4), ("up", 0.02 / 4)):
        block = params["blocks"][0]
        kernel = block["attn"][name]["kernel"] if name == "qkv" else block["mlp"][name]["kernel"]
        assert np.std(kernel) == pytest.approx(expected, rel=0.05)
    assert np.std(params["embed"]["embedding"]) == pytest.approx(np.std(base["embed"]["embedding"]), rel=0.1)
    assert np.std(params["head"]["kernel"]) == pytest.approx(0.02, rel=0.05)  # readout: SP init, 1/m on the logits
    assert mup.output_multiplier(wide) == 1 / 16 and mup.output_multiplier(BASE) == 1.0
    assert mup.attention_scale(wide) == pytest.approx(1 / 2)  # head size 4 = the family's: 1/sqrt(4)
    wide_heads = dataclasses.replace(wide, n_heads=16)  # 16-channel heads: 1/d_head, times sqrt(4)
    assert mup.attention_scale(wide_heads) == pytest.approx(2 / 16)
    assert mup.attention_scale(dataclasses.replace(wide_heads, parametrization="sp")) == pytest.approx(1 / 4)


def _trained(cfg: ModelConfig, steps: int, lr: float = 1e-2, wd: float = 0.1) -> tuple[nnx.Module, dict]:
    train = TrainConfig(lr=lr, warmup_fraction=0.0, schedule="constant", weight_decay=wd)
    model = build_model(cfg, VOCAB, seed=0)
    graphdef, state = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(state)
    multipliers = mup.optimizer_multipliers(params, cfg)
    opt_state = make_optimizer(train, steps, multipliers).init(params)
    step = make_train_step(graphdef, optimizer_factory(train, multipliers), 1)
    schedule = jnp.asarray(schedule_values(train, steps))
    batches = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (steps, 4, cfg.seq_len + 1)), jnp.int32)
    for t in range(steps):
        params, opt_state, _ = step(params, opt_state, batches[t], schedule)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state), params


def activation_rms(model, tokens_BxT: jax.Array) -> dict[str, float]:
    """Root-mean-square coordinate of the embeddings, of each block's output and of the logits."""

    @jax.jit  # one compiled program instead of every operation dispatched on its own
    def rms_of(tokens_BxT):
        x_BxTxD = model.embed(tokens_BxT)
        rms = {"embedding": x_BxTxD}
        rope = rope_tables(tokens_BxT.shape[1], model.cfg.d_model // model.cfg.n_heads, model.cfg.rope_theta)
        for i, block in enumerate(model.blocks):
            x_BxTxD, _ = block(x_BxTxD, rope)
            rms[f"block {i}"] = x_BxTxD
        rms["logits"] = model.logits(model.final_norm(x_BxTxD))
        return {name: jnp.sqrt(jnp.mean(jnp.square(value))) for name, value in rms.items()}

    return {name: float(value) for name, value in rms_of(tokens_BxT).items()}


def coordinate_slopes(parametrization: str, steps: int = 5) -> dict[str, float]:
    """Slope of log RMS against log width, per layer, after `steps` Adam steps (the coordinate check)."""
    rows = []
    for width in WIDTHS:
        cfg = dataclasses.replace(BASE, d_model=width, n_heads=width // 4, parametrization=parametrization)
        model, _ = _trained(cfg, steps)
        rows.append(activation_rms(model, jnp.asarray(np.random.default_rng(1).integers(0, VOCAB, (4, 16)), jnp.int32)))
    return {name: float(np.polyfit(np.log(WIDTHS), np.log([r[name] for r in rows]), 1)[0]) for name in rows[0]}


def assert_flat(slopes: dict[str, float]) -> None:
    """Every layer's RMS changes by less than a factor 2 over the 8x range of widths."""
    steep = {name: round(s, 2) for name, s in slopes.items() if abs(s) * np.log(WIDTHS[-1] / WIDTHS[0]) >= np.log(2)}
    assert not steep, f"activations change with width: slopes {steep}"


@pytest.fixture(scope="module")
def slopes() -> dict[str, dict[str, float]]:
    return {p: coordinate_slopes(p) for p in ("sp", "mup")}


def test_coordinate_check_is_flat_under_mup_and_grows_under_sp(slopes):
    assert_flat(slopes["mup"])
    assert max(slopes["sp"][f"block {i}"] for i in range(2)) > 1.0
    with pytest.raises(AssertionError):
        assert_flat(slopes["sp"])


def test_coordinate_check_fails_on_a_broken_mup(monkeypatch):
    """muP without its per-parameter learning rates (Adam's updates then grow with width) is caught."""
    monkeypatch.setattr(mup, "lr_multipliers", lambda params, cfg: jax.tree.map(lambda _: 1.0, params))
    with pytest.raises(AssertionError, match="activations change with width"):
        assert_flat(coordinate_slopes("mup"))


def test_coordinate_check_fails_without_the_output_multiplier(monkeypatch):
    """With tied embeddings the 1/m logit multiplier is what makes the shared matrix a muP readout: without
    it the logits grow with width (slope +0.49 measured), and the check says so."""
    monkeypatch.setattr(transformer, "output_multiplier", lambda cfg: 1.0)
    with pytest.raises(AssertionError, match="logits"):
        assert_flat(coordinate_slopes("mup"))


def reference_muadamw(params: dict, grads: list[dict], cfg: ModelConfig, lr: float, wd: float) -> dict:
    """microsoft/mup's MuAdamW in float64 NumPy: torch's AdamW over parameter groups, where a matrix-like
    parameter (both dimensions scale with width: the hidden matrices) gets lr / m and weight_decay x m, and
    the rest (the embedding, vocabulary by width, and the norm scales) keep lr and weight_decay. Torch's
    AdamW step: p *= 1 - lr_g wd_g; m, v as Adam's; p -= lr_g m_hat / (sqrt(v_hat) + eps). Decay applies
    where ours does (matrices and the embedding, not norm scales)."""
    m = cfg.d_model / cfg.base_width
    flat = {jax.tree_util.keystr(k): np.asarray(v, np.float64) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    state = {name: (np.zeros_like(p), np.zeros_like(p)) for name, p in flat.items()}
    b1, b2, eps = 0.9, 0.95, 1e-8
    for t, grad in enumerate(grads, start=1):
        g_flat = {
            jax.tree_util.keystr(k): np.asarray(v, np.float64) for k, v in jax.tree_util.tree_leaves_with_path(grad)
        }
        for name, p in flat.items():
            hidden = p.ndim == 2 and "embed" not in name
            lr_g, wd_g = (lr / m, wd * m) if hidden else (lr, wd)
            if p.ndim >= 2:
                p *= 1.0 - lr_g * wd_g
            mu, nu = state[name]
            mu, nu = b1 * mu + (1 - b1) * g_flat[name], b2 * nu + (1 - b2) * g_flat[name] ** 2
            state[name] = (mu, nu)
            p -= lr_g * (mu / (1 - b1**t)) / (np.sqrt(nu / (1 - b2**t)) + eps)
    return flat


def test_mup_weight_decay_equals_the_reference_muadamw():
    """Three steps of our optimiser under muP (m = 4) equal the reference's to float32 rounding; the
    decay alone (zero gradients) shrinks every matrix by exactly lr x wd per step, at any width."""
    cfg = dataclasses.replace(BASE, d_model=64, n_heads=16)
    lr, wd = 1e-2, 0.1
    train = TrainConfig(lr=lr, warmup_fraction=0.0, schedule="constant", weight_decay=wd, grad_clip=1e9)
    params = _params(cfg)
    rng = np.random.default_rng(0)
    grads = [jax.tree.map(lambda p: rng.normal(0, 1e-3, p.shape).astype(np.float32), params) for _ in range(3)]
    multipliers = mup.optimizer_multipliers(params, cfg)
    tx = make_optimizer(train, 10, multipliers)
    ours, state = params, tx.init(params)
    for grad in grads:
        updates, state = tx.update(grad, state, ours)
        ours = jax.tree.map(lambda p, u: p + u, ours, updates)
    expected = reference_muadamw(params, grads, cfg, lr, wd)
    for path, value in jax.tree_util.tree_leaves_with_path(ours):
        np.testing.assert_allclose(
            np.asarray(value, np.float64), expected[jax.tree_util.keystr(path)], rtol=2e-5, atol=1e-7
        )
    zero = jax.tree.map(np.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    kernel = params["blocks"][0]["attn"]["qkv"]["kernel"]
    np.testing.assert_allclose(updates["blocks"][0]["attn"]["qkv"]["kernel"], -lr * wd * kernel, rtol=1e-6)


def test_mup_at_the_base_width_trains_exactly_as_sp():
    _, mup_params = _trained(BASE, 3)
    _, sp_params = _trained(dataclasses.replace(BASE, parametrization="sp"), 3)
    for a, b in zip(jax.tree.leaves(mup_params), jax.tree.leaves(sp_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


MUP_RUN = ["model.parametrization=mup", "model.base_width=16", "train.tokens=38400", "train.log_every=5"]


def test_a_mup_run_resumes_bit_for_bit_and_loads_for_analysis(tmp_path, tiny_overrides, monkeypatch):
    """Preempted at a step off the checkpoint schedule, a muP run (width 32 = twice its base) resumes
    to exactly the uninterrupted run; load_model then rebuilds the muP model, multipliers included: its
    held-out loss equals the one training recorded."""
    reference = tmp_path / "reference"
    cfg = compose_config([f"run_dir={reference}", *tiny_overrides, *MUP_RUN])
    summary = train(cfg)
    assert summary["status"] == "completed"
    _preempted_then_resumed(tmp_path / "resumed", [*tiny_overrides, *MUP_RUN[:2]], 23, monkeypatch)
    _assert_same_run(tmp_path / "resumed", reference)
    model = load_model(reference)
    assert model.output_mult == 0.5  # d_model 32 over base width 16
    corpus = load_corpus(cfg.data, progress=False)
    windows = eval_chunks(run_eval_windows(cfg.data, corpus.val, corpus.meta["eot_id"], 32, 8).windows_NxT1, 8)
    seqs = jnp.asarray(windows.reshape(-1, windows.shape[-1]))
    loss = float(token_losses(model(seqs[:, :-1]), seqs[:, 1:]).mean())
    assert loss == pytest.approx(summary["final_eval_loss"], rel=1e-4)
