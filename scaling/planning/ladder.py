"""The model family: which shape (d_model, n_layers, n_heads) each parameter count gets.

A family fixes the head dimension (heads = d_model / head_dim) and prefers a depth of
d_model / aspect_ratio layers, never fewer than `min_layers`. Its members are the widths that are
multiples of the head dimension with at least `min_heads` heads, each at depths from half to twice the
preferred one. Parameter counts include the embeddings (the Chinchilla convention), so the vocabulary
matters; each pre-training family counts its own (scaling/model/sizing.py). An encoder-decoder has n_layers
blocks in each of its two stacks and the depth rules apply to the two together (`stacks`).

Two rules draw sizes from it:
- `shape_for_params`: one run's `model.n_params` gets the member within 10% of the target whose depth
  is nearest the preferred one; a target no member reaches is an error naming the nearest sizes.
- `ladder`: the rungs of IsoFLOP grids and sweeps. Rung k targets N_0 * spacing^k (N_0 the smallest
  member), one geometric sequence shared by every budget, so budgets reuse shapes (one compilation per
  shape) and neighbours differ by a steady ratio. The rungs are chosen together (dynamic programming)
  so that width and depth never decrease from one rung to the next, each within 10% of its target,
  with depths as near the preferred ones as that allows.

Small models want a lower aspect ratio than the GPT-2/3 family's ~64-128: Kaplan et al. (2020, Fig. 5)
found loss nearly flat over a wide band of shapes, and at tens of thousands of parameters a two-layer
model at d_model / n_layers = 32 keeps the smallest members at two layers while four-channel heads keep
the width step (one head) fine enough for a sqrt(2) ladder to stay within 10% of its targets.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from scaling.config import ModelConfig
from scaling.errors import ConfigError
from scaling.model.objectives import ENCODER_DECODER
from scaling.model.sizing import param_count

SIZE_TOLERANCE = 0.10  # a shape serves a target within 10% of it
MAX_WIDTH_STEPS = 4096  # a bound on the search: widths up to 4096 heads
OPTION_BAND = 1.5  # shapes a ladder rung may take: within this factor of its target (beyond 10%, at a cost)
LOOKAHEAD = 4  # rungs beyond the current one that the choice of its shape looks at
MAX_OPTIONS = 64  # members considered per rung: the cheapest ones
# A rung's size error weighs this much against its depth's distance from the preferred depth (both
# in log units): enough that neighbouring rungs keep a steady ratio, not so much that depth zigzags.
SIZE_WEIGHT = 3.0


@dataclass(frozen=True, order=True)
class Shape:
    """One member of the family, ordered by parameter count."""

    params: int
    d_model: int
    n_layers: int

    def describe(self) -> str:
        return f"{self.params:,} (d_model {self.d_model}, {self.n_layers} layers)"


def shaped(cfg: ModelConfig, d_model: int, n_layers: int) -> ModelConfig:
    """`cfg` with this shape of its family (heads of `head_dim` channels, no parameter target left)."""
    return dataclasses.replace(cfg, d_model=d_model, n_layers=n_layers, n_heads=d_model // cfg.head_dim, n_params=None)


def stacks(cfg: ModelConfig) -> int:
    """Stacks of n_layers blocks each: two in an encoder-decoder. The depth rules apply to the stacks together,
    so the encoder-decoder of a rung is as deep as the decoder along a token's path and holds as many parameters:
    T5's parameter-matched variant of L/2 + L/2 layers (Raffel et al. 2020, section 3.2.2, table 2)."""
    return 2 if cfg.family == ENCODER_DECODER else 1


def preferred_layers(cfg: ModelConfig, d_model: int) -> float:
    """The depth (n_layers) the family prefers at this width: d_model / aspect_ratio, never below the floor,
    shared between the stacks."""
    return max(cfg.min_layers, d_model / cfg.aspect_ratio) / stacks(cfg)


def depths(cfg: ModelConfig, d_model: int) -> range:
    """Depths the family allows at a width: half to twice the preferred one, never below the floor."""
    preferred = preferred_layers(cfg, d_model)
    floor = math.ceil(cfg.min_layers / stacks(cfg))
    return range(max(floor, math.ceil(preferred / 2)), math.floor(2 * preferred) + 1)


def members(cfg: ModelConfig, vocab_size: int, low: float, high: float) -> list[Shape]:
    """Every member with low <= parameters <= high, sorted by size.

    The count is affine in depth, N(d, L) = N(d, 0) + L * N_layer(d), so each width costs two calls of
    `param_count` and yields its depths in the window directly (no search over the whole lattice)."""
    shapes: list[Shape] = []
    for heads in range(cfg.min_heads, MAX_WIDTH_STEPS + 1):
        d = heads * cfg.head_dim
        base = param_count(shaped(cfg, d, 0), vocab_size).total
        per_layer = param_count(shaped(cfg, d, 1), vocab_size).total - base
        allowed = depths(cfg, d)
        if base + allowed.start * per_layer > high:
            break
        first = max(allowed.start, math.ceil((low - base) / per_layer))
        last = min(allowed.stop - 1, math.floor((high - base) / per_layer))
        shapes += [Shape(base + n_layers * per_layer, d, n_layers) for n_layers in range(first, last + 1)]
    return sorted(shapes)


def smallest(cfg: ModelConfig, vocab_size: int) -> Shape:
    """The family's smallest member: `min_heads` heads at the shallowest depth allowed there."""
    d = cfg.min_heads * cfg.head_dim
    n_layers = depths(cfg, d).start
    return Shape(param_count(shaped(cfg, d, n_layers), vocab_size).total, d, n_layers)


