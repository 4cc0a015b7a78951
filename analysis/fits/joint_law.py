"""Several variants' runs fitted as one law: L_v(N, D) = E + A_v/N^alpha_v + B_v/D^beta_v.

Each variant (a normalisation, an MLP, a data mix) keeps its own A, B, alpha and beta; the irreducible loss E
is shared, as in OLMo's ladder comparisons (Bhagia et al. 2024), unless freed (`shared_e=False`: one E per
variant). Sharing E says "the variants differ in how fast they learn, not in the entropy of the text", and it
is what lets a short ladder tell a slope from an offset: with a free E each variant's E trades off against its
exponents.

The fit is approach 3's (Hoffmann et al. 2022, section 3.3): the Huber loss of log L summed over runs and
Levenberg-Marquardt from variable-projection starts (huber.py, approach3.fit_law), here in one set of
coordinates for all variants, so the shared E is fitted to every run at once. `JointChinchilla` has what
those functions read of a law: name, bounds, log_predict, grid_starts and full_fit_starts.
"""

from dataclasses import dataclass

import numpy as np

from analysis.failures import FitError
from analysis.fits.approach3 import FULL_FIT_STARTS, LawFit, fit_law, refit
from analysis.fits.huber import Objective
from analysis.fits.laws import LAWS, law_data

CHINCHILLA = LAWS["chinchilla"]
# The joint fit keeps Besiroglu et al.'s delta = 1e-3 (`--loss epoch`): the comparison's interval coverage
# (benchmarks/RESULTS.md, compare_coverage.py) was measured under it. Approach 3's default, delta relative to
# the residuals (huber.py), would need that coverage measured again before the comparison could use it.
JOINT_OBJECTIVE = Objective("epoch")
# Per variant: log A (centred), log B (centred), alpha, beta.
BLOCK = ("A", "B", "alpha", "beta")


@dataclass(frozen=True)
class JointData:
    """Every variant's runs in one centred table: log N and log D about their pooled means, log L, and the
    index of each run's variant."""

    u: np.ndarray
    v: np.ndarray
    log_loss: np.ndarray
    variant: np.ndarray
    n_variants: int
    shared_e: bool
    centre_n: float
    centre_d: float

    @property
    def n_e(self) -> int:
        return 1 if self.shared_e else self.n_variants


def joint_data(N: np.ndarray, D: np.ndarray, loss: np.ndarray, variant: np.ndarray, shared_e: bool) -> JointData:
    """Centre the pooled runs; `variant` holds 0 for the reference and 1, 2, ... for the others."""
    pooled = law_data(np.asarray(N, float), np.asarray(D, float), np.asarray(loss, float))
    variant = np.asarray(variant, int)
    return JointData(
        pooled.u, pooled.v, pooled.log_loss, variant, int(variant.max()) + 1, shared_e, pooled.centre_n, pooled.centre_d
    )


class JointChinchilla:
    """theta = (log E, or one log E per variant; then per variant log A c., log B c., alpha, beta)."""

    name = "joint chinchilla"
    # grid_starts already joins each variant's best FULL_FIT_STARTS starts, so fit_law polishes all of them.
    full_fit_starts = FULL_FIT_STARTS

    def _columns(self, data: JointData) -> tuple[np.ndarray, ...]:
        """The theta column of each run's log E, log A, log B, alpha and beta."""
        e = np.zeros_like(data.variant) if data.shared_e else data.variant
        block = data.n_e + len(BLOCK) * data.variant
        return e, block, block + 1, block + 2, block + 3

    def bounds(self, data: JointData) -> tuple[np.ndarray, np.ndarray]:
        low, high = CHINCHILLA.bounds(data)  # log A, log B, log E, alpha, beta
        lower = np.concatenate([np.full(data.n_e, low[2]), np.tile(low[[0, 1, 3, 4]], data.n_variants)])
        upper = np.concatenate([np.full(data.n_e, high[2]), np.tile(high[[0, 1, 3, 4]], data.n_variants)])
        return lower, upper

    def log_predict(self, theta: np.ndarray, data: JointData) -> tuple[np.ndarray, np.ndarray]:
        """log L (K, n) and its Jacobian (K, n, P) for K rows of theta."""
        e_col, a_col, b_col, alpha_col, beta_col = self._columns(data)
        z = np.stack(
            [
                theta[:, a_col] - theta[:, alpha_col] * data.u,
                theta[:, b_col] - theta[:, beta_col] * data.v,
                theta[:, e_col],
            ]
        )
        top = z.max(axis=0)
        log_l = top + np.log(np.exp(z - top).sum(axis=0))
        s_n, s_d, s_e = np.exp(z - log_l)  # each term's share of L
        jac = np.zeros((*log_l.shape, theta.shape[1]))
        runs = np.arange(data.u.size)
        for column, value in (
            (e_col, s_e),
            (a_col, s_n),
            (b_col, s_d),
            (alpha_col, -s_n * data.u),
            (beta_col, -s_d * data.v),
        ):
            jac[:, runs, column] = value
        return log_l, jac

    def grid_starts(self, data: JointData, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The k-th best variable-projection start of each variant's own Chinchilla fit, joined; a shared
        log E starts at the variants' mean. Scores add the variants' scores."""
        starts, scores = [], []
        for index in range(data.n_variants):
            mine = data.variant == index
            if mine.sum() < 3:
                raise FitError(f"variant {index} has {int(mine.sum())} runs; a joint fit needs at least 3 per variant")
            own = law_data(
                np.exp(data.u[mine] + data.centre_n), np.exp(data.v[mine] + data.centre_d), np.exp(data.log_loss[mine])
            )
            theta, score = CHINCHILLA.grid_starts(own, count[mine])
            best = np.argsort(score, kind="stable")[:FULL_FIT_STARTS]
            p = CHINCHILLA.named(theta[best], own)
            starts.append(
                np.column_stack(
                    [
                        np.log(p["E"]),
                        np.log(p["A"]) - p["alpha"] * data.centre_n,
                        np.log(p["B"]) - p["beta"] * data.centre_d,
                        p["alpha"],
                        p["beta"],
                    ]
                )
            )
            scores.append(score[best])
        log_e = np.column_stack([s[:, 0] for s in starts])
        e_part = log_e.mean(axis=1, keepdims=True) if data.shared_e else log_e
        theta = np.column_stack([e_part, *(s[:, 1:] for s in starts)])
        return theta, np.sum(scores, axis=0)

    def named(self, theta: np.ndarray, data: JointData) -> list[dict[str, np.ndarray]]:
        """Each variant's E, A, B, alpha and beta, broadcasting over leading axes of theta."""
        out = []
        for index in range(data.n_variants):
            e = theta[..., 0 if data.shared_e else index]
            block = data.n_e + len(BLOCK) * index
            alpha, beta = theta[..., block + 2], theta[..., block + 3]
            out.append(
                {
                    "E": np.exp(e),
                    "A": np.exp(theta[..., block] + alpha * data.centre_n),
                    "B": np.exp(theta[..., block + 1] + beta * data.centre_d),
                    "alpha": alpha,
                    "beta": beta,
                }
            )
        return out


JOINT = JointChinchilla()


def fit_joint(data: JointData) -> LawFit:
    """The joint fit on all runs, each counted once."""
    return fit_law(JOINT, data, objective=JOINT_OBJECTIVE)


def refit_joint(fit: LawFit, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Theta (R, P) and convergence (R,) refitted to each row of run counts (a bootstrap resample)."""
    return refit(fit, counts)
