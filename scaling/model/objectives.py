"""The pre-training objectives of the three families, as pure functions of (tokens, seed, step).

Every family reads the same data: the window of seq_len + 1 tokens the data order picks (scaling/data/order.py).
What it trains on differs:

  decoder          next-token prediction: the window's first T tokens in, its last T out (unchanged).
  encoder          masked language modelling (Devlin et al. 2019, BERT): of the window's first T tokens,
                   m = round(mask_rate x T) positions (at least 1) are drawn uniformly without replacement;
                   each is replaced by [MASK] with probability 0.8, by a token drawn uniformly from the
                   corpus vocabulary with probability 0.1, and left as it is with probability 0.1; the loss
                   is the cross-entropy of the original token at those m positions only. BERT draws each
                   position with probability 0.15, so its count varies; a fixed count keeps every batch the
                   same shape (one compilation) and its expected share is the same.
  encoder_decoder  T5's span corruption (Raffel et al. 2020, section 3.1.4 and its `random_spans_noise_mask`):
                   n = round(noise_density x T) of the first T tokens (at least 1) are corrupted, in
                   S = round(n / mean_span) spans (at least 1); span lengths and the clean stretches between
                   them are random segmentations, clean first and a span last, as in T5. The encoder reads the
                   clean tokens with each span replaced by its own sentinel (the k-th span of a sequence by
                   sentinel k); the decoder writes, for each span, its sentinel then the span's tokens, teacher
                   forced from a start token. Both lengths are the same for every sequence:
                   inputs T - n + S, targets n + S.

Reserved ids. The corpus's tokenizer owns ids 0..V-1 (V = data.vocab_size, which may exceed the tokens the
tokenizer learned); nothing in the corpus is ever >= V. A family's own tokens take the ids above: the encoder's
[MASK] is V; the encoder-decoder's sentinels are V..V+S-1 and its decoder start token V+S (T5 starts the
decoder from its pad id, which text never contains either). So a model's embedding has V + `extra_tokens`
rows, counted in its parameters as T5's 100 sentinels are in T5's.

A batch reaches the jitted step as one int32 array per row, the family's pieces side by side (`pack` /
`unpack`), so the step, gradient accumulation, evaluation and sharding handle every family alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaling.config import ModelConfig

DECODER, ENCODER, ENCODER_DECODER = "decoder", "encoder", "encoder_decoder"
FAMILIES = (DECODER, ENCODER, ENCODER_DECODER)
MASK_RATE, NOISE_DENSITY, MEAN_SPAN = 0.15, 0.15, 3.0  # BERT's and T5's published settings
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # BERT: of the chosen positions, 80% [MASK], 10% a random token, 10% kept
# The held-out set is corrupted once, by a key of its own, so every run of a family is evaluated on the same inputs.
EVAL_KEY = 0x5EED_E7A1


def mask_rate(cfg: ModelConfig) -> float:
    return MASK_RATE if cfg.mask_rate is None else cfg.mask_rate


def noise_density(cfg: ModelConfig) -> float:
    return NOISE_DENSITY if cfg.noise_density is None else cfg.noise_density


def mean_span(cfg: ModelConfig) -> float:
    return MEAN_SPAN if cfg.mean_span is None else cfg.mean_span


def n_masked(cfg: ModelConfig) -> int:
    """m: positions of a T-token sequence the masked LM predicts."""
    return min(cfg.seq_len, max(1, round(mask_rate(cfg) * cfg.seq_len)))


@dataclass(frozen=True)
class SpanLayout:
    """How span corruption cuts a T-token sequence: n corrupted tokens in S spans; inputs and targets lengths."""

    noise: int
    spans: int

    def inputs(self, seq_len: int) -> int:
        return seq_len - self.noise + self.spans

    @property
    def targets(self) -> int:
        return self.noise + self.spans


def span_layout(cfg: ModelConfig) -> SpanLayout:
    """T5's counts: n = round(density T) clipped to [1, T-1], S = round(n / mean span), at least 1."""
    noise = min(max(round(noise_density(cfg) * cfg.seq_len), 1), cfg.seq_len - 1)
    return SpanLayout(noise, max(1, round(noise / mean_span(cfg))))


def extra_tokens(cfg: ModelConfig) -> int:
    """Ids a family reserves above the corpus vocabulary: [MASK]; or S sentinels and a decoder start token."""
    if cfg.family == ENCODER:
        return 1
    if cfg.family == ENCODER_DECODER:
        return span_layout(cfg).spans + 1
    return 0


def model_vocab(cfg: ModelConfig, vocab_size: int) -> int:
    """Rows of the model's embedding (and logits): the corpus vocabulary and the family's reserved ids."""
    return vocab_size + extra_tokens(cfg)


def mask_id(vocab_size: int) -> int:
    return vocab_size


def sentinel_id(vocab_size: int, k):
    """The id of the k-th span's sentinel (k may be an array)."""
    return vocab_size + k


def start_id(cfg: ModelConfig, vocab_size: int) -> int:
    """The encoder-decoder's decoder start token."""
    return vocab_size + span_layout(cfg).spans


def pieces(cfg: ModelConfig) -> tuple[int, ...]:
    """Widths of the arrays a batch row holds side by side, in order (see `unpack`)."""
    t = cfg.seq_len
    if cfg.family == ENCODER:
        m = n_masked(cfg)
        return (t, m, m)  # inputs, predicted positions, their original tokens
    if cfg.family == ENCODER_DECODER:
        layout = span_layout(cfg)
        return (layout.inputs(t), layout.targets, layout.targets)  # encoder inputs, decoder inputs, targets
    return (t + 1,)  # the window itself


