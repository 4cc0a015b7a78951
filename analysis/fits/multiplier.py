"""Two loss frontiers compared: the effective compute multiplier, the exponent difference, and the crossover.

A Chinchilla law's compute-optimal frontier is itself a power law above its irreducible loss:
L*(C) = E + K (C/6)^-gamma, with gamma = alpha beta / (alpha + beta) and K = A G^-alpha + B G^beta, where
N_opt = G (C/6)^a (Hoffmann et al. 2022, eq. 4; lossmodel.compute_optimal). For a variant v against a
reference r:

- the effective compute multiplier at compute C is the factor of compute the reference needs to reach the
  variant's loss: m(C) = C_r / C with L*_r(C_r) = L*_v(C), so m > 1 means the variant is better. Inverting the
  reference's frontier, m(C) = (6 / C) ((L*_v(C) - E_r) / K_r)^(-1/gamma_r); with a shared E this is
  (K_r / K_v)^(1/gamma_r) (C/6)^(gamma_v/gamma_r - 1): constant when the exponents agree, growing with C when
  the variant's is larger. Where the variant's loss lies below everything the reference can reach
  (L*_v(C) <= E_r, only with a free E) the multiplier is infinite.
- the exponent difference gamma_v - gamma_r says whether the gap grows with scale (Tay et al. 2022, "Scaling
  Laws vs Model Architectures": a variant that wins small can lose large, and only the slopes show it).
- the crossover is the compute at which the frontiers meet, found as a root in log C (the one nearest the
  runs where a free E allows two); it is infinite when they do not meet between 1e-10 and 1e60 FLOPs.

Every function broadcasts over replicate arrays shaped (R, 1) against budgets shaped (M,).
"""

from collections.abc import Mapping

import numpy as np

from analysis.fits.lossmodel import FLOPS_PER_PARAM_TOKEN, allocation_coefficient

# Where crossovers are looked for (log10 FLOPs), and the grid step of the search before bisection.
CROSSOVER_RANGE = (-10.0, 60.0)
CROSSOVER_STEP = 0.05
BISECTIONS = 50


def frontier_constants(params: Mapping) -> dict[str, np.ndarray]:
    """E, K and gamma of L*(C) = E + K (C/6)^-gamma from a Chinchilla law's E, A, B, alpha, beta."""
    A, B, alpha, beta = (np.asarray(params[k], float) for k in ("A", "B", "alpha", "beta"))
    G = allocation_coefficient(A, B, alpha, beta)  # N_opt at C/6 = 1, where D_opt = 1/G
    return {
        "E": np.asarray(params["E"], float),
        "K": A * np.power(G, -alpha) + B * np.power(G, beta),
        "gamma": alpha * beta / (alpha + beta),
    }


def frontier_loss(frontier: Mapping, C) -> np.ndarray:
    """L*(C) = E + K (C/6)^-gamma."""
    return frontier["E"] + frontier["K"] * np.power(np.asarray(C, float) / FLOPS_PER_PARAM_TOKEN, -frontier["gamma"])


def log_multiplier(reference: Mapping, variant: Mapping, C) -> np.ndarray:
    """ln m(C): how many times C the reference needs to reach the variant's loss at C (+inf: it never does)."""
    C = np.asarray(C, float)
    excess = (frontier_loss(variant, C) - reference["E"]) / reference["K"]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_needed = -np.log(excess) / reference["gamma"]
    return np.where(excess > 0, np.log(FLOPS_PER_PARAM_TOKEN / C) + log_needed, np.inf)


def exponent_difference(reference: Mapping, variant: Mapping) -> np.ndarray:
    """gamma_v - gamma_r: positive when the variant's loss falls faster with compute."""
    return np.asarray(variant["gamma"]) - np.asarray(reference["gamma"])


def crossover_log10(reference: Mapping, variant: Mapping, centre: float) -> np.ndarray:
    """log10 of the compute where the two frontiers meet, the root nearest log10 C = `centre` (+inf if none)."""
    scalar = np.ndim(reference["gamma"]) == 0
    reference, variant = ({k: np.reshape(v, (-1, 1)) for k, v in f.items()} for f in (reference, variant))
    grid = np.arange(CROSSOVER_RANGE[0], CROSSOVER_RANGE[1] + CROSSOVER_STEP / 2, CROSSOVER_STEP)
    sign = np.sign(_gap(reference, variant, grid))
    change = sign[:, :-1] * sign[:, 1:] <= 0
    distance = np.where(change, np.abs(grid[:-1] + CROSSOVER_STEP / 2 - centre), np.inf)
    pick = distance.argmin(axis=1)
    rows = np.arange(len(sign))
    low, high, sign_low = grid[pick], grid[pick + 1], sign[rows, pick]
    for _ in range(BISECTIONS):
        middle = 0.5 * (low + high)
        same = np.sign(_gap(reference, variant, middle[:, None])[:, 0]) == sign_low
        low, high = np.where(same, middle, low), np.where(same, high, middle)
    root = np.where(np.isfinite(distance[rows, pick]), 0.5 * (low + high), np.inf)
    return root[0] if scalar else root


def _gap(reference: Mapping, variant: Mapping, log10_c: np.ndarray) -> np.ndarray:
    return frontier_loss(variant, 10.0**log10_c) - frontier_loss(reference, 10.0**log10_c)
