"""Chinchilla's law and the two laws built on it: tied (one exponent) and data-constrained (repeated data)."""

from collections.abc import Mapping

import numpy as np

from analysis.failures import FitError
from analysis.fits.laws.base import EXPONENT_BOUNDS, EXPONENT_GRID, Law, LawData, softmax_shares, variable_projection
from analysis.fits.lossmodel import allocation_coefficient, allocation_exponents, compute_optimal

# Muennighoff et al. (2023) fitted R*_D = 15.4; the starts span the plausible range around it.
R_STAR_STARTS = np.array([1.0, 4.0, 15.4, 60.0])
LOG_R_STAR_BOUNDS = (np.log(0.05), np.log(1e4))


class Chinchilla(Law):
    """L = E + A/N^alpha + B/D^beta; theta = (log A centred, log B centred, log E, alpha, beta)."""

    name = "chinchilla"
    formula = "L = E + A/N^alpha + B/D^beta"
    citation = "Hoffmann et al. 2022, eq. 2"
    theta_names = ("log A (centred)", "log B (centred)", "log E", "alpha", "beta")
    theta_keys = ("A", "B", "E", "alpha", "beta")
    scale_names = ("E", "A", "B")

    def bounds(self, data):
        low, high = self._log_scale_bounds(data, 3)
        return np.concatenate([low, [EXPONENT_BOUNDS[0]] * 2]), np.concatenate([high, [EXPONENT_BOUNDS[1]] * 2])

    def _v(self, theta: np.ndarray, data: LawData) -> tuple[np.ndarray, np.ndarray | None]:
        """The centred log data term, and its derivative in the last coordinate (None: plain data has none)."""
        return np.broadcast_to(data.v, (len(theta), data.v.size)), None

    def log_predict(self, theta, data):
        a_c, b_c, e, alpha, beta = (column[:, None] for column in theta.T[:5])
        v, dv = self._v(theta, data)
        log_l, (s_n, s_d, s_e) = softmax_shares(a_c - alpha * data.u, b_c - beta * v, e)
        columns = [s_n, s_d, np.broadcast_to(s_e, s_n.shape), -s_n * data.u, -s_d * v]
        if dv is not None:  # data_constrained: log R* moves the effective data
            columns.append(-s_d * beta * dv)
        return log_l, np.stack(columns, axis=-1)

    def grid_starts(self, data, count):
        return self._grid(data, count, data.v)

    def _grid(self, data: LawData, count: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Variable projection over (alpha, beta): E, A, B solve a weighted linear least-squares problem."""
        alpha, beta = (g.ravel() for g in np.meshgrid(EXPONENT_GRID, EXPONENT_GRID, indexing="ij"))
        return self._project(data, count, alpha, beta, v)

    def _project(self, data, count, alpha, beta, v):
        basis = np.stack(
            [np.ones((alpha.size, data.u.size)), np.exp(-alpha[:, None] * data.u), np.exp(-beta[:, None] * v)], axis=-1
        )
        # Relative residuals (fit - L)/L approximate log-space ones, so rows are weighted by 1/L.
        loss = np.exp(data.log_loss)
        coef, score = variable_projection(basis, loss, 1.0 / loss, count)
        log_coef = np.log(np.maximum(coef, np.exp(self.bounds(data)[0][0])))
        return np.column_stack([log_coef[:, 1], log_coef[:, 2], log_coef[:, 0], alpha, beta]), score

    def named(self, theta, data):
        a_c, b_c, e, alpha, beta = (theta[..., i] for i in range(5))
        return {
            "E": np.exp(e),
            "A": np.exp(a_c + alpha * data.centre_n),
            "B": np.exp(b_c + beta * data.centre_d),
            "alpha": alpha,
            "beta": beta,
        }

    def loss(self, params, N, D, epochs=1.0):
        return params["E"] + params["A"] / np.power(N, params["alpha"]) + params["B"] / np.power(D, params["beta"])

    def terms(self, params, N, D, epochs=1.0):
        return {
            "the N term A/N^alpha": params["A"] / np.power(N, params["alpha"]),
            "the D term B/D^beta": params["B"] / np.power(D, params["beta"]),
        }

    def allocation(self, params):
        a, b = allocation_exponents(params["alpha"], params["beta"])
        return {"a": a, "b": b, "G": allocation_coefficient(params["A"], params["B"], params["alpha"], params["beta"])}

    def frontier(self, params, C):
        return compute_optimal(C, *(params[k] for k in ("E", "A", "B", "alpha", "beta")))


class Tied(Chinchilla):
    """L = E + A/N^alpha + B/D^alpha; theta = (log A centred, log B centred, log E, alpha)."""

    name = "tied"
    formula = "L = E + A/N^alpha + B/D^alpha"
    citation = "Gadre et al. 2024, eq. 4"
    theta_names = ("log A (centred)", "log B (centred)", "log E", "alpha")
    theta_keys = ("A", "B", "E", "alpha")
    checked_keys = ("alpha",)  # a = b = 1/2 by construction
    fixed_allocation = {"a": 0.5, "b": 0.5}

    def bounds(self, data):
        low, high = super().bounds(data)
        return low[:4], high[:4]

    def log_predict(self, theta, data):
        log_l, jac = super().log_predict(np.column_stack([theta, theta[:, 3]]), data)
        return log_l, np.concatenate([jac[..., :3], jac[..., 3:4] + jac[..., 4:5]], axis=-1)

    def grid_starts(self, data, count):
        theta, score = self._project(data, count, EXPONENT_GRID, EXPONENT_GRID, data.v)
        return theta[:, :4], score

    def named(self, theta, data):
        params = super().named(np.concatenate([theta, theta[..., 3:4]], axis=-1), data)
        del params["beta"]
        return params

    def _both(self, params: Mapping) -> dict:
        return {**params, "beta": params["alpha"]}

    def loss(self, params, N, D, epochs=1.0):
        return super().loss(self._both(params), N, D)

    def terms(self, params, N, D, epochs=1.0):
        return {
            "the N term A/N^alpha": params["A"] / np.power(N, params["alpha"]),
            "the D term B/D^alpha": params["B"] / np.power(D, params["alpha"]),
        }

    def allocation(self, params):
        return super().allocation(self._both(params))

    def frontier(self, params, C):
        return super().frontier(self._both(params), C)


class DataConstrained(Chinchilla):
    """Chinchilla on effective data D'; theta = (log A c., log B c., log E, alpha, beta, log R*)."""

    name = "data_constrained"
    formula = "L = E + A/N^alpha + B/D'^beta, D' = U (1 + R* (1 - exp(-R/R*))), U = D/epochs, R = epochs - 1"
    citation = "Muennighoff et al. 2023, eq. 5"
    theta_names = Chinchilla.theta_names + ("log R*",)
    theta_keys = Chinchilla.theta_keys + ("R_star",)
    frontier_note = "the frontier assumes fresh data (one epoch), where D' = D"

    def bounds(self, data):
        low, high = super().bounds(data)
        return np.append(low, LOG_R_STAR_BOUNDS[0]), np.append(high, LOG_R_STAR_BOUNDS[1])

    def check_data(self, data):
        if not (data.repeats > 0).any():
            raise FitError(
                "law data_constrained needs runs that repeated their data (epochs > 1); every run here "
                "saw each token once: pass --epochs-col NAME, or use --law chinchilla"
            )

    def _v(self, theta, data):
        r_star = np.exp(theta[:, 5:6])
        fresh = 1.0 - np.exp(-data.repeats / r_star)
        gain = 1.0 + r_star * fresh
        d_gain = r_star * (fresh - data.repeats / r_star * np.exp(-data.repeats / r_star)) / gain
        return data.v - np.log1p(data.repeats) + np.log(gain), d_gain

    def grid_starts(self, data, count):
        thetas, scores = [], []
        for r_star in R_STAR_STARTS:
            theta = np.full((1, 6), np.log(r_star))
            theta_g, score = self._grid(data, count, self._v(theta, data)[0][0])
            thetas.append(np.column_stack([theta_g, np.full(len(theta_g), np.log(r_star))]))
            scores.append(score)
        return np.concatenate(thetas), np.concatenate(scores)

    def named(self, theta, data):
        return {**super().named(theta[..., :5], data), "R_star": np.exp(theta[..., 5])}

    def effective_data(self, params: Mapping, D, epochs) -> np.ndarray:
        """D' = U (1 + R* (1 - exp(-R/R*))) with U = D/epochs and R = epochs - 1."""
        epochs = np.maximum(np.asarray(epochs, float), 1.0)
        repeats, r_star = epochs - 1.0, params["R_star"]
        return np.asarray(D, float) / epochs * (1.0 + r_star * (1.0 - np.exp(-repeats / r_star)))

    def loss(self, params, N, D, epochs=1.0):
        return super().loss(params, N, self.effective_data(params, D, epochs))

    def terms(self, params, N, D, epochs=1.0):
        return super().terms(params, N, self.effective_data(params, D, epochs))
