"""The Chinchilla loss model L(N, D) = E + A/N^alpha + B/D^beta and the compute-optimal allocation it implies.

Every function broadcasts over numpy arrays, so the same code evaluates one fit or a whole set of
bootstrap replicates (parameters shaped (R, 1) against budgets shaped (M,)).
"""

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

# C = 6 N D: forward (2) plus backward (4) FLOPs per parameter per token, the Kaplan/Hoffmann convention.
FLOPS_PER_PARAM_TOKEN = 6.0


@dataclass(frozen=True)
class LossParams:
    """Parameters of L(N, D) = E + A/N^alpha + B/D^beta (N parameters, D tokens, L in nats/token)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def tokens_from_flops(C: ArrayLike, N: ArrayLike) -> np.ndarray:
    """D = C / (6 N): the tokens a model of N parameters sees for C training FLOPs."""
    return np.asarray(C, dtype=float) / (FLOPS_PER_PARAM_TOKEN * np.asarray(N, dtype=float))


def predict_loss(N: ArrayLike, D: ArrayLike, E, A, B, alpha, beta) -> np.ndarray:
    """L(N, D) = E + A/N^alpha + B/D^beta."""
    return E + A / np.power(N, alpha) + B / np.power(D, beta)


def allocation_exponents(alpha, beta) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with N_opt ~ C^a and D_opt ~ C^b: a = beta/(alpha+beta), b = alpha/(alpha+beta)."""
    total = np.add(alpha, beta)
    return np.divide(beta, total), np.divide(alpha, total)


def allocation_coefficient(A, B, alpha, beta) -> np.ndarray:
    """G = (alpha A / (beta B))^(1/(alpha+beta)), so that N_opt = G (C/6)^a (Hoffmann et al. 2022, eq. 4)."""
    return np.power(np.multiply(alpha, A) / np.multiply(beta, B), 1.0 / np.add(alpha, beta))


def compute_optimal(C: ArrayLike, E, A, B, alpha, beta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N_opt, D_opt, L_opt) minimising L(N, D) subject to 6 N D = C."""
    a, _ = allocation_exponents(alpha, beta)
    n_opt = allocation_coefficient(A, B, alpha, beta) * np.power(np.asarray(C, float) / FLOPS_PER_PARAM_TOKEN, a)
    d_opt = tokens_from_flops(C, n_opt)
    return n_opt, d_opt, predict_loss(n_opt, d_opt, E, A, B, alpha, beta)
