"""Warmup-stable-decay ladders: one long run and cooldown branches taken from its checkpoints, so one
run serves several token budgets (Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond
Fixed Training Durations")."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from scaling.config import RunConfig
from scaling.config import replace as cfg_replace
from scaling.errors import ConfigError
from scaling.sweeping.naming import extended
from scaling.training.schedule import warmup_steps, weight_decay

MAIN_RUN = {"branch_of": "", "shared_tokens": 0, "branch_fraction": 1.0}  # table fields of a run that is no branch


def wsd_ladder(cfg: RunConfig) -> list[tuple[RunConfig, dict[str, Any]]]:
    """One warmup-stable-decay run plus a cooldown branch per fraction in sweep.branches.

    Branch k reaches T_k = fraction * T steps: it starts from the main run's checkpoint at
    S_k = T_k - decay_fraction * T_k (where both runs still share the same constant learning rate,
    warmup and data order) and cools down over its last decay_fraction (Hagele et al. 2024).
    Returns [(config, extra table fields)], main run first.
    """
    if cfg.train.tokens is None:
        raise ConfigError("train.tokens", "a WSD ladder needs the longest budget in tokens", "set train.tokens")
    tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
    total = cfg.train.tokens // tokens_per_step
    warm = warmup_steps(cfg.train, total)
    ends = sorted({int(f * total) for f in cfg.sweep.branches if 0 < f < 1})
    starts = [end - int(round(cfg.train.decay_fraction * end)) for end in ends]
    # The branches share the main run's first steps, so they share its weight decay too (a decay set by
    # timescale would otherwise follow each branch's own length, and the shared steps would differ).
    shared = {"schedule": "wsd", "warmup_steps": warm}
    decay = {"weight_decay": weight_decay(cfg.train, total), "weight_decay_timescale": None}
    main = cfg_replace(
        cfg,
        train=shared,
        checkpoint={"steps": sorted(set(cfg.checkpoint.steps) | set(starts))},
        sweep={"branches": []},
    )
    runs = [(main, MAIN_RUN)]
    for end, start in zip(ends, starts):
        branch = cfg_replace(
            main,
            train={
                **decay,
                "tokens": end * tokens_per_step,
                "decay_start": start,
                "init_from": main.run_dir,
                "init_step": start,
            },
            checkpoint={"steps": [start]},
        )
        name = extended(Path(main.run_dir).name, "branch", float(f"{end / total:.3g}"))
        branch = dataclasses.replace(branch, run_dir=str(Path(main.run_dir).with_name(name)))
        runs.append((branch, branch_fields(branch, main)))
    return runs


def branch_fields(branch: RunConfig, main: RunConfig) -> dict[str, Any]:
    """A cooldown branch's table fields: its main run, the tokens it shares with it, its share of the budget."""
    per_step = main.train.batch_size * main.model.seq_len
    return {
        "branch_of": Path(main.run_dir).name,
        "shared_tokens": branch.train.init_step * per_step,
        "branch_fraction": (branch.train.tokens // per_step) / (main.train.tokens // per_step),
    }
