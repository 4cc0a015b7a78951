"""Farseer (Li et al. 2025): the data term's coefficient and exponent both vary with N."""

from collections.abc import Mapping

import numpy as np

from analysis.failures import FitError
from analysis.fits.laws.base import EXPONENT_GRID, Law, LawData, as_column, variable_projection
from analysis.fits.laws.chinchilla import Chinchilla
from analysis.fits.lossmodel import tokens_from_flops

# Some of Farseer's starts come from the Chinchilla law's grid on the same runs.
CHINCHILLA = Chinchilla()


class Farseer(Law):
    """L = exp(a3 N^gamma + b3) + exp(a2 N^beta + b2) D^-exp(a1 N^alpha + b1).

    theta holds the same nine numbers with N measured from the runs' geometric mean (n = N / N0), which
    only rescales a1, a2, a3; D stays in tokens because the form is not invariant to D's unit. The
    compute-optimal allocation has no closed form: the frontier minimises L along 6ND = C numerically,
    and a, b and G are its local slope and coefficient at C_ref, the compute of the runs' centre.
    """

    name = "farseer"
    formula = "L = exp(a3 N^gamma + b3) + exp(a2 N^beta + b2) D^-exp(a1 N^alpha + b1)"
    citation = "Li et al. 2025 (Farseer), arXiv:2506.10972"
    theta_names = ("a1 (N centred)", "b1", "alpha", "a2 (N centred)", "b2", "beta", "a3 (N centred)", "b3", "gamma")
    theta_keys = ("a1", "b1", "alpha", "a2", "b2", "beta", "a3", "b3", "gamma")
    scale_names = ()
    full_fit_starts = 5  # the per-size start and four from the Chinchilla grid's best point
    MIN_SIZES = 4  # each N-dependent part has three parameters: four sizes leave one to check them by
    # Fewer runs let the nine parameters chase noise: on 4 x 5 synthetic sweeps a rollout of one step then
    # sometimes chose Farseer over the true law, and its frontier was off by two decades in N. Counted in
    # distinct (N, D) points: seeds of one point are replicates, which pin that point's loss but not the
    # surface's shape (the demo at four seeds has 56 runs but 14 points when it rolls out to its last budget).
    RUNS_PER_PARAMETER = 3
    EXPONENT_BOUNDS = (-1.5, 1.5)
    COEF_BOUNDS = (-20.0, 20.0)
    EXPONENT_STARTS = (-0.3, 0.3)
    MAX_LOG_RATE = 30.0  # cap on log A(N) so exp cannot overflow on a wild step
    FRONTIER_GRID = 241
    # The frontier is searched between these tokens per parameter: the law, fitted to runs between ~1 and
    # ~1,000, can have a spurious second minimum far outside them (on a real sweep, one at D/N ~ 1e-8).
    FRONTIER_TOKENS_PER_PARAM = (1e-2, 1e5)

    def bounds(self, data):
        low_c, high_c = self.COEF_BOUNDS
        low_e, high_e = self.EXPONENT_BOUNDS
        log_d = data.v + data.centre_d
        b2_high = float(data.log_loss.max() + 5.0 * log_d.max())
        low = np.array([low_c, -10.0, low_e, low_c, -10.0, low_e, low_c, -10.0, low_e])
        high = np.array([high_c, 3.0, high_e, high_c, b2_high, high_e, high_c, 10.0, high_e])
        return low, high

    def check_data(self, data):
        sizes, points = np.unique(data.u).size, np.unique(np.stack([data.u, data.v]), axis=1).shape[1]
        if sizes < self.MIN_SIZES:
            raise FitError(
                f"law farseer needs runs at {self.MIN_SIZES} or more distinct N (its data term depends on N "
                f"through three parameters each for coefficient and exponent): got {sizes}; add sizes or use "
                "--law chinchilla"
            )
        if points < self.RUNS_PER_PARAMETER * len(self.theta_keys):
            raise FitError(
                f"law farseer needs runs at {self.RUNS_PER_PARAMETER * len(self.theta_keys)} or more distinct "
                f"(N, D) ({self.RUNS_PER_PARAMETER} per parameter; seeds of one point count once): got {points}; "
                "add sizes or budgets, or use --law chinchilla"
            )

    def log_predict(self, theta, data):
        a1, b1, alpha, a2, b2, beta, a3, b3, gamma = (column[:, None] for column in theta.T)
        x, log_d = data.u, data.v + data.centre_d
        p_alpha, p_beta, p_gamma = np.exp(alpha * x), np.exp(beta * x), np.exp(gamma * x)
        rate = np.exp(np.minimum(a1 * p_alpha + b1, self.MAX_LOG_RATE))
        z1 = a3 * p_gamma + b3
        z2 = a2 * p_beta + b2 - rate * log_d
        log_l = np.logaddexp(z1, z2)
        s1, s2 = np.exp(z1 - log_l), np.exp(z2 - log_l)
        d_rate = -s2 * log_d * rate
        columns = [
            d_rate * p_alpha,
            d_rate,
            d_rate * a1 * x * p_alpha,
            s2 * p_beta,
            s2,
            s2 * a2 * x * p_beta,
            s1 * p_gamma,
            s1,
            s1 * a3 * x * p_gamma,
        ]
        return log_l, np.stack(columns, axis=-1)

    def grid_starts(self, data, count):
        """Starts from per-size fits, as Li et al. fit the law in stages, and from the Chinchilla law's grid."""
        per_size = self._per_size_starts(data, count)
        theta, score = CHINCHILLA.grid_starts(data, count)
        best = np.argsort(score, kind="stable")[:1]
        params = CHINCHILLA.named(theta[best], data)
        starts, scores = [], []
        for i, j in enumerate(best):
            # A(N) = beta and B(N) = B to begin with; exp(a3 n^gamma + b3) fitted to E + A N^-alpha.
            gamma = -params["alpha"][i]
            target = np.log(params["E"][i] + params["A"][i] * np.exp(-params["alpha"][i] * (data.u + data.centre_n)))
            a3, b3 = _curve_in_n(data.u, target, np.array([gamma]))[0][1:3]
            for alpha in self.EXPONENT_STARTS:
                for beta in self.EXPONENT_STARTS:
                    b = [np.log(params["beta"][i]), np.log(params["B"][i])]
                    starts.append([0.0, b[0], alpha, 0.0, b[1], beta, a3, b3, gamma])
                    scores.append(score[j])
        low, high = self.bounds(data)
        theta = np.clip(np.array(per_size + starts), low, high)
        # Per-size starts rank first: they see the law's own shape, the Chinchilla ones only its average.
        return theta, np.concatenate([np.full(len(per_size), -np.inf), scores])

    def _per_size_starts(self, data: LawData, count: np.ndarray) -> list[list[float]]:
        """Fit L = E_N + B_N D^-A_N at each size with 3 or more token counts (variable projection over A_N),
        then log A_N, log B_N and log E_N each as c n^p + d across sizes: Farseer's own stages."""
        rows = []
        for x in np.unique(data.u):
            at = (data.u == x) & (count > 0)
            if np.unique(data.v[at]).size >= 3:
                fitted = _saturating_in_d(data.v[at] + data.centre_d, np.exp(data.log_loss[at]), count[at])
                if fitted is not None:
                    rows.append((x, *np.log(fitted)))
        if len(rows) < self.MIN_SIZES:
            return []
        x, log_rate, log_b, log_e = np.array(rows).T
        powers = np.linspace(*self.EXPONENT_BOUNDS, 121)
        fits = [_curve_in_n(x, y, powers) for y in (log_rate, log_b, log_e)]
        best = [f[np.argmin(f[:, 3])] for f in fits]
        return [
            [best[0][1], best[0][2], best[0][0], best[1][1], best[1][2], best[1][0], best[2][1], best[2][2], best[2][0]]
        ]

    def named(self, theta, data):
        values = {key: theta[..., i] for i, key in enumerate(self.theta_keys)}
        # n^p = (N / N0)^p: back to N in parameters by folding N0^-p into each coefficient.
        for coef, power in (("a1", "alpha"), ("a2", "beta"), ("a3", "gamma")):
            values[coef] = values[coef] * np.exp(-values[power] * data.centre_n)
        values["C_ref"] = np.broadcast_to(6.0 * np.exp(data.centre_n + data.centre_d), values["a1"].shape)
        return values

    def _parts(self, params: Mapping, N, D) -> tuple[np.ndarray, np.ndarray]:
        N, log_d = np.asarray(N, float), np.log(np.asarray(D, float))
        rate = np.exp(np.minimum(params["a1"] * N ** params["alpha"] + params["b1"], self.MAX_LOG_RATE))
        n_part = np.exp(params["a3"] * N ** params["gamma"] + params["b3"])
        return n_part, np.exp(params["a2"] * N ** params["beta"] + params["b2"] - rate * log_d)

    def loss(self, params, N, D, epochs=1.0):
        n_part, d_part = self._parts(params, N, D)
        return n_part + d_part

    def terms(self, params, N, D, epochs=1.0):
        n_part, d_part = self._parts(params, N, D)
        return {"the N term exp(a3 N^gamma + b3)": n_part, "the D term exp(a2 N^beta + b2) D^-A(N)": d_part}

    def frontier(self, params, C):
        """Minimise L along 6ND = C on a grid in log N, then by golden-section search around the best point.
        Parameters are floats or replicate columns (R, 1). A minimum at the end of the search range is
        returned there."""
        C = np.asarray(C, float)
        p = {key: np.expand_dims(np.asarray(value, float), -1) for key, value in params.items()}
        low_ratio, high_ratio = np.log(self.FRONTIER_TOKENS_PER_PARAM)
        offsets = np.linspace(-0.5 * high_ratio, -0.5 * low_ratio, self.FRONTIER_GRID)  # log N - log(C/6) / 2
        step = offsets[1] - offsets[0]
        grid = 0.5 * np.log(C / 6.0)[:, None] + offsets

        def along(log_n: np.ndarray) -> np.ndarray:
            values = self.loss(p, np.exp(log_n), C[:, None] / (6.0 * np.exp(log_n)))
            return np.where(np.isfinite(values), values, np.inf)

        with np.errstate(over="ignore", invalid="ignore"):
            values = along(grid)
            best = np.take_along_axis(np.broadcast_to(grid, values.shape), values.argmin(axis=-1)[..., None], -1)
            low, high = best - step, best + step
            ratio = (np.sqrt(5.0) - 1.0) / 2.0
            for _ in range(40):
                left, right = high - ratio * (high - low), low + ratio * (high - low)
                lower = along(left) < along(right)
                low, high = np.where(lower, low, left), np.where(lower, right, high)
        n_opt = np.exp(0.5 * (low + high)[..., 0])
        d_opt = tokens_from_flops(C, n_opt)
        return n_opt, d_opt, self.loss(params, n_opt, d_opt)

    def allocation(self, params):
        """The frontier's local exponent a = d log N_opt / d log C over the decade around C_ref, and G there."""
        c_ref = np.asarray(params["C_ref"], float)
        scalar = c_ref.ndim == 0
        column = params if scalar else as_column(params)
        c_ref = float(c_ref) if scalar else float(np.ravel(c_ref)[0])
        n_opt, _, _ = self.frontier(column, np.array([c_ref / np.sqrt(10.0), c_ref, c_ref * np.sqrt(10.0)]))
        a = (np.log(n_opt[..., 2]) - np.log(n_opt[..., 0])) / np.log(10.0)
        g = n_opt[..., 1] / np.power(c_ref / 6.0, a)
        if not scalar:
            a, g = a.reshape(np.shape(params["C_ref"])), g.reshape(np.shape(params["C_ref"]))
        return {"a": a, "b": 1.0 - a, "G": g}


