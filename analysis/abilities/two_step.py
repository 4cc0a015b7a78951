"""Predicting a large model's task score from smaller ones in two steps (Bhagia et al. 2024, the OLMo ladder).

Step 1: the task loss (minus the right answer's mean log-likelihood per token) as a function of
parameters N and tokens D, L(N, D) = E + A/N^alpha + B/D^beta, fitted as approach 3 fits the
language-model loss (analysis/fits/approach3.py). Step 2: the discrete metric as a sigmoid of the
task loss, acc(L) = b + a / (1 + exp(k (L - L0))), which falls from b + a to the floor b as the loss
grows. Both are fitted on the smaller models only (step 1 on their checkpoints from FIRST_SHARE of
training on, as the ladder fits runs of several lengths; step 2 on all their checkpoints, as the
ladder does), then the largest model's final checkpoint is predicted and the error reported.
Pure numerics: nothing here loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from analysis.failures import FitError
from analysis.fits.approach3 import fit_law, law_by_name, prepare
from analysis.fits.lossmodel import LossParams, predict_loss

# Step 1 leaves out each small run's first checkpoints: its loss there is still the initial plateau,
# which L(N, D) (a power law in D) cannot describe. 1/8: the log-spaced schedule keeps 1/8, 1/4, 1/2, 1.
FIRST_SHARE = 1 / 8
MIN_SIGMOID_POINTS = 6


@dataclass(frozen=True)
class Sigmoid:
    """acc(L) = b + a / (1 + exp(k (L - L0))): ceiling b + a at low loss, floor b at high loss."""

    a: float
    b: float
    k: float
    L0: float

    def __call__(self, loss: np.ndarray) -> np.ndarray:
        return self.b + self.a / (1.0 + np.exp(np.clip(self.k * (np.asarray(loss) - self.L0), -50, 50)))


@dataclass(frozen=True)
class LadderPrediction:
    """The two fitted steps and the largest model's final checkpoint, predicted and measured."""

    target: str
    N: float
    D: float
    loss_params: LossParams
    sigmoid: Sigmoid
    predicted_loss: float
    actual_loss: float
    predicted_value: float
    actual_value: float
    n_step1: int
    n_step2: int

    @property
    def error(self) -> float:
        """Predicted minus measured discrete metric of the largest model."""
        return self.predicted_value - self.actual_value


def fit_sigmoid(loss: np.ndarray, value: np.ndarray) -> Sigmoid:
    """Least squares over a, b in [0, 1], k >= 0 and L0 within the observed losses' range widened by one span."""
    if loss.size < MIN_SIGMOID_POINTS:
        raise FitError(f"step 2 needs at least {MIN_SIGMOID_POINTS} checkpoints of the smaller models, got {loss.size}")
    span = max(float(np.ptp(loss)), 1e-6)
    start = [max(float(np.ptp(value)), 1e-3), float(value.min()), 4.0 / span, float(np.median(loss))]
    lower, upper = [0.0, 0.0, 0.0, loss.min() - span], [1.0, 1.0, 100.0 / span, loss.max() + span]
    start = np.clip(start, lower, upper)
    fit = least_squares(lambda p: Sigmoid(*p)(loss) - value, start, bounds=(lower, upper))
    return Sigmoid(*map(float, fit.x))


def two_step(points: pd.DataFrame) -> LadderPrediction:
    """`points`: one row per checkpoint with run, N, D, final (bool), loss (task loss), value (discrete metric).

    The run with the largest N is held out and predicted from the others."""
    target_n = points.N.max()
    small, target = points[target_n > points.N], points[(target_n == points.N) & points.final]
    if target.empty or small.N.nunique() < 3:
        raise FitError("the two-step prediction needs 3 smaller model sizes and the largest one's final checkpoint")
    late = small[FIRST_SHARE * small.groupby("run").D.transform("max") <= small.D]
    late = late[late.D > 0]
    law = law_by_name("chinchilla")
    fit = fit_law(law, prepare(law, late.N.to_numpy(float), late.D.to_numpy(float), late.loss.to_numpy(float), None))
    params = LossParams(**{key: fit.params[key] for key in ("E", "A", "B", "alpha", "beta")})
    sigmoid = fit_sigmoid(small.loss.to_numpy(float), small.value.to_numpy(float))
    row = target.iloc[0]
    predicted_loss = float(predict_loss(row.N, row.D, **params.as_dict()))
    return LadderPrediction(
        target=str(row.run),
        N=float(row.N),
        D=float(row.D),
        loss_params=params,
        sigmoid=sigmoid,
        predicted_loss=predicted_loss,
        actual_loss=float(row.loss),
        predicted_value=float(sigmoid(predicted_loss)),
        actual_value=float(row.value),
        n_step1=len(late),
        n_step2=len(small),
    )
