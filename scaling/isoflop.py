"""IsoFLOP grids (Hoffmann et al. 2022, approach 2): for each compute budget C, model sizes spaced
evenly in log N around the expected optimum, each trained on D = C / (6 N) tokens.

The expected optimum is N* = sqrt(C / (6 * r)) for r tokens per parameter (Chinchilla: r = 20),
from C = 6 N D and D = r N. A grid point is (C, k): N = N* * spacing**k. Points whose model is
smaller than the smallest shape, whose budget is under one optimiser step, or that would need more
tokens than the training split holds, are dropped, with the reason reported.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from scaling.config import ModelConfig, register_configs, to_dataclass
from scaling.sizing import param_count, shape_for_params

CHINCHILLA_TOKENS_PER_PARAM = 20.0


@dataclass(frozen=True)
class GridPoint:
    budget: float  # C, FLOPs (6 N D convention, N total parameters)
    point: int  # k: log-spaced offset from the expected optimum
    n_target: int
    n_params: int  # after the shape rule
    shape: tuple[int, int, int]  # d_model, n_layers, n_heads
    tokens: int  # D = C / (6 N), whole steps
    dropped: str | None  # why the point is not trained, or None


def expected_optimum(budget: float, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM) -> float:
    return math.sqrt(budget / (6.0 * tokens_per_param))


def offsets(points: int) -> list[int]:
    """Symmetric offsets around the optimum: 5 -> [-2, -1, 0, 1, 2]; 4 -> [-2, -1, 0, 1]."""
    return list(range(-(points // 2), points - points // 2))


def smallest_model(model: ModelConfig, vocab_size: int) -> int:
    tiny = dataclasses.replace(model, d_model=16, n_layers=1, n_heads=1, n_params=None)
    return param_count(tiny, vocab_size).total


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
) -> GridPoint:
    """One point of the grid: its model shape, token budget, and whether it is dropped."""
    n_target = int(round(expected_optimum(budget, tokens_per_param) * spacing**point))
    floor = smallest_model(model, vocab_size)
    shaped = shape_for_params(model, vocab_size, max(n_target, floor))
    n_params = param_count(shaped, vocab_size).total
    steps = int(budget / (6.0 * n_params) // tokens_per_step)
    tokens = steps * tokens_per_step
    dropped = None
    if n_target < floor:
        dropped = f"N={n_target:,} is below the smallest model ({floor:,} parameters at this vocabulary)"
    elif steps < 1:
        dropped = f"D={budget / (6 * n_params):,.0f} tokens is less than one step ({tokens_per_step:,} tokens)"
    elif max_tokens is not None and tokens > max_tokens:
        dropped = f"D={tokens:,} tokens exceeds the {max_tokens:,} training tokens (would repeat data)"
    shape = (shaped.d_model, shaped.n_layers, shaped.n_heads)
    return GridPoint(budget, point, n_target, n_params, shape, tokens, dropped)


def isoflop_grid(budgets: list[float], points: list[int], model: ModelConfig, vocab_size: int, tokens_per_step: int, **kwargs) -> list[GridPoint]:
    return [grid_point(c, k, model, vocab_size, tokens_per_step, **kwargs) for c in budgets for k in points]


def format_grid(grid: list[GridPoint]) -> str:
    """A table a person reads before committing compute."""
    lines = [f"{'C (FLOPs)':>10} {'k':>3} {'N':>12} {'d x L x H':>14} {'D (tokens)':>13} {'D/N':>7}  note"]
    for g in grid:
        shape = "x".join(str(v) for v in g.shape)
        ratio = g.tokens / g.n_params
        note = f"dropped: {g.dropped}" if g.dropped else ""
        lines.append(f"{g.budget:>10.3g} {g.point:>3d} {g.n_params:>12,} {shape:>14} {g.tokens:>13,} {ratio:>7.1f}  {note}")
    kept = sum(g.dropped is None for g in grid)
    lines.append(f"{kept} of {len(grid)} points will train")
    return "\n".join(lines)


def _sweep_values(config, key: str) -> list[Any]:
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


def sweep_grid(config) -> list[GridPoint]:
    """The IsoFLOP grid a composed sweep config (with its hydra node) will run."""
    cfg = to_dataclass(OmegaConf.masked_copy(config, [k for k in config.keys() if k not in ("hydra", "run_dir")]))
    budgets = [float(c) for c in _sweep_values(config, "train.flops")]
    points = [int(k) for k in _sweep_values(config, "sweep.point")]
    tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
    return isoflop_grid(
        budgets, points, cfg.model, cfg.data.vocab_size, tokens_per_step,
        spacing=cfg.sweep.spacing, tokens_per_param=cfg.sweep.tokens_per_param,
    )  # fmt: skip


def describe_sweep_grid(config) -> str:
    """The grid, formatted, before any job starts."""
    return format_grid(sweep_grid(config))


def main(argv: list[str]) -> None:
    """`python -m scaling.isoflop sweep=NAME [overrides]`: print a sweep's grid, train nothing."""
    from hydra import compose, initialize_config_module

    register_configs()
    with initialize_config_module(config_module="sweeps", version_base="1.3"):
        config = compose(config_name="config", overrides=argv, return_hydra_config=True)
    print(describe_sweep_grid(config))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
