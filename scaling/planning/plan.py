"""The run plan: everything derived from the config before anything trains (model shape, budget in
steps, micro-batches for this machine), written to config.yaml's `derived` section."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax

from scaling.config import ModelConfig, RunConfig
from scaling.errors import ConfigError
from scaling.model.sizing import ParamCount, ffn_dim, flops_per_token, param_count
from scaling.planning.grids import GridPoint, grid_point
from scaling.planning.ladder import shape_for_params


@dataclass(frozen=True)
class Plan:
    """Numbers derived from the config before anything trains; written to config.yaml."""

    model: ModelConfig
    vocab_size: int
    params: ParamCount
    flops_per_token: dict[str, float]
    tokens_per_step: int
    steps: int
    tokens: int
    grad_accum: int  # micro-batches per step, as resolved for this machine (`micro_batches`)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_shape": {
                **{k: getattr(self.model, k) for k in ("d_model", "n_layers", "n_heads", "seq_len")},
                "d_ff": ffn_dim(self.model),  # recorded so that a later default cannot change how a run loads
            },
            "vocab_size": self.vocab_size,
            "params_total": self.params.total,
            "params_embedding": self.params.embedding,
            "params_nonembedding": self.params.nonembedding,
            "flops_per_token": self.flops_per_token,
            "tokens_per_step": self.tokens_per_step,
            "steps": self.steps,
            "tokens": self.tokens,
            "grad_accum": self.grad_accum,
        }


def make_plan(cfg: RunConfig, vocab_size: int) -> Plan:
    """Resolve the model shape (from n_params if given) and the budget (from flops if given)."""
    model = cfg.model
    if cfg.sweep.point is not None:
        model = isoflop_model(cfg, vocab_size)
    elif model.n_params is not None:
        model = shape_for_params(model, vocab_size, model.n_params)
    elif model.n_heads is None:
        model = dataclasses.replace(model, n_heads=model.d_model // model.head_dim)
    params = param_count(model, vocab_size)
    per_token = flops_per_token(model, vocab_size)
    tokens_per_step = cfg.train.batch_size * model.seq_len
    target = cfg.train.tokens if cfg.train.tokens is not None else cfg.sweep.stretch * cfg.train.flops / per_token["6n"]
    steps = int(target // tokens_per_step)
    accum = micro_batches(cfg.train.grad_accum, cfg.train.batch_size, model, jax.device_count(), jax.default_backend())
    return Plan(model, vocab_size, params, per_token, tokens_per_step, steps, steps * tokens_per_step, accum)


# On CPU a step over the whole batch streams its activations and logits through main memory;
# micro-batches of about this many tokens per device stay in cache. Measured on a 2-core CPU with a
# 32 MiB cache: -21% per step at d_model 256 / context 256 / batch 16 (8 micro-batches) and -17% at
# d_model 512 / context 512 / batch 8; 256-token micro-batches were no better.
CPU_MICRO_BATCH_TOKENS = 512
# Below this width each micro-batch is too little work to pay for another pass through the model
# (d_model 32: 5.0 -> 5.7 ms per step when split in two).
CPU_MICRO_BATCH_MIN_WIDTH = 64


def micro_batches(requested: int | None, batch_size: int, model: ModelConfig, n_devices: int, backend: str) -> int:
    """`train.grad_accum` when given; otherwise 1 on accelerators, and on CPU the most micro-batches
    that keep each at least CPU_MICRO_BATCH_TOKENS tokens per device (and the batch split evenly)."""
    if requested is not None:
        return requested
    if backend != "cpu" or model.d_model < CPU_MICRO_BATCH_MIN_WIDTH or batch_size % n_devices:
        return 1
    per_device = batch_size // n_devices
    fits = [
        a
        for a in range(1, per_device + 1)
        if per_device % a == 0 and per_device // a * model.seq_len >= CPU_MICRO_BATCH_TOKENS
    ]
    return max(fits, default=1)


def isoflop_point(cfg: RunConfig, vocab_size: int, max_tokens: int | None = None) -> GridPoint:
    """The IsoFLOP grid point (train.flops, sweep.point) names."""
    if cfg.train.flops is None:
        raise ConfigError("sweep.point", "an IsoFLOP point needs a compute budget", "set train.flops")
    tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
    return grid_point(
        cfg.train.flops,
        cfg.sweep.point,
        cfg.model,
        vocab_size,
        tokens_per_step,
        spacing=cfg.sweep.spacing,
        tokens_per_param=cfg.sweep.centre(cfg.model.family),
        max_tokens=max_tokens,
    )


def isoflop_model(cfg: RunConfig, vocab_size: int) -> ModelConfig:
    d_model, n_layers, n_heads = isoflop_point(cfg, vocab_size).shape
    return dataclasses.replace(cfg.model, d_model=d_model, n_layers=n_layers, n_heads=n_heads, n_params=None)
