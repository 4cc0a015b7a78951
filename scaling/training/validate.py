"""Checks that turn bad input into one actionable line (ConfigError) before anything is written.

Every field of scaling/config.py is covered: a choice (CHOICES), a numeric range (BOUNDS), or a rule
that relates fields (`validate_config`); checks that need the corpus and the plan are in
`validate_plan`. Each message names the field, the value and what would be valid.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from scaling import contract
from scaling.config import RunConfig
from scaling.data.cache import cache_root
from scaling.data.eval_set import EVAL_SETS, run_eval_windows
from scaling.errors import ConfigError
from scaling.files import unwritable_reason
from scaling.model.mup import PARAMETRIZATIONS
from scaling.model.objectives import ENCODER, ENCODER_DECODER, FAMILIES, mean_span, noise_density, span_layout
from scaling.planning.memory import available_bytes, needed_bytes, sequence_bytes, state_bytes
from scaling.training.checkpoint import saved_steps
from scaling.training.mesh import make_mesh
from scaling.training.schedule import SCHEDULES

CHOICES = {
    "model.norm_position": ("pre", "post"),
    "model.norm": ("rmsnorm", "layernorm"),
    "model.position": ("rope", "learned", "relative"),
    "model.mlp": ("gelu", "swiglu"),
    "model.compute_dtype": ("auto", "float32", "bfloat16"),
    "model.attention_impl": ("auto", "xla", "cudnn"),
    "model.parametrization": PARAMETRIZATIONS,
    "model.family": FAMILIES,
    "tracker.wandb_mode": ("offline", "online", "disabled"),
    "data.name": ("pystdlib", "text", "tokens"),
    "train.schedule": SCHEDULES,
}
# Unset (None) is valid for these: the run keeps what it started with, a new run takes the newest.
OPTIONAL_CHOICES = {"data.eval_set": EVAL_SETS}


@dataclass(frozen=True)
class Range:
    """An interval of valid values (None, where a field allows it, is always valid) and a good example."""

    low: float
    high: float = math.inf
    low_closed: bool = False
    high_closed: bool = False
    example: str = ""

    def holds(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return math.isfinite(value) and above and below

    def text(self) -> str:
        return f"{'[' if self.low_closed else '('}{self.low:g}, {self.high:g}{']' if self.high_closed else ')'}"


BOUNDS: dict[str, Range] = {
    "model.d_model": Range(0, example="128"),
    "model.n_layers": Range(0, example="4"),
    "model.n_heads": Range(0, example="4"),
    "model.seq_len": Range(0, example="256"),
    "model.n_params": Range(0, example="1000000"),
    "model.head_dim": Range(0, example="8"),
    "model.aspect_ratio": Range(0, example="32"),
    "model.min_layers": Range(0, example="2"),
    "model.min_heads": Range(0, example="4"),
    "model.base_width": Range(0, example="32"),
    "model.d_ff": Range(0, example="512 (or null: 4 x d_model)"),
    "model.init_std": Range(0, example="0.02"),
    "model.rope_theta": Range(0, example="10000"),
    "model.mask_rate": Range(0, 1, example="0.15 (or null: BERT's 0.15)"),
    "model.noise_density": Range(0, 1, example="0.15 (or null: T5's 0.15)"),
    "model.mean_span": Range(1, low_closed=True, example="3 (or null: T5's 3)"),
    "data.vocab_size": Range(0, example="4096"),
    "data.val_fraction": Range(0, 1, example="0.05"),
    "data.eval_tokens": Range(0, example="65536"),
    "data.eval_max_doc_share": Range(0, 1, high_closed=True, example="0.05"),
    "train.tokens": Range(0, example="300000"),
    "train.flops": Range(0, example="1e13"),
    "train.batch_size": Range(0, example="16"),
    "train.grad_accum": Range(0, example="null (chosen for the machine) or a divisor of the batch size"),
    "train.lr": Range(0, example="1e-3"),
    "train.min_lr_ratio": Range(0, 1, True, True, "0.1"),
    "train.warmup_fraction": Range(0, 1, low_closed=True, example="0.05"),
    "train.max_warmup_steps": Range(0, low_closed=True, example="1000"),
    "train.warmup_steps": Range(0, low_closed=True, example="100 (or null: the fraction)"),
    "train.decay_fraction": Range(0, 1, high_closed=True, example="0.2"),
    "train.decay_start": Range(0, low_closed=True, example="null (the last decay_fraction of the steps)"),
    "train.b1": Range(0, 1, low_closed=True, example="0.9"),
    "train.b2": Range(0, 1, low_closed=True, example="0.95"),
    "train.eps": Range(0, example="1e-8"),
    "train.weight_decay": Range(0, low_closed=True, example="0.1"),
    "train.weight_decay_timescale": Range(0, example="null (train.weight_decay as given) or 0.5 (half the run)"),
    "train.grad_clip": Range(0, example="1.0 (a very large value turns clipping off)"),
    "train.seed": Range(0, low_closed=True, example="0"),
    "train.data_seed": Range(0, low_closed=True, example="null (the same as train.seed)"),
    "train.log_every": Range(0, example="10"),
    "train.init_step": Range(0, low_closed=True, example="a step saved in train.init_from"),
    "checkpoint.keep": Range(
        1, low_closed=True, example="null (keep every scheduled checkpoint) or K >= 1 (the newest K)"
    ),
    "mesh.num_processes": Range(1, low_closed=True, example="1"),
    "mesh.process_id": Range(0, low_closed=True, example="0"),
    "sweep.spacing": Range(1, example="2.0"),
    "sweep.tokens_per_param": Range(0, example="20"),
    "sweep.holdout_factor": Range(0, low_closed=True, example="4 (or 0: no held-out run)"),
    "sweep.seeds": Range(0, example="3 (every grid point at three seeds)"),
    "sweep.reach": Range(0, low_closed=True, example="2 (or 0: no reach runs)"),
    "sweep.stretch": Range(0, example="1 (the tokens train.flops gives)"),
    "sweep.seed_offset": Range(0, low_closed=True, example="1 (a second design, sharing no seed with the first)"),
    "sweep.pack": Range(0, low_closed=True, example="0 (chosen for the device) or K runs per program"),
    "sweep.jobs": Range(0, low_closed=True, example="0 (chosen for the machine), 1 (one at a time) or K at once"),
}


def _get(cfg: RunConfig, dotted: str) -> Any:
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def _require(ok: bool, field: str, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigError(field, problem, fix)


def check_fields(cfg: RunConfig) -> None:
    """Each field alone: one of its choices, or inside its range."""
    for field, allowed in CHOICES.items():
        value = _get(cfg, field)
        _require(value in allowed, field, f"'{value}' is not one of {', '.join(allowed)}", f"set {field}={allowed[0]}")
    for field, allowed in OPTIONAL_CHOICES.items():
        value = _get(cfg, field)
        _require(
            value is None or value in allowed,
            field,
            f"'{value}' is not one of {', '.join(allowed)}",
            f"set {field}={allowed[0]} or leave it unset",
        )
    for field, valid in BOUNDS.items():
        value = _get(cfg, field)
        shown = f"{value:g}" if isinstance(value, float) else value
        _require(
            value is None or valid.holds(value),
            field,
            f"{shown} is outside {valid.text()}",
            f"e.g. {field}={valid.example}",
        )


def validate_config(cfg: RunConfig) -> None:
    """Everything that can be checked from the config alone (and the files it names)."""
    check_fields(cfg)
    _check_model(cfg)
    _check_family(cfg)
    _check_train(cfg)
    _check_data(cfg)
    _check_checkpoint(cfg)
    _check_mesh_and_sweep(cfg)


def _check_model(cfg: RunConfig) -> None:
    m = cfg.model
    if m.n_params is None:  # (with a target, the family rule picks a valid shape itself)
        heads = m.n_heads if m.n_heads is not None else m.d_model // m.head_dim
        field = "model.n_heads" if m.n_heads is not None else "model.head_dim"
        _require(
            heads > 0 and m.d_model % heads == 0,
            "model.d_model",
            f"{m.d_model} does not split into {heads} heads ({field})",
            f"choose {field} so that it divides d_model",
        )
        if m.position == "rope":
            _require(
                (m.d_model // heads) % 2 == 0,
                field,
                f"RoPE needs an even head size, {m.d_model}/{heads} is odd",
                f"choose {field} so d_model/n_heads is even",
            )
    if m.position == "rope":  # the family's heads (model.n_params, IsoFLOP ladders) are head_dim wide
        _require(
            m.head_dim % 2 == 0,
            "model.head_dim",
            f"RoPE needs an even head size, got {m.head_dim}",
            "e.g. model.head_dim=4",
        )


# Objective settings and the one family each belongs to (scaling/model/objectives.py).
FAMILY_FIELDS = {"model.mask_rate": ENCODER, "model.noise_density": ENCODER_DECODER, "model.mean_span": ENCODER_DECODER}


def _check_family(cfg: RunConfig) -> None:
    """An objective setting only for its family; span corruption that fits the sequence."""
    m = cfg.model
    for field, family in FAMILY_FIELDS.items():
        value = _get(cfg, field)
        _require(
            value is None or m.family == family,
            field,
            f"{value} applies to model.family={family} only, not {m.family}",
            f"leave it null, or set model.family={family}",
        )
    _require(
        m.position != "relative" or m.family == ENCODER_DECODER,
        "model.position",
        f"relative (T5's relative position buckets) is for model.family=encoder_decoder, not {m.family}",
        "use model.position=rope or learned",
    )
    if m.family != ENCODER_DECODER:
        return
    layout = span_layout(m)
    _require(
        mean_span(m) <= layout.noise,
        "model.mean_span",
        f"{mean_span(m):g} tokens is longer than the {layout.noise} tokens span corruption corrupts in a sequence "
        f"of model.seq_len={m.seq_len} (noise density {noise_density(m):g})",
        f"use a mean span of at most {layout.noise}, or a longer model.seq_len or a higher model.noise_density",
    )
    _require(
        m.seq_len - layout.noise >= layout.spans,
        "model.noise_density",
        f"{noise_density(m):g} leaves {m.seq_len - layout.noise} uncorrupted tokens for {layout.spans} spans "
        f"(each span needs one between it and the next)",
        "use a lower model.noise_density or a longer model.mean_span",
    )


def _check_train(cfg: RunConfig) -> None:
    t = cfg.train
    _require(
        (t.tokens is None) != (t.flops is None),
        "train.tokens",
        f"give exactly one of train.tokens ({t.tokens}) and train.flops ({t.flops})",
        "e.g. train.tokens=300000 or train.flops=1e13",
    )
    if t.grad_accum is not None:  # (None: chosen for the machine)
        _require(
            t.batch_size % t.grad_accum == 0,
            "train.grad_accum",
            f"{t.grad_accum} does not divide train.batch_size={t.batch_size}",
            "choose a divisor of the batch size",
        )
    _require(
        t.decay_start is None or t.schedule == "wsd",
        "train.decay_start",
        f"{t.decay_start} applies to train.schedule=wsd only, not {t.schedule}",
        "leave it null or set train.schedule=wsd",
    )
    _require(
        (t.init_from is None) == (t.init_step is None),
        "train.init_step",
        f"train.init_from={t.init_from} and train.init_step={t.init_step} go together",
        "give both (a run directory and one of its saved steps) or neither",
    )
    if t.init_from is not None:
        _require(
            contract.is_run_dir(t.init_from),
            "train.init_from",
            f"{t.init_from} is not a run directory (no {contract.CONFIG_FILE})",
            "name the folder of the run to start from",
        )


def _check_data(cfg: RunConfig) -> None:
    d = cfg.data
    if d.name in ("text", "tokens"):
        _require(bool(d.path), "data.path", f"data={d.name} needs a path", "pass data.path=...")
    if d.name == "tokens" and not any(ch in d.path for ch in "*?["):
        _require(
            Path(d.path).expanduser().exists(),
            "data.path",
            f"{d.path} does not exist",
            "point data.path at a .bin or .npy token file",
        )
    _require(
        d.val_path is None or d.name == "tokens",
        "data.val_path",
        f"{d.val_path} applies to data=tokens only, not {d.name}",
        f"leave it null: data={d.name} holds out data.val_fraction of its files",
    )
    _require(
        _is_integer_dtype(d.token_dtype),
        "data.token_dtype",
        f"'{d.token_dtype}' is not an integer dtype",
        "e.g. uint16 or uint32",
    )
    reason = unwritable_reason(cache_root(d))
    _require(
        reason is None,
        "data.cache_dir",
        f"cannot write to {cache_root(d)} ({reason})",
        "pass a writable data.cache_dir (null: $SCALING_CACHE or ~/.cache/scaling)",
    )


def _is_integer_dtype(name: str) -> bool:
    try:
        return np.dtype(name).kind in "iu"
    except TypeError:
        return False


def _check_checkpoint(cfg: RunConfig) -> None:
    c, start = cfg.checkpoint, 0
    for i, rule in enumerate(c.rules):
        field = f"checkpoint.rules[{i}]"
        _require(rule.every > 0, f"{field}.every", f"must be positive, got {rule.every}", "e.g. {every: 1000}")
        _require(
            rule.until is None or rule.until > start,
            f"{field}.until",
            f"{rule.until} is not after the previous rule's end ({start})",
            "rules apply in order: give increasing `until` values",
        )
        _require(
            rule.until is not None or i == len(c.rules) - 1,
            f"{field}.until",
            "only the last rule may run to the end (until: null); later rules would never apply",
            "give this rule an `until` or drop the rules after it",
        )
        start = rule.until if rule.until is not None else start
    negative = [s for s in c.steps if s < 0]
    _require(not negative, "checkpoint.steps", f"{negative} are negative", "give steps >= 0 (0 is the initialisation)")


COORDINATOR = re.compile(r"^[^:\s]+:\d+$")


def _check_mesh_and_sweep(cfg: RunConfig) -> None:
    m = cfg.mesh
    _require(
        m.data == -1 or m.data >= 1,
        "mesh.data",
        f"{m.data} is neither -1 nor positive",
        "mesh.data=-1 uses every device the fsdp axis leaves",
    )
    _require(m.fsdp >= 1, "mesh.fsdp", f"{m.fsdp} is not positive", "e.g. mesh.fsdp=1 (no parameter sharding)")
    _require(
        m.process_id < m.num_processes,
        "mesh.process_id",
        f"{m.process_id} is not below mesh.num_processes={m.num_processes}",
        f"use 0..{m.num_processes - 1}",
    )
    _require(
        m.coordinator is None or bool(COORDINATOR.match(m.coordinator)),
        "mesh.coordinator",
        f"'{m.coordinator}' is not host:port",
        "e.g. mesh.coordinator=node0:1234",
    )
    unknown = sorted(set(cfg.sweep.family_tokens_per_param) - set(FAMILIES))
    _require(
        not unknown,
        "sweep.family_tokens_per_param",
        f"names {unknown}, which are not pre-training families",
        f"name families of {', '.join(FAMILIES)}, e.g. sweep.family_tokens_per_param={{encoder:120}}",
    )
    bad = {k: v for k, v in cfg.sweep.family_tokens_per_param.items() if not v > 0}
    _require(
        not bad,
        "sweep.family_tokens_per_param",
        f"{bad} are not positive",
        "give each family a centre above 0 tokens per parameter, e.g. {encoder:120}",
    )
    _require(
        cfg.sweep.reach == 0 or cfg.sweep.reach > 1,
        "sweep.reach",
        f"{cfg.sweep.reach} would train the largest grid point again on no more tokens than it had",
        "use a factor above 1, e.g. sweep.reach=2, or 0 for no reach runs",
    )
    _require(
        cfg.sweep.stretch == 1 or cfg.train.flops is not None,
        "sweep.stretch",
        f"{cfg.sweep.stretch} stretches the tokens of a compute budget, and train.flops is not set",
        "set train.flops, or leave sweep.stretch at 1",
    )
    outside = [f for f in cfg.sweep.branches if not 0 < f < 1]
    _require(
        not outside,
        "sweep.branches",
        f"{outside} are not fractions strictly between 0 and 1",
        "e.g. sweep.branches=[0.125,0.25,0.5]",
    )


def validate_plan(cfg: RunConfig, plan, corpus) -> None:
    """Checks that need the corpus, the devices and the derived numbers."""
    budget_field = "train.tokens" if cfg.train.tokens is not None else "train.flops"
    _require(
        plan.steps >= 1,
        budget_field,
        f"the budget is smaller than one step ({plan.tokens_per_step:,} tokens = batch_size x seq_len)",
        "raise the budget or lower train.batch_size / model.seq_len",
    )
    devices, micro = jax.device_count(), cfg.train.batch_size // plan.grad_accum
    _require(
        micro % devices == 0,
        "train.batch_size",
        f"{cfg.train.batch_size} sequences / {plan.grad_accum} micro-batches do not split over {devices} devices",
        f"use a multiple of {devices * plan.grad_accum}",
    )
    make_mesh(cfg.mesh)  # raises naming mesh.data when data x fsdp does not match the devices
    seq_len = plan.model.seq_len
    _require(
        len(corpus.train) > seq_len,
        "model.seq_len",
        f"{seq_len} exceeds the training split ({len(corpus.train)} tokens)",
        "use a shorter context or more data",
    )
    _require(
        len(corpus.val) > seq_len,
        "data.val_fraction",
        f"the held-out split ({len(corpus.val)} tokens) is shorter than one sequence",
        "raise data.val_fraction or give data.val_path",
    )
    # raises naming data.eval_tokens when the validation documents cannot give the set under its cap
    run_eval_windows(cfg.data, corpus.val, corpus.meta.get("eot_id"), seq_len, cfg.train.batch_size)
    t = cfg.train
    for field, value in (("train.warmup_steps", t.warmup_steps), ("train.decay_start", t.decay_start)):
        _require(
            value is None or value <= plan.steps,
            field,
            f"{value} is beyond the run's {plan.steps} steps",
            f"use a step in 0..{plan.steps}",
        )
    _check_attention(cfg)
    _check_memory(cfg, plan)
    if t.init_from is not None and not saved_steps(
        cfg.run_dir
    ):  # (a run that has its own checkpoints resumes from them)
        steps = saved_steps(t.init_from)
        _require(
            t.init_step in steps,
            "train.init_step",
            f"step {t.init_step} is not saved in {t.init_from}",
            f"use one of {steps}",
        )


def _check_memory(cfg: RunConfig, plan) -> None:
    """Refuse, before allocating anything, a run whose training state and activations cannot fit; blame the
    model when its state alone does not fit, else the micro-batch (batch size over gradient accumulation)."""
    need = needed_bytes(plan, cfg.train.batch_size)
    have, what = available_bytes()
    if have is None or need <= have:
        return
    gib = lambda n: f"{n / 2**30:,.1f} GiB"  # noqa: E731
    if state_bytes(plan) < have:
        micro = cfg.train.batch_size // plan.grad_accum
        fits = max(1, int((have - state_bytes(plan)) // sequence_bytes(plan)))
        raise ConfigError(
            "train.batch_size",
            f"{cfg.train.batch_size} sequences in micro-batches of {micro} need at least {gib(need)} to train "
            f"(activations of {micro} sequences, plus 16 bytes per parameter) but the {what} is {gib(have)}",
            f"use micro-batches of at most {fits} sequences: a smaller train.batch_size, or more train.grad_accum",
        )
    field = "model.n_params" if cfg.model.n_params is not None else "model.d_model"
    raise ConfigError(
        field,
        f"{plan.params.total:,} parameters need at least {gib(need)} to train (16 bytes per parameter "
        f"plus activations) but the {what} is {gib(have)}",
        "choose a smaller model, or more devices",
    )


def _check_attention(cfg: RunConfig) -> None:
    """cuDNN flash attention exists on GPUs only, and for 16-bit inputs only."""
    if cfg.model.attention_impl != "cudnn":
        return
    backend = jax.default_backend()
    _require(
        backend == "gpu",
        "model.attention_impl",
        f"cudnn needs a GPU, this machine runs on {backend}",
        "use model.attention_impl=auto",
    )
    _require(
        cfg.model.compute_dtype != "float32",
        "model.attention_impl",
        "cudnn attention needs 16-bit inputs, model.compute_dtype is float32",
        "use model.compute_dtype=bfloat16 or model.attention_impl=auto",
    )
