"""IsoFLOP grids (Hoffmann et al. 2022, approach 2): for each compute budget C, model sizes spaced
evenly in log N around the expected optimum, each trained on D = C / (6 N) tokens.

Sizes come from the family's ladder (scaling/planning/ladder.py): rung k targets N_0 * spacing^k, and the rungs
are shared by every budget. The expected optimum is N* = sqrt(C / (6 * r)) for r tokens per parameter
(Chinchilla: r = 20), from C = 6 N D and D = r N; grid point (C, j) is the rung j steps above the rung
nearest N*. Points below the ladder's first rung, whose budget is under one optimiser step, or that
would need more tokens than the training split holds, are dropped, with the reason reported.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from scaling.config import ModelConfig, run_config
from scaling.errors import ConfigError
from scaling.model.sizing import flops_per_token, param_count
from scaling.planning.ladder import Rung, ladder, nearest_rung, shaped

CHINCHILLA_TOKENS_PER_PARAM = 20.0


@dataclass(frozen=True)
class GridPoint:
    budget: float  # C, FLOPs (6 N D convention, N total parameters; other families: sizing.py's 6n per token)
    point: int  # j: rungs above (below, if negative) the rung nearest the expected optimum
    rung: int  # k: the ladder rung this point trains (-1 when it falls below the ladder)
    n_target: float  # the rung's target size N_0 * spacing^k
    n_params: int  # total parameters of the rung's shape
    n_nonembedding: int
    shape: tuple[int, int, int]  # d_model, n_layers, n_heads
    tokens: int  # D = C / (6 N), whole steps
    dropped: str | None  # why the point is not trained, or None


def expected_optimum(budget: float, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM) -> float:
    return math.sqrt(budget / (6.0 * tokens_per_param))


def offsets(points: int) -> list[int]:
    """Symmetric offsets around the optimum: 5 -> [-2, -1, 0, 1, 2]; 4 -> [-2, -1, 0, 1]."""
    return list(range(-(points // 2), points - points // 2))


def grid_ladder(
    model: ModelConfig,
    vocab_size: int,
    spacing: float,
    budgets: list[float],
    points: list[int],
    tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM,
) -> list[Rung]:
    """The ladder, far enough up for every point of the grid and for each budget's centre rung (rungs do
    not depend on how far it reaches, but a ladder that stopped below the centre would misplace it)."""
    top = max(expected_optimum(c, tokens_per_param) for c in budgets) * spacing ** (max(*points, 0) + 1)
    return ladder(model, vocab_size, spacing, top)


def grid_point(
    budget: float,
    point: int,
    model: ModelConfig,
    vocab_size: int,
    tokens_per_step: int,
    *,
    spacing: float = 2.0,
    tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM,
    max_tokens: int | None = None,
    rungs: list[Rung] | None = None,
) -> GridPoint:
    """One point of the grid: its rung and shape, its token budget, and whether it is dropped."""
    rungs = rungs or grid_ladder(model, vocab_size, spacing, [budget], [point], tokens_per_param)
    k = nearest_rung(rungs, expected_optimum(budget, tokens_per_param)).index + point
    if k < 0:
        smallest = rungs[0].shape.params
        return GridPoint(
            budget,
            point,
            -1,
            rungs[0].target * spacing**k,
            0,
            0,
            (0, 0, 0),
            0,
            f"{-k} rungs below the smallest model ({smallest:,} parameters at this vocabulary)",
        )
    if k >= len(rungs):  # rungs never depend on how far the ladder reaches, so it can be extended
        rungs = ladder(model, vocab_size, spacing, rungs[-1].target * spacing ** (k - len(rungs) + 1))
    rung = rungs[k]
    model = shaped(model, rung.shape.d_model, rung.shape.n_layers)
    counts = param_count(model, vocab_size)
    per_token = flops_per_token(model, vocab_size)["6n"]  # 6 N_total for a decoder (sizing.py: other families)
    steps = int(budget / per_token // tokens_per_step)
    tokens = steps * tokens_per_step
    dropped = None
    if steps < 1:
        dropped = f"D={budget / per_token:,.0f} tokens is less than one step ({tokens_per_step:,} tokens)"
    elif max_tokens is not None and tokens > max_tokens:
        dropped = f"D={tokens:,} tokens exceeds the {max_tokens:,} training tokens (would repeat data)"
    shape = (model.d_model, model.n_layers, model.n_heads)
    return GridPoint(budget, point, k, rung.target, counts.total, counts.nonembedding, shape, tokens, dropped)


def isoflop_grid(
    budgets: list[float],
    points: list[int],
    model: ModelConfig,
    vocab_size: int,
    tokens_per_step: int,
    spacing: float = 2.0,
    tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM,
    **kwargs,
) -> list[GridPoint]:
    rungs = grid_ladder(model, vocab_size, spacing, budgets, points, tokens_per_param)
    return [
        grid_point(
            c,
            k,
            model,
            vocab_size,
            tokens_per_step,
            spacing=spacing,
            tokens_per_param=tokens_per_param,
            rungs=rungs,
            **kwargs,
        )
        for c in budgets
        for k in points
    ]


def check_every_budget_trains(grid: list[GridPoint], tokens_per_param: float) -> None:
    """ConfigError naming sweep.tokens_per_param when it leaves a budget with no point to train (every point
    off the ladder or under one step): the sweep would fit a profile that is not there."""
    for budget in sorted({g.budget for g in grid}):
        points = [g for g in grid if g.budget == budget]
        if all(g.dropped for g in points):
            raise ConfigError(
                "sweep.tokens_per_param",
                f"{tokens_per_param:g} leaves budget {budget:.3g} FLOPs with no run to train "
                f"(point {points[0].point}: {points[0].dropped})",
                "choose one that puts each budget's optimum sqrt(C / (6 x tokens_per_param)) on the ladder "
                "(`python -m scaling.isoflop` prints the grid), e.g. 20",
            )


def format_grid(grid: list[GridPoint]) -> str:
    """A table a person reads before committing compute: the rungs used, then every point."""
    used = sorted({(g.rung, g.n_target, g.n_params, g.n_nonembedding, g.shape) for g in grid if g.rung >= 0})
    lines = [
        f"ladder rungs ({len(used)} shapes; N total / non-embedding):",
        f"{'rung':>5} {'target':>12} {'N total':>12} {'N non-emb':>12} {'d x L x H':>12}",
    ]
    for k, target, n, n_ne, shape in used:
        lines.append(f"{k:>5} {target:>12,.0f} {n:>12,} {n_ne:>12,} {'x'.join(map(str, shape)):>12}")
    ratios = [b[2] / a[2] for a, b in zip(used, used[1:]) if b[0] == a[0] + 1]
    if ratios:
        lines.append(f"neighbouring rungs differ by {min(ratios):.2f}x to {max(ratios):.2f}x in N")
    lines += [
        "",
        f"{'C (FLOPs)':>10} {'j':>3} {'rung':>5} {'N':>12} {'d x L x H':>12} {'D (tokens)':>13} {'D/N':>7}  note",
    ]
    for g in grid:
        shape = "x".join(str(v) for v in g.shape)
        ratio = g.tokens / g.n_params if g.n_params else 0.0
        note = f"dropped: {g.dropped}" if g.dropped else ""
        lines.append(
            f"{g.budget:>10.3g} {g.point:>3d} {g.rung:>5d} {g.n_params:>12,} {shape:>12} {g.tokens:>13,} "
            f"{ratio:>7.1f}  {note}"
        )
    kept = sum(g.dropped is None for g in grid)
    lines.append(f"{kept} of {len(grid)} points will train")
    return "\n".join(lines)


def sweep_values(config, key: str) -> list[Any]:
    """The values a multirun will take for `key` (command line first, then hydra.sweeper.params)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for item in config.hydra.overrides.task:
        if item.startswith(f"{key}="):
            return _expand(parser.parse_override(item))
    spec = (config.hydra.sweeper.get("params") or {}).get(key)
    if spec is None:
        value = OmegaConf.select(config, key)
        return [] if value is None else [value]
    return _expand(parser.parse_override(f"{key}={spec}"))


