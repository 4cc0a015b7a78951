"""Checkpoint probes: cached decoding == naive decoding, controls that can fail, statistics, re-runs, report."""

from __future__ import annotations

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from analysis import measurements, probe
from analysis.probes.counts import SeenCounts, bin_range, frequency_bin
from analysis.probes.measure import FORGETTING, MEMORISATION_HELDOUT, MEMORISATION_SCORE
from analysis.probes.stats import uniformity_test
from analysis.reporting.document import markers
from analysis.trained_runs import RunStream
from scaling.config import ModelConfig
from scaling.data.corpus import Corpus
from scaling.data.order import DataOrder
from scaling.model.decode import make_greedy_decoder
from scaling.model.transformer import build_model
from scaling.training.trainer import train
from tests.helpers import compose_config

VOCAB = 97


def _naive_greedy(model, prompt_BxK: jax.Array, n_new: int) -> np.ndarray:
    """The reference: the full forward pass over the whole sequence for every new token.

    The sequence lives in a fixed-length buffer so one compilation serves every step; positions
    after the one read cannot change its logits (causality, tested in test_model.py)."""
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    k = prompt_BxK.shape[1]
    buffer_BxT = jnp.zeros((prompt_BxK.shape[0], k + n_new), jnp.int32).at[:, :k].set(prompt_BxK)
    for t in range(k, k + n_new):
        next_B = jnp.argmax(forward(state, buffer_BxT)[:, t - 1], axis=-1).astype(jnp.int32)
        buffer_BxT = buffer_BxT.at[:, t].set(next_B)
    return np.asarray(buffer_BxT[:, k:])


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"norm_position": "post", "position": "learned", "mlp": "swiglu", "norm": "layernorm", "tie_embeddings": False},
    ],
    ids=["pre-ln-rope", "post-ln-learned-swiglu-untied"],
)
def test_cached_greedy_decode_equals_naive(variant):
    # A large init makes the output depend on the prompt; at 0.02 a random model repeats one token.
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, seq_len=24, compute_dtype="float32", init_std=0.5, **variant)
    model = build_model(cfg, VOCAB, seed=3)
    prompts = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (5, 8)), jnp.int32)
    graphdef, state = nnx.split(model)
    cached = np.asarray(make_greedy_decoder(graphdef, 16)(state, prompts))
    assert len(np.unique(cached)) > 10  # a non-trivial sequence, not one repeated token
    np.testing.assert_array_equal(cached, _naive_greedy(model, prompts, 16))


def test_uniformity_statistic_accepts_uniform_and_rejects_clustered():
    rng = np.random.default_rng(0)
    positions = rng.permutation(4000)
    uniform = rng.random(4000) < 0.05
    clustered = (positions < 1000) & (rng.random(4000) < 0.2)  # as many memorised, all early in training
    assert uniformity_test(positions, uniform, 10).p_value > 0.05
    test = uniformity_test(positions, clustered, 10)
    assert test.p_value < 1e-6
    assert test.memorised_B[:3].sum() == clustered.sum()  # the first 1000 of 4000 positions fill 2.5 bins


def test_seen_counts_are_exact_and_incremental():
    rng = np.random.default_rng(1)
    seq_len, batch, vocab = 8, 3, 11
    tokens = rng.integers(0, vocab, 40 * seq_len + 1).astype(np.uint16)
    order = DataOrder(seed=2, batch_size=batch, n_seqs=40)
    data = RunStream(Corpus(tokens, tokens, vocab, {}, None), order, seq_len)
    counts = SeenCounts(data, vocab)
    for step in (3, 7, 20):  # 20 steps of 3 = 1.5 epochs: repeated sequences count again
        counts.advance(step)
        seqs = np.concatenate([data.update_batch(u) for u in range(step)])
        pairs = Counter(zip(seqs[:, :-1].ravel().tolist(), seqs[:, 1:].ravel().tolist()))
        np.testing.assert_array_equal(counts.unigram, np.bincount(seqs[:, 1:].ravel(), minlength=vocab))
        prev, token = np.divmod(np.arange(vocab * vocab), vocab)
        np.testing.assert_array_equal(counts.pair(prev, token), [pairs[(p, t)] for p, t in zip(prev, token)])


def test_frequency_bins_partition_the_counts():
    counts = np.arange(0, 10_000)  # up to a bin edge, so the last bin is whole
    bins = frequency_bin(counts)
    for b in np.unique(bins):
        lo, hi = bin_range(int(b))
        assert (counts[bins == b].min(), counts[bins == b].max()) == (lo, hi)


# ---- a trained control run: one sequence repeats in 1 of 4 windows, everything else is random ----