def batch_width(cfg: ModelConfig) -> int:
    """Columns of one batch row as the train step receives it."""
    return sum(pieces(cfg))


def pack(*arrays: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.int32) for a in arrays], axis=1)


def unpack(cfg: ModelConfig, batch_BxW):
    """The family's arrays from a packed batch (numpy or jax): slices along the last axis."""
    out, start = [], 0
    for width in pieces(cfg):
        out.append(batch_BxW[..., start : start + width])
        start += width
    return tuple(out)


def _rng(seed: int, step: int) -> np.random.Generator:
    """A generator keyed by (seed, step) alone: the objective's draws are a pure function of them."""
    return np.random.default_rng([seed, step, 27])


def mask_tokens(tokens_BxT: np.ndarray, cfg: ModelConfig, vocab_size: int, rng: np.random.Generator) -> np.ndarray:
    """BERT's masking of each row (module docstring), packed as (inputs, positions, targets)."""
    b, t = tokens_BxT.shape
    m = n_masked(cfg)
    positions_BxM = np.sort(rng.random((b, t)).argsort(axis=1)[:, :m], axis=1)
    rows = np.arange(b)[:, None]
    targets_BxM = tokens_BxT[rows, positions_BxM]
    u_BxM = rng.random((b, m))
    random_BxM = rng.integers(0, vocab_size, (b, m))
    replaced_BxM = np.where(
        u_BxM < MASK_SHARE, mask_id(vocab_size), np.where(u_BxM < MASK_SHARE + RANDOM_SHARE, random_BxM, targets_BxM)
    )
    inputs_BxT = tokens_BxT.copy()
    inputs_BxT[rows, positions_BxM] = replaced_BxM
    return pack(inputs_BxT, positions_BxM, targets_BxM)


def random_segmentation(total: int, segments: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, segments) positive lengths summing to `total`, uniform over such compositions (T5's
    `_random_segmentation`: segments - 1 distinct cut points among the total - 1 gaps)."""
    cuts_RxK = np.sort(rng.random((rows, total - 1)).argsort(axis=1)[:, : segments - 1] + 1, axis=1)
    edges_RxK2 = np.concatenate([np.zeros((rows, 1), int), cuts_RxK, np.full((rows, 1), total)], axis=1)
    return np.diff(edges_RxK2, axis=1)


def noise_mask(layout: SpanLayout, seq_len: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, T) booleans: which tokens are corrupted; clean and corrupted stretches alternate, clean first."""
    noise_RxS = random_segmentation(layout.noise, layout.spans, rows, rng)
    clean_RxS = random_segmentation(seq_len - layout.noise, layout.spans, rows, rng)
    lengths_Rx2S = np.stack([clean_RxS, noise_RxS], axis=2).reshape(rows, -1)
    is_noise_2S = np.tile([False, True], layout.spans)
    return np.stack([np.repeat(is_noise_2S, lengths) for lengths in lengths_Rx2S])


def corrupt_spans(tokens_BxT: np.ndarray, cfg: ModelConfig, vocab_size: int, rng: np.random.Generator) -> np.ndarray:
    """T5's span corruption of each row (module docstring), packed as (encoder inputs, decoder inputs, targets)."""
    b, t = tokens_BxT.shape
    layout = span_layout(cfg)
    noise_BxT = noise_mask(layout, t, b, rng)
    starts_BxT = noise_BxT & ~np.concatenate([np.zeros((b, 1), bool), noise_BxT[:, :-1]], axis=1)
    sentinels_BxT = sentinel_id(vocab_size, np.cumsum(starts_BxT, axis=1) - 1)
    # Each position emits up to two ids: a sentinel where a span starts, then its token (inputs: if clean;
    # targets: if corrupted). Reading the valid ones row by row gives every row the same length.
    emitted_BxTx2 = np.stack([sentinels_BxT, tokens_BxT], axis=2).reshape(b, 2 * t)
    inputs = emitted_BxTx2[np.stack([starts_BxT, ~noise_BxT], axis=2).reshape(b, 2 * t)].reshape(b, -1)
    targets = emitted_BxTx2[np.stack([starts_BxT, noise_BxT], axis=2).reshape(b, 2 * t)].reshape(b, -1)
    decoder_inputs = np.concatenate([np.full((b, 1), start_id(cfg, vocab_size)), targets[:, :-1]], axis=1)
    return pack(inputs, decoder_inputs, targets)


def make_batch(cfg: ModelConfig, vocab_size: int, windows_BxT1: np.ndarray, seed: int, step: int) -> np.ndarray:
    """What the family trains on at `step`, from the data order's windows: a pure function of (tokens, seed, step).
    The decoder's batch is the windows themselves."""
    if cfg.family == DECODER:
        return windows_BxT1
    tokens_BxT = np.asarray(windows_BxT1[:, : cfg.seq_len], np.int64)
    corrupt = mask_tokens if cfg.family == ENCODER else corrupt_spans
    return corrupt(tokens_BxT, cfg, vocab_size, _rng(seed, step))


def eval_batch(cfg: ModelConfig, vocab_size: int, windows_NxT1: np.ndarray) -> np.ndarray:
    """The held-out windows as the family evaluates them: corrupted once, by EVAL_KEY, the same for every run."""
    return make_batch(cfg, vocab_size, windows_NxT1, EVAL_KEY, 0)
