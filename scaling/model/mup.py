"""The maximal-update parametrization (muP; Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466).

Under `model.parametrization=mup` a model of width d is described relative to a base width d_0
(`model.base_width`) by the width multiplier m = d / d_0. For Adam, following the paper's muP with an
output multiplier (its Table 8, as the authors' `mup` package implements it with MuReadout and MuAdam):

| parameters                                   | initial std        | Adam learning rate | forward       |
|----------------------------------------------|--------------------|--------------------|---------------|
| embeddings (token, learned position)          | init_std           | lr                 | as SP         |
| hidden matrices (qkv, attention out, MLP)     | init_std / sqrt(m) | lr / m             | as SP         |
| output head (untied) and every bias / scale   | init_std (1, 0)    | lr                 | as SP         |
| logits                                        |                    |                    | x (1 / m)     |
| attention scores                              |                    |                    | x 1 / d_head  |

Tied embeddings are one matrix serving as input and output: it is treated as an input weight (SP
init, unscaled learning rate), and the 1/m logit multiplier makes its use as the output layer muP,
as the mup package's shared readout does. The residual projections keep their 1/sqrt(2 n_layers)
depth factor on top of the 1/sqrt(m). Attention scores scale as 1/d_head with the constant chosen so
that a head of the family's `head_dim` channels gets SP's 1/sqrt(d_head); the ladder keeps heads at
that size, so there the two coincide and muP changes only how width scales.

At the base width every factor is exactly 1, so muP trains the base model bit for bit as SP does
(tested): learning rates tuned on the base model under SP are muP's.
"""

from __future__ import annotations

import math
from typing import Any

import jax

from scaling.config import ModelConfig

PARAMETRIZATIONS = ("sp", "mup")
INPUT_PARAMS = ("embed", "pos_embed")  # top-level names of the input (embedding) parameters
OUTPUT_PARAMS = ("head",)


def width_mult(cfg: ModelConfig) -> float:
    """m = d_model / base_width under muP; 1 under SP."""
    return cfg.d_model / cfg.base_width if cfg.parametrization == "mup" else 1.0


def hidden_std(cfg: ModelConfig, std: float) -> float:
    """Initial std of a hidden matrix whose SP std is `std`: variance proportional to 1 / fan-in."""
    m = width_mult(cfg)
    return std if m == 1.0 else std / math.sqrt(m)


def output_multiplier(cfg: ModelConfig) -> float:
    """The factor on the logits: 1 / m under muP (1 under SP)."""
    return 1.0 / width_mult(cfg)


def attention_scale(cfg: ModelConfig) -> float:
    """Multiplier of q.k: 1/sqrt(d_head) under SP; under muP sqrt(head_dim) / d_head, which is the same
    at the family's head size and falls as 1/d_head as heads widen."""
    d_head = cfg.d_model // cfg.n_heads
    sp = 1.0 / math.sqrt(d_head)
    if cfg.parametrization != "mup" or d_head == cfg.head_dim:
        return sp
    return (1.0 / math.sqrt(cfg.head_dim)) * (cfg.head_dim / d_head)


def role(path: tuple, leaf: Any) -> str:
    """What a parameter is to muP: 'input', 'output', 'hidden' (a matrix in the blocks) or 'vector'."""
    top = str(getattr(path[0], "key", path[0]))
    if top in INPUT_PARAMS:
        return "input"
    if top in OUTPUT_PARAMS:
        return "output"
    return "hidden" if leaf.ndim >= 2 else "vector"


def lr_multipliers(params: Any, cfg: ModelConfig) -> Any:
    """Per-parameter factors on Adam's learning rate: 1 / m for hidden matrices under muP, else 1."""
    m = width_mult(cfg)
    return jax.tree_util.tree_map_with_path(lambda path, leaf: 1.0 / m if role(path, leaf) == "hidden" else 1.0, params)


def optimizer_multipliers(params: Any, cfg: ModelConfig) -> Any | None:
    """What the optimiser takes: the muP multipliers, or None under SP (which keeps SP's optimiser unchanged)."""
    return lr_multipliers(params, cfg) if cfg.parametrization == "mup" else None