def _saturating_in_d(log_d: np.ndarray, loss: np.ndarray, count: np.ndarray) -> tuple[float, ...] | None:
    """(A, B, E) of L = E + B D^-A at one size: variable projection over A on the exponent grid, refined by
    golden-section search between the best grid point's neighbours; None if no A gives E, B > 0."""

    def solve(rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        basis = np.stack([np.ones((rate.size, log_d.size)), np.exp(-rate[:, None] * log_d)], axis=-1)
        return variable_projection(basis, loss, 1.0 / loss, count)

    _, score = solve(EXPONENT_GRID)
    best = int(np.argmin(score))
    if not np.isfinite(score[best]):
        return None
    low, high = EXPONENT_GRID[max(best - 1, 0)], EXPONENT_GRID[min(best + 1, EXPONENT_GRID.size - 1)]
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(40):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if solve(np.array([left]))[1][0] < solve(np.array([right]))[1][0]:
            high = right
        else:
            low = left
    rate = 0.5 * (low + high)
    coef, score = solve(np.array([rate]))
    return (rate, coef[0, 1], coef[0, 0]) if np.isfinite(score[0]) else None


def _curve_in_n(x: np.ndarray, y: np.ndarray, powers: np.ndarray) -> np.ndarray:
    """Least squares y ~ c exp(p x) + d for each power p: rows (p, c, d, residual sum of squares)."""
    out = []
    for p in powers:
        design = np.column_stack([np.exp(p * x), np.ones_like(x)])
        (c, d), *_ = np.linalg.lstsq(design, y, rcond=None)
        out.append((p, c, d, float(np.sum((design @ [c, d] - y) ** 2))))
    return np.array(out)
