"""Kaplan et al.'s law: no irreducible term, the data term inside the power."""

from collections.abc import Mapping

import numpy as np

from analysis.fits.laws.base import LOG_SCALE_HEADROOM, Law, softmax_shares, variable_projection


class Kaplan(Law):
    """L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D; theta = (log of the N term c., log D_c c., p, alpha_D).

    With p = alpha_N/alpha_D and m = p log(N_c/N0) the log of the N term at the centre N0, log L =
    alpha_D lse(m - p u, d - v): the form every other law here shares, a log-sum-exp of linear pieces.
    """

    name = "kaplan"
    formula = "L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D"
    citation = "Kaplan et al. 2020, eq. 1.5"
    theta_names = ("log N term (centred)", "log D_c (centred)", "alpha_N/alpha_D", "alpha_D")
    theta_keys = ("N_c", "D_c", "alpha_N", "alpha_D")
    scale_names = ("N_c", "D_c")
    RATIO_GRID = np.geomspace(0.05, 5.0, 20)
    ALPHA_D_GRID = np.geomspace(0.02, 2.0, 20)
    ALPHA_D_BOUNDS = (0.01, 5.0)
    RATIO_BOUNDS = (0.01, 20.0)

    def bounds(self, data):
        # log L / alpha_D is the log of the bracket, so its terms reach log(max L) / (smallest alpha_D).
        high = float(data.log_loss.max()) / self.ALPHA_D_BOUNDS[0] + LOG_SCALE_HEADROOM
        low = -high
        return (
            np.array([low, low, self.RATIO_BOUNDS[0], self.ALPHA_D_BOUNDS[0]]),
            np.array([high, high, self.RATIO_BOUNDS[1], self.ALPHA_D_BOUNDS[1]]),
        )

    def log_predict(self, theta, data):
        m, d, ratio, alpha_d = (column[:, None] for column in theta.T)
        bracket, (s_n, s_d) = softmax_shares(m - ratio * data.u, d - data.v)
        jac = np.stack([alpha_d * s_n, alpha_d * s_d, -alpha_d * s_n * data.u, bracket], axis=-1)
        return alpha_d * bracket, jac

    def grid_starts(self, data, count):
        """Variable projection: for fixed (p, alpha_D), L^(1/alpha_D) = c_N e^(-p u) + c_D e^(-v) is linear."""
        ratio, alpha_d = (g.ravel() for g in np.meshgrid(self.RATIO_GRID, self.ALPHA_D_GRID, indexing="ij"))
        target = np.exp(data.log_loss[None, :] / alpha_d[:, None])
        basis = np.stack([np.exp(-ratio[:, None] * data.u), np.broadcast_to(np.exp(-data.v), target.shape)], axis=-1)
        # A relative residual in L^(1/alpha_D) is 1/alpha_D times the relative residual in L.
        coef, score = variable_projection(basis, target, 1.0 / target, count, scale=alpha_d**2)
        log_coef = np.log(np.maximum(coef, 1e-300))
        return np.column_stack([log_coef[:, 0], log_coef[:, 1], ratio, alpha_d]), score

    def named(self, theta, data):
        m, d, ratio, alpha_d = (theta[..., i] for i in range(4))
        return {
            "N_c": np.exp(m / ratio + data.centre_n),
            "D_c": np.exp(d + data.centre_d),
            "alpha_N": ratio * alpha_d,
            "alpha_D": alpha_d,
        }

    def _pieces(self, params: Mapping, N, D) -> tuple[np.ndarray, np.ndarray]:
        ratio = params["alpha_N"] / params["alpha_D"]
        return np.power(params["N_c"] / np.asarray(N, float), ratio), params["D_c"] / np.asarray(D, float)

    def loss(self, params, N, D, epochs=1.0):
        n_piece, d_piece = self._pieces(params, N, D)
        return np.power(n_piece + d_piece, params["alpha_D"])

    def terms(self, params, N, D, epochs=1.0):
        """Each piece's share of the bracket, times the loss: how much of L it carries at each run."""
        n_piece, d_piece = self._pieces(params, N, D)
        loss = np.power(n_piece + d_piece, params["alpha_D"])
        return {
            "the N term (N_c/N)^(alpha_N/alpha_D)": loss * n_piece / (n_piece + d_piece),
            "the D term D_c/D": loss * d_piece / (n_piece + d_piece),
        }

    def allocation(self, params):
        """Minimising the bracket along 6ND = C: N_opt = (p N_c^p (C/6) / D_c)^(1/(p+1)), so a = 1/(p+1)."""
        ratio = np.divide(params["alpha_N"], params["alpha_D"])
        a = 1.0 / (ratio + 1.0)
        # In logs: N_c^p overflows for the large N_c and p a poorly identified fit can reach.
        log_g = a * (np.log(ratio) + ratio * np.log(params["N_c"]) - np.log(params["D_c"]))
        return {"a": a, "b": 1.0 - a, "G": np.exp(log_g)}
