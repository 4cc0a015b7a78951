"""Checks that turn bad input into one actionable line (ConfigError) before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scaling.config import RunConfig
from scaling.errors import ConfigError
from scaling.schedule import SCHEDULES

CHOICES = {
    "model.norm_position": ("pre", "post"),
    "model.norm": ("rmsnorm", "layernorm"),
    "model.position": ("rope", "learned"),
    "model.mlp": ("gelu", "swiglu"),
    "model.compute_dtype": ("auto", "float32", "bfloat16"),
    "model.attention_impl": ("auto", "xla", "cudnn"),
    "data.name": ("pystdlib", "text", "tokens"),
    "train.schedule": SCHEDULES,
}
POSITIVE = (
    "model.d_model", "model.n_layers", "model.n_heads", "model.seq_len", "data.vocab_size",
    "data.eval_tokens", "train.batch_size", "train.grad_accum", "train.lr", "train.log_every",
)  # fmt: skip
CONFIG_GROUPS = ("data", "sweep", "hydra")


def _get(cfg: RunConfig, dotted: str) -> Any:
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def _require(ok: bool, field: str, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigError(field, problem, fix)


def validate_config(cfg: RunConfig) -> None:
    """Everything that can be checked from the config alone."""
    for field, allowed in CHOICES.items():
        value = _get(cfg, field)
        _require(value in allowed, field, f"'{value}' is not one of {', '.join(allowed)}", f"set {field}={allowed[0]}")
    for field in POSITIVE:
        value = _get(cfg, field)
        _require(value is None or value > 0, field, f"must be positive, got {value}", f"set {field} to a positive number")
    m, t = cfg.model, cfg.train
    if m.n_params is None:
        _require(m.d_model % m.n_heads == 0, "model.d_model", f"{m.d_model} is not divisible by model.n_heads={m.n_heads}", "choose n_heads that divides d_model")
        if m.position == "rope":
            _require((m.d_model // m.n_heads) % 2 == 0, "model.n_heads", "RoPE needs an even head size", "choose n_heads so d_model/n_heads is even")
    else:
        _require(m.n_params > 0, "model.n_params", f"must be positive, got {m.n_params}", "give a target like model.n_params=1000000")
    _require((t.tokens is None) != (t.flops is None), "train.tokens", "give exactly one of train.tokens and train.flops", "e.g. train.tokens=300000 or train.flops=1e13")
    budget_field, budget = ("train.tokens", t.tokens) if t.tokens is not None else ("train.flops", t.flops)
    _require(budget > 0, budget_field, f"must be positive, got {budget}", f"set {budget_field} to a positive budget")
    if t.grad_accum is not None:  # (None: chosen for the machine)
        _require(t.batch_size % t.grad_accum == 0, "train.grad_accum", f"{t.grad_accum} does not divide train.batch_size={t.batch_size}", "choose a divisor of the batch size")
    _require(0 <= t.warmup_fraction < 1, "train.warmup_fraction", f"{t.warmup_fraction} is outside [0, 1)", "e.g. 0.05")
    _require(0 < t.decay_fraction <= 1, "train.decay_fraction", f"{t.decay_fraction} is outside (0, 1]", "e.g. 0.2")
    _require(0 < cfg.data.val_fraction < 1, "data.val_fraction", f"{cfg.data.val_fraction} is outside (0, 1)", "e.g. 0.01")
    for i, rule in enumerate(cfg.checkpoint.rules):
        _require(rule.every > 0, f"checkpoint.rules[{i}].every", f"must be positive, got {rule.every}", "e.g. {every: 1000}")
    if cfg.data.name in ("text", "tokens"):
        _require(bool(cfg.data.path), "data.path", f"data={cfg.data.name} needs a path", "pass data.path=...")
    if cfg.data.name == "tokens" and not any(ch in cfg.data.path for ch in "*?["):
        _require(Path(cfg.data.path).expanduser().exists(), "data.path", f"{cfg.data.path} does not exist", "point data.path at a .bin or .npy token file")


def validate_plan(cfg: RunConfig, plan, corpus) -> None:
    """Checks that need the corpus and the derived numbers."""
    budget_field = "train.tokens" if cfg.train.tokens is not None else "train.flops"
    _require(
        plan.steps >= 1,
        budget_field,
        f"the budget is smaller than one step ({plan.tokens_per_step:,} tokens = batch_size x seq_len)",
        "raise the budget or lower train.batch_size / model.seq_len",
    )
    devices, micro = jax.device_count(), cfg.train.batch_size // plan.grad_accum
    _require(micro % devices == 0, "train.batch_size", f"{cfg.train.batch_size} sequences / {plan.grad_accum} micro-batches do not split over {devices} devices", f"use a multiple of {devices * plan.grad_accum}")
    seq_len = plan.model.seq_len
    _require(len(corpus.train) > seq_len, "model.seq_len", f"{seq_len} exceeds the training split ({len(corpus.train)} tokens)", "use a shorter context or more data")
    _require(len(corpus.val) > seq_len, "data.val_fraction", f"the held-out split ({len(corpus.val)} tokens) is shorter than one sequence", "raise data.val_fraction or give data.val_path")


def check_overrides(overrides: list[str]) -> None:
    """Reject unknown keys and ill-typed values with one line, before Hydra composes anything."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    schema = OmegaConf.structured(RunConfig)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # noqa: BLE001 - Hydra's parser raises several types
        raise ConfigError("command line", str(err).splitlines()[0], "write overrides as key=value") from err
    for ov in parsed:
        key = ov.key_or_group
        if key.split("/")[0].split(".")[0] in CONFIG_GROUPS and ("." not in key or key.startswith("hydra")):
            continue
        if key.startswith("sweep."):
            continue  # sweep definitions may add their own fields
        if OmegaConf.select(schema, key, default="__missing__") == "__missing__" and not _is_none_field(schema, key):
            section = key.rsplit(".", 1)[0] if "." in key else ""
            raise ConfigError(key, "unknown config key", _valid_keys_hint(schema, section))
        if ov.is_sweep_override():
            continue
        try:
            OmegaConf.update(schema, key, ov.value(), merge=True)
        except OmegaConfBaseException as err:
            raise ConfigError(key, str(err).splitlines()[0], "check the value's type") from err


def _is_none_field(schema, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(schema, parent) if parent else schema
    return node is not None and OmegaConf.is_config(node) and leaf in node


def _valid_keys_hint(schema, section: str) -> str:
    node = OmegaConf.select(schema, section) if section else schema
    if node is None or not OmegaConf.is_config(node):
        return "see scaling/config.py for the valid keys"
    return "valid keys: " + ", ".join(f"{section + '.' if section else ''}{k}" for k in node.keys())