def depth_cost(shape: Shape, cfg: ModelConfig) -> float:
    """How far a member's depth is from the depth its family prefers at its width (log ratio)."""
    return abs(math.log(shape.n_layers / preferred_layers(cfg, shape.d_model)))


def size_error(shape: Shape, target: float) -> float:
    return abs(shape.params / target - 1.0)


def shape_for_params(cfg: ModelConfig, vocab_size: int, target: float) -> ModelConfig:
    """The member for one run's parameter target; ConfigError naming the nearest sizes if none is within 10%."""
    near = members(cfg, vocab_size, target * (1 - SIZE_TOLERANCE), target * (1 + SIZE_TOLERANCE))
    if not near:
        below = max(members(cfg, vocab_size, target / 4, target), default=None)
        above = min(members(cfg, vocab_size, target, target * 4), default=smallest(cfg, vocab_size))
        nearest = " and ".join(s.describe() for s in (below, above) if s is not None)
        raise ConfigError(
            "model.n_params",
            f"no shape of the family is within 10% of {target:,.0f} parameters",
            f"the nearest reachable sizes are {nearest}",
        )
    best = min(near, key=lambda s: (depth_cost(s, cfg), s.params))
    return shaped(cfg, best.d_model, best.n_layers)


@dataclass(frozen=True)
class Rung:
    """Rung k of a ladder: its target size N_0 * spacing^k and the member that serves it."""

    index: int
    target: float
    shape: Shape


def ladder(cfg: ModelConfig, vocab_size: int, spacing: float, top: float) -> list[Rung]:
    """The family's geometric ladder from its smallest member up to `top` parameters (module docstring).

    Rungs are chosen one at a time, each as the first step of the cheapest monotone path over the next
    LOOKAHEAD rungs (dynamic programming over that window), so a rung never depends on how far the
    ladder is asked to reach: every budget and every run sees the same rungs. A rung may take any member
    within a factor OPTION_BAND of its target; members beyond the 10% tolerance cost so much that they
    are taken only where no monotone choice lies within it (tests check the shipped families never do)."""
    n0 = smallest(cfg, vocab_size).params
    count = max(1, math.ceil(math.log(max(top, n0) / n0) / math.log(spacing) + 1e-9) + 1)
    targets = [n0 * spacing**k for k in range(count + LOOKAHEAD)]
    options = [
        _Options(_cheapest(members(cfg, vocab_size, t / OPTION_BAND, t * OPTION_BAND), t, cfg), t, cfg) for t in targets
    ]
    follows = [_follows(a, b) for a, b in zip(options, options[1:])]
    rungs: list[Rung] = []
    chosen = None
    for k in range(count):
        start = (
            options[k].cost if chosen is None else np.where(_follows_one(options[k], chosen), options[k].cost, np.inf)
        )
        chosen = _first_step(start, follows[k : k + LOOKAHEAD], options[k + 1 : k + LOOKAHEAD + 1])
        rungs.append(Rung(k, targets[k], options[k].shapes[chosen]))
        chosen = options[k].shapes[chosen]
    return rungs


@dataclass(frozen=True)
class _Options:
    """The members a rung may take, as arrays, with each one's cost at this rung's target."""

    shapes: list[Shape]
    params: np.ndarray
    d_model: np.ndarray
    n_layers: np.ndarray
    cost: np.ndarray

    def __init__(self, shapes: list[Shape], target: float, cfg: ModelConfig):
        object.__setattr__(self, "shapes", shapes)
        for name in ("params", "d_model", "n_layers"):
            object.__setattr__(self, name, np.array([getattr(s, name) for s in shapes], dtype=np.float64))
        object.__setattr__(self, "cost", np.array([_cost(s, target, cfg) for s in shapes]))


def _cheapest(shapes: list[Shape], target: float, cfg: ModelConfig) -> list[Shape]:
    """The MAX_OPTIONS members cheapest at this target (large families have thousands near each size)."""
    return sorted(sorted(shapes, key=lambda s: _cost(s, target, cfg))[:MAX_OPTIONS])


def _follows(a: _Options, b: _Options) -> np.ndarray:
    """(len(a), len(b)) booleans: may option j of the next rung follow option i of this one?"""
    return (
        (a.params[:, None] < b.params[None, :])
        & (a.d_model[:, None] <= b.d_model[None, :])
        & (a.n_layers[:, None] <= b.n_layers[None, :])
    )


def _follows_one(options: _Options, previous: Shape) -> np.ndarray:
    return (
        (previous.params < options.params)
        & (previous.d_model <= options.d_model)
        & (previous.n_layers <= options.n_layers)
    )


def _first_step(start: np.ndarray, follows: list[np.ndarray], later: list[_Options]) -> int:
    """Index (into this rung's options) of the first step of the cheapest monotone path over the window."""
    cost, first = start, np.arange(len(start))
    for allowed, options in zip(follows, later):
        through = np.where(allowed, cost[:, None], np.inf)  # (previous option, next option)
        best = through.argmin(axis=0)
        cost = through[best, np.arange(len(best))] + options.cost
        first = first[best]
    return int(first[int(np.argmin(cost))])


def _cost(shape: Shape, target: float, cfg: ModelConfig) -> float:
    """Depth cost plus SIZE_WEIGHT x the log size error (so the rungs' ratio stays steady), plus a large
    cost per unit of size error beyond the tolerance."""
    size = SIZE_WEIGHT * abs(math.log(shape.params / target))
    return depth_cost(shape, cfg) + size + 100.0 * max(0.0, size_error(shape, target) - SIZE_TOLERANCE)


def nearest_rung(rungs: list[Rung], n_params: float) -> Rung:
    """The rung whose target is nearest `n_params` in log size."""
    return min(rungs, key=lambda r: abs(math.log(r.target / n_params)))
