"""The approach-3 objective and its optimiser, for any law in analysis/fits/laws/ and many parameter rows at once.

Objective: the Huber loss between the law's log L and the observed log L, SUMMED over runs (each weighted
by how often it enters a bootstrap resample), as Besiroglu et al. (2024) fitted Hoffmann's points.
Averaging instead of summing shrinks the objective by 1/n and lets an optimiser's tolerance stop it early:
the trap that left Hoffmann's published fit short of the optimum.

Which delta (`--loss`): Besiroglu et al. chose delta = 1e-3 for Hoffmann's points, whose residuals are
a few percent; on sweeps whose residuals are near 0.5% that delta makes the Huber loss act like least
absolute deviations, which moves E and the exponents (the issue measured E 0.06-0.08 lower on real
IsoFLOP sweeps). So `huber` (the default) sets delta relative to the residuals: HUBER_C (Huber's 1.345,
95% efficiency under normal noise) times their robust scale (1.4826 x the median absolute residual of a
first fit with delta = 1e-3, which outliers do not move). `epoch` keeps delta = 1e-3 (Epoch's refit of
Hoffmann's points comes out as they published it); `lsq` is least squares (delta infinite). The choice
was measured on synthetic sweeps with and without outliers (benchmarks/RESULTS.md, "Predictions that hold").

Optimiser: Levenberg-Marquardt on the Gauss-Newton model of the Huber loss, vectorised over rows
(starts x bootstrap replicates); each step is accepted only if it lowers the objective. Bounds are
handled by an active set: a coordinate on its bound whose gradient points out of the box is held there
for the step, so the others still move with a full Gauss-Newton step instead of a clipped one. The scale
parameters are bounded in log space close enough (laws/base.py: LOG_SCALE_FLOOR) that a vanishing term reaches
its bound in a few steps rather than crawling towards minus infinity, which is what used to keep refits
at the iteration cap.
"""

from dataclasses import dataclass

import numpy as np

from analysis.fits.laws import Law, LawData

LOSSES = ("huber", "epoch", "lsq")
DEFAULT_LOSS = "huber"
EPOCH_DELTA = 1e-3  # Besiroglu et al. (2024), on log L
HUBER_C = 1.345  # delta / robust scale: Huber's constant, 95% as efficient as least squares under normal noise
MAD_TO_SD = 1.4826
# A step that improves the summed objective by less than this fraction ends that row's polish.
F_TOL = 1e-12
# Rows still moving after this many steps are reported as not converged. Nearly all rows stop within a few
# hundred; the cap only bounds the time a pathological row can take, and costs little since finished
# rows leave the batch.
MAX_STEPS = 5000
MAX_DAMPING = 1e10
OUTSIDE_WEIGHT = 0.01  # past this, no step however short improves the objective: the row is at its optimum


@dataclass(frozen=True)
class Objective:
    """Which loss approach 3 minimises (`--loss`), and for `huber` delta as a multiple of the residuals' scale."""

    kind: str = DEFAULT_LOSS
    c: float = HUBER_C


DEFAULT_OBJECTIVE = Objective()


def robust_scale(residuals: np.ndarray) -> float:
    """1.4826 x the median absolute deviation: the standard deviation of normal noise, unmoved by outliers."""
    return float(MAD_TO_SD * np.median(np.abs(residuals - np.median(residuals))))


def evaluate(
    law: Law, theta: np.ndarray, data: LawData, count: np.ndarray, target: np.ndarray, delta: float = EPOCH_DELTA
) -> tuple[np.ndarray, ...]:
    """Objective (K,), gradient (K, P) and Gauss-Newton Hessian (K, P, P) for K rows of theta, each fitted to
    its row of counts and of target log losses (K, n), under the Huber loss with `delta` (inf: least squares)."""
    log_pred, jac = law.log_predict(theta, data)
    r = log_pred - target
    psi = np.clip(r, -delta, delta)
    value = (count * psi * (r - 0.5 * psi)).sum(axis=1)
    grad = ((count * psi)[:, None, :] @ jac)[:, 0, :]
    # Gauss-Newton on the Huber loss itself: a run inside delta has curvature 1, one outside none (its loss
    # is linear there). Those outside still add OUTSIDE_WEIGHT of Huber's majoriser weight delta/|r|, so
    # the step stays defined when few runs are inside. The majoriser alone (iteratively reweighted least
    # squares) converges linearly, like L1 regression: 4x the steps on a 250-run sweep, and it stopped
    # short of the optimum by its tolerance.
    inside = np.abs(r) <= delta
    weight = count * np.where(inside, 1.0, OUTSIDE_WEIGHT * delta / np.maximum(np.abs(r), 1e-300))
    hess = jac.transpose(0, 2, 1) @ (jac * weight[..., None])
    return value, grad, hess


def _step(hess: np.ndarray, grad: np.ndarray, damping: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Damped Gauss-Newton steps; coordinates marked held do not move."""
    size = hess.shape[-1]
    diag = np.diagonal(hess, axis1=1, axis2=2) + 1e-12
    damped = hess + damping[:, None, None] * np.eye(size) * diag[:, None, :]
    free = ~held
    damped = np.where(free[:, :, None] & free[:, None, :], damped, np.eye(size))
    return np.linalg.solve(damped, -(grad * free)[..., None])[..., 0]


def polish(
    law: Law,
    theta: np.ndarray,
    data: LawData,
    count: np.ndarray,
    target: np.ndarray | None = None,
    max_steps: int | None = None,
    delta: float = EPOCH_DELTA,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levenberg-Marquardt from every row of theta (K, P) at once (at most MAX_STEPS steps unless told), each
    row fitted to its counts and target log losses (K, n; default the data's) under Huber's `delta`; returns
    (theta, objective, converged)."""
    lower, upper = law.bounds(data)
    theta = np.clip(np.array(theta, float), lower, upper)
    target = np.broadcast_to(data.log_loss if target is None else target, count.shape)
    value, grad, hess = evaluate(law, theta, data, count, target, delta)
    damping = np.full(len(theta), 1e-3)
    active = np.arange(len(theta))
    for _ in range(max_steps or MAX_STEPS):
        if active.size == 0:
            break
        th, g = theta[active], grad[active]
        held = ((th <= lower) & (g > 0)) | ((th >= upper) & (g < 0))
        trial = np.clip(th + _step(hess[active], g, damping[active], held), lower, upper)
        t_value, t_grad, t_hess = evaluate(law, trial, data, count[active], target[active], delta)
        better = t_value < value[active]
        small = value[active] - t_value <= F_TOL * value[active] + 1e-300
        moved = active[better]
        theta[moved], value[moved] = trial[better], t_value[better]
        grad[moved], hess[moved] = t_grad[better], t_hess[better]
        damping[active] = np.where(better, damping[active] * 0.3, damping[active] * 4.0)
        done = (better & small) | (damping[active] > MAX_DAMPING)
        active = active[~done]
    converged = np.ones(len(theta), dtype=bool)
    converged[active] = False
    return theta, value, converged