def _expand(override) -> list[Any]:
    return list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]


def sweep_grid(config, family: str | None = None) -> list[GridPoint]:
    """The IsoFLOP grid a composed sweep config (with its hydra node) will run (for one family of a sweep that
    varies model.family)."""
    cfg = run_config(config, drop=("run_dir",))
    if family is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, family=family))
    budgets = [float(c) for c in sweep_values(config, "train.flops")]
    points = [int(k) for k in sweep_values(config, "sweep.point")]
    tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
    return isoflop_grid(
        budgets,
        points,
        cfg.model,
        cfg.data.vocab_size,
        tokens_per_step,
        spacing=cfg.sweep.spacing,
        tokens_per_param=cfg.sweep.centre(cfg.model.family),
    )


def check_sweep_trains(config) -> None:
    """`check_every_budget_trains` for each family the sweep trains (each has its own ladder and centre)."""
    cfg = run_config(config, drop=("run_dir",))
    for family in map(str, sweep_values(config, "model.family")):  # the one family when it is not swept
        check_every_budget_trains(sweep_grid(config, family), cfg.sweep.centre(family))


def describe_sweep_grid(config) -> str:
    """The grid, formatted, before any job starts: one per family when the sweep varies model.family (each
    family's ladder counts its own parameters and each point its own FLOPs per token)."""
    families = [str(family) for family in sweep_values(config, "model.family")]
    if len(families) <= 1:
        return format_grid(sweep_grid(config))
    return "\n\n".join(f"model.family={family}:\n{format_grid(sweep_grid(config, family))}" for family in families)