V, L, WINDOWS, B, STEPS, K = 64, 32, 4096, 8, 256, 16
EVERY = 4  # the repeated sequence fills every 4th window: about 2 copies per batch, 500 in all


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    """Random tokens (nothing to learn but the repeated sequence X); the forget step's batch holds no X."""
    root = tmp_path_factory.mktemp("control")
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, V, WINDOWS * L + 1).astype(np.uint16)
    repeated = rng.integers(0, V, L + 1).astype(np.uint16)
    for window in range(0, WINDOWS, EVERY):
        tokens[window * L : window * L + L + 1] = repeated
    np.save(root / "train.npy", tokens)
    np.save(root / "val.npy", rng.integers(0, V, 4096).astype(np.uint16))
    order = DataOrder(seed=0, batch_size=B, n_seqs=WINDOWS)
    forget = next(s for s in range(100, STEPS) if not (order.indices(s - 1) % EVERY == 0).any())
    run_dir = root / "run"
    cfg = compose_config(
        [
            "data=tokens",
            f"data.path={root}/train.npy",
            f"data.val_path={root}/val.npy",
            f"data.vocab_size={V}",
            "data.eval_tokens=2048",
            f"data.cache_dir={root}/cache",
            "model.d_model=32",
            "model.n_layers=2",
            "model.n_heads=2",
            f"model.seq_len={L}",
            f"train.batch_size={B}",
            f"train.tokens={STEPS * B * L}",
            # b1 = 0: without momentum one step's effect on its own batch lands at once, not over ~10 later steps.
            "train.lr=1e-2",
            "train.b1=0.0",
            "progress=false",
            f"run_dir={run_dir}",
            f"checkpoint.steps=[{forget - 1},{forget},{forget + 8},{forget + 32},{forget + 64}]",
        ]
    )
    train(cfg)
    (run_dir / "report.md").write_text("# Sweep\n\n<!-- fit:start -->\nfit table\n<!-- fit:end -->\n\nnotes by hand\n")
    args = [
        str(run_dir),
        "--k",
        str(K),
        "--continuation",
        str(L - K),
        "--memo-samples",
        "96",
        "--eval-tokens",
        "2048",
        "--forget-steps",
        str(forget),
    ]
    assert probe.main(args) == 0
    return run_dir, args, order, forget, pd.read_parquet(run_dir / "probes.parquet")


def test_memorisation_control_repeated_sequence_scores_one_unseen_score_chance(control):
    _, _, order, _, table = control
    final = table[(table.probe == MEMORISATION_SCORE) & (table.step == STEPS)]
    positions = final.key.astype(int).to_numpy()
    is_repeated = np.array([order.indices(p // B)[p % B] % EVERY == 0 for p in positions])
    scores = final.value.to_numpy()
    assert is_repeated.sum() >= 5 and (scores[is_repeated] == 1).all()
    assert scores[~is_repeated].mean() < 0.15  # random sequences seen once: close to chance (1/64 per token)
    heldout = table[(table.probe == MEMORISATION_HELDOUT) & (table.step == STEPS)].set_index("key").value
    assert heldout["memorised_fraction"] == 0 and heldout["mean_score"] < 0.1


def test_forgetting_control_batch_loss_is_lowest_right_after_its_step(control):
    _, _, _, forget, table = control
    loss = table[table.probe == FORGETTING].set_index("step").value
    after = loss[loss.index >= forget]
    assert loss[forget] < loss[forget - 1] - 0.02  # the update on this batch lowered its loss at once
    assert after.idxmin() == forget  # ... and every later update (on other data) undid some of it


@pytest.mark.slow
def test_rerun_measures_nothing_new_and_restores_missing_rows(control, monkeypatch):
    run_dir, args, _, _, table = control

    def no_loading(*args, **kwargs):
        pytest.fail("a re-run with every checkpoint probed must load no model")

    monkeypatch.setattr(measurements, "load_model", no_loading)
    assert probe.main(args) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "probes.parquet"), table)
    monkeypatch.undo()
    pruned = table[table.step != table.step.max()]  # as if the last checkpoint were new
    pruned.attrs = table.attrs
    pruned.to_parquet(run_dir / "probes.parquet")
    assert probe.main(args) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "probes.parquet"), table)


def test_report_section_between_markers_keeps_the_rest(control):
    run_dir, args, _, _, _ = control
    report = (run_dir / "report.md").read_text()
    START, END = markers("probe")
    # The probe section goes after the fit section, and nothing else moves.
    assert report.startswith(f"# Sweep\n\n<!-- fit:start -->\nfit table\n<!-- fit:end -->\n\n{START}\n")
    assert report.endswith(f"{END}\n\nnotes by hand\n")
    assert report.count(START) == report.count(END) == 1
    assert "| run |" in report.split(START)[1].split(END)[0]
    for name in ("loss", "loss_by_position", "icl", "memorisation", "memo_uniformity", "term_frequency", "forgetting"):
        assert (run_dir / "figures" / f"probe_{name}.png").stat().st_size > 10_000
        assert f"(figures/probe_{name}.png)" in report
    page = (run_dir / "report.html").read_text()  # the page follows report.md: its sections and all 7 figures
    assert page.index('id="fit"') < page.index('id="probe"') and page.count('<img src="data:image/png;base64,') == 7


def test_changed_settings_and_bad_paths_are_one_line_errors(control, tmp_path, capsys):
    run_dir, args, _, _, _ = control
    for argv in ([str(tmp_path / "missing")], [*args[:2], "17", *args[3:]]):
        assert probe.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err
