"""Approach 2: IsoFLOP profiles (Hoffmann et al. 2022, section 3.2).

For each compute budget, a profile estimator (profiles.py; `akima` by default) finds N_opt(C) along
log N; power laws N_opt = k C^a and D_opt = C/(6 N_opt) = k' C^b follow (so b = 1 - a exactly).

Intervals come from a bootstrap that includes the estimator's misfit. Each budget's "truth" in the
bootstrap world is a more flexible curve than the estimator's (a cubic in log N with 6 or more sizes,
else a parabola) through the LOCAL_SIZES sizes nearest its lowest loss, and each replicate redraws
every run's loss as that curve (or, further out, the run's own loss) x (1 + e), with e drawn from the
curves' relative residuals (leverage-corrected). Only the sizes near the minimum shape the truth and the
noise: on real profiles, whose far wings rise steeply (losses of 7-9 nats where the minimum is 3-4), a
curve through every size misfits the wings and took that misfit for noise, giving intervals 3x too wide.
The profile estimator then runs on the replicate exactly as on the data, so a window that moves, a
parabola that misses an asymmetric minimum, or an interpolant that chases noise all show in the spread
of the replicates. The replicates are then centred on the estimates (their median moved to the
estimate; bootstrap.centred): the truth curve is not the estimator, so uncentred replicates sat around
the estimator's value on the truth curve, and 4 of 45 intervals on Porian et al.'s data excluded their
own estimate. Runs are not resampled: a budget has few sizes (4-7 is usual), chosen by design, and
resampled ones often leave too few distinct sizes (on a real 3 x 5 sweep 937 of 1000 refits failed).

Noise may differ by budget: each budget's noise scale is its own residual variance shrunk towards the
pooled one (weight SHRINK_DOF), and the pooled residuals, each divided by its budget's scale, are the
shapes every budget draws from. Each minimum's standard error is the robust spread of its replicates, and
the power law weights budgets by 1 / (se^2 + tau^2), where tau^2 is the scatter of the minima about the
power law beyond what their standard errors explain (DerSimonian & Laird 1986, for a line): misfit that
differs between budgets, which replicates of each budget alone cannot show. Replicate minima get that
scatter added, so the intervals carry it too.
"""

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from analysis.failures import FitError
from analysis.fits.bootstrap import centred, centred_columns
from analysis.fits.powerlaw import fit_lines
from analysis.fits.profiles import (
    DEFAULT_PROFILE,
    OK,
    PROFILES,
    Profile,
    fit_profile,
    local_window,
    minima,
    polynomial,
)
from analysis.fits.result import ApproachResult, power_law_frontier
from analysis.fits.seeds import seed_means

MIN_BUDGETS = 3
# Without a budget column, runs are grouped by C: a gap wider than this (in decades) starts a new budget,
# and a group wider than the spread limit is not an IsoFLOP profile at all.
BUDGET_GAP_DECADES = 0.05
MAX_BUDGET_SPREAD_DECADES = 0.15
MIN_SE = 1e-6  # floor on a minimum's standard error (log N units) so noise-free data still weights sensibly
FLEXIBLE_SIZES = 6  # a cubic needs 4 coefficients; 6 sizes leave it 2 residual degrees of freedom
SHRINK_DOF = 4.0  # the pooled noise variance counts as this many degrees of freedom in each budget's estimate
MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class IsoflopDetails:
    """What the IsoFLOP figure needs: the runs of each budget and the profile fitted to each."""

    runs: pd.DataFrame  # the runs approach 2 used, with a `group` column (budget in FLOPs)
    profiles: tuple[Profile, ...]
    kind: str
    between_sd: float  # tau: scatter of log N_opt about the power law beyond the standard errors
    replicate_loss_opt: np.ndarray  # (n_boot, B) the minima's losses in the bootstrap, centred on the estimates


@dataclass(frozen=True)
class NoiseModel:
    """The bootstrap world of one budget: its truth curve at each run, and its relative-noise scale."""

    truth: np.ndarray
    residuals: np.ndarray  # relative, leverage-corrected
    scale: float = np.nan


def off_budget_note(runs: pd.DataFrame) -> tuple[str, ...]:
    """Runs a budget column leaves without a budget (a sweep's reach runs) are not in any profile: say so."""
    missing = int(runs["budget"].isna().sum()) if runs["budget"].notna().any() else 0
    if not missing:
        return ()
    runs_are = "1 run off the IsoFLOP budgets is" if missing == 1 else f"{missing} runs off the IsoFLOP budgets are"
    return (f"approach 2: {runs_are} left out of the profiles (no budget in the table)",)


def budget_groups(runs: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The budget (FLOPs) each run belongs to, NaN if none, from the budget column or by grouping C; and
    warnings about budgets the grouping had to guess."""
    if runs["budget"].notna().any():
        return runs["budget"].to_numpy(float), []
    log_c = np.log10(runs["C"].to_numpy(float))
    order = np.argsort(log_c)
    cluster = np.concatenate([[0], np.cumsum(np.diff(log_c[order]) > BUDGET_GAP_DECADES)])
    groups, notes = np.full(log_c.size, np.nan), []
    for label in np.unique(cluster):
        members = order[cluster == label]
        spread = np.ptp(log_c[members])
        if spread > MAX_BUDGET_SPREAD_DECADES:
            notes.append(
                f"approach 2: {members.size} runs between C = {10 ** log_c[members].min():.3g} and "
                f"{10 ** log_c[members].max():.3g} FLOPs span {spread:.2f} decades, not one IsoFLOP budget: "
                "pass --budget-col"
            )
            continue
        groups[members] = 10 ** log_c[members].mean()
    return groups, notes


def noise_model(profile: Profile) -> NoiseModel:
    """One budget's bootstrap world: a flexible curve through the sizes nearest its lowest loss, and its
    relative residuals there; further out the runs' own losses stand as the truth."""
    window = local_window(profile.log_n, int(np.argmin(profile.loss)))
    log_n, loss = profile.log_n[window], profile.loss[window]
    degree = 3 if log_n.size >= FLEXIBLE_SIZES else 2
    coef, centre = polynomial(log_n, loss[None], degree)
    design = np.vander(log_n - centre, degree + 1, increasing=True)
    fitted = design @ coef[0]
    leverage = np.einsum("ij,ji->i", design, np.linalg.pinv(design))
    residuals = (loss - fitted) / fitted / np.sqrt(np.maximum(1.0 - leverage, 1e-12))
    truth = profile.loss.copy()
    truth[window] = fitted
    return NoiseModel(truth, residuals)


def with_scales(models: list[NoiseModel]) -> list[NoiseModel]:
    """Each budget's noise scale: its own residual variance shrunk towards the pooled one."""
    pooled = float(np.mean(np.concatenate([m.residuals for m in models]) ** 2))
    return [
        replace(
            m, scale=float(np.sqrt((np.sum(m.residuals**2) + SHRINK_DOF * pooled) / (m.residuals.size + SHRINK_DOF)))
        )
        for m in models
    ]


def between_budget_variance(log_c: np.ndarray, y: np.ndarray, se: np.ndarray) -> float:
    """tau^2: the variance of y about its weighted line beyond se^2 (DerSimonian-Laird, for a line)."""
    w = se**-2.0
    design = np.column_stack([np.ones_like(log_c), log_c])
    inverse = np.linalg.inv(design.T @ (design * w[:, None]))
    coef = inverse @ design.T @ (w * y)
    q = float(np.sum(w * (y - design @ coef) ** 2))
    c = float(w.sum() - np.trace(inverse @ design.T @ (design * (w**2)[:, None])))
    return max(0.0, (q - (log_c.size - 2)) / c) if c > 0 else 0.0


def frontier_params(
    log_c: np.ndarray, log_n_opt: np.ndarray, loss_opt: np.ndarray, weight: np.ndarray
) -> dict[str, np.ndarray]:
    """Power laws through minima (R, B): N_opt weighted, L_opt unweighted; NaN rows with under MIN_BUDGETS minima."""
    enough = np.isfinite(log_n_opt).sum(axis=1) >= MIN_BUDGETS
    log_k_n, a = fit_lines(log_c, log_n_opt, np.broadcast_to(weight, log_n_opt.shape))
    log_k_loss, c = fit_lines(log_c, np.log(loss_opt), np.ones_like(loss_opt))
    columns = {"a": a, "b": 1.0 - a, "log_k_n": log_k_n, "loss_exponent": c, "log_k_loss": log_k_loss}
    return {key: np.where(enough, value, np.nan) for key, value in columns.items()}


def _replicate_minima(
    kind: str, profiles: list[Profile], models: list[NoiseModel], n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """log N_opt and L_opt (n_boot, B) of each budget's replicates; NaN where a replicate has no minimum."""
    rng = np.random.default_rng(seed)
    shapes = np.concatenate([m.residuals / m.scale for m in models if m.scale > 0] or [np.zeros(1)])
    shapes -= shapes.mean()
    log_n_opt, loss_opt = np.full((n_boot, len(profiles)), np.nan), np.full((n_boot, len(profiles)), np.nan)
    for j, (profile, model) in enumerate(zip(profiles, models)):
        noise = model.scale * rng.choice(shapes, size=(n_boot, profile.log_n.size))
        found = minima(kind, profile.log_n, model.truth * (1.0 + noise))
        ok = found.code == OK
        log_n_opt[ok, j], loss_opt[ok, j] = found.log_n_opt[ok], found.loss_opt[ok]
    return log_n_opt, loss_opt


def _standard_errors(log_n_opt: np.ndarray) -> np.ndarray:
    """Robust spread (scaled MAD) of each budget's replicate minima; infinite (weight 0) if none had one."""
    se = np.full(log_n_opt.shape[1], np.inf)
    for j, column in enumerate(log_n_opt.T):
        found = column[np.isfinite(column)]
        if found.size:
            se[j] = max(MAD_TO_SD * np.median(np.abs(found - np.median(found))), MIN_SE)
    return se


def fit_minima(runs: pd.DataFrame, kind: str) -> tuple[list[Profile], list[str]]:
    """One profile per budget with a minimum inside its sizes; messages for the budgets skipped."""
    profiles, skipped = [], []
    log_n, loss = np.log(runs["N"].to_numpy(float)), runs["loss"].to_numpy(float)
    for budget, index in runs.groupby("group").indices.items():
        try:
            profiles.append(fit_profile(kind, budget, log_n[index], loss[index]))
        except FitError as error:
            skipped.append(f"approach 2: {error}")
    return profiles, skipped


def fit_approach2(runs: pd.DataFrame, n_boot: int, seed: int, profile: str = DEFAULT_PROFILE) -> ApproachResult:
    """IsoFLOP minima and their power laws, with intervals from a bootstrap that includes the profile misfit."""
    if profile not in PROFILES:
        raise FitError(f"unknown IsoFLOP profile estimator {profile!r}: choose one of {', '.join(PROFILES)}")
    off_budget = off_budget_note(runs)
    groups, notes = budget_groups(runs)
    runs = runs.assign(group=groups).dropna(subset=["group"]).reset_index(drop=True)
    runs = seed_means(runs, by=("group",))  # a profile is fitted through each size's mean over its seeds
    if runs.empty:
        raise FitError("approach 2 found no IsoFLOP budgets: add a budget column (--budget-col) or IsoFLOP runs")
    profiles, skipped = fit_minima(runs, profile)
    if len(profiles) < MIN_BUDGETS:
        reasons = "; ".join(reason.removeprefix("approach 2: ") for reason in (*off_budget, *notes, *skipped))
        raise FitError(
            f"approach 2 needs at least {MIN_BUDGETS} budgets with a clear IsoFLOP minimum, found "
            f"{len(profiles)}" + (f" ({reasons})" if reasons else "")
        )
    models = with_scales([noise_model(p) for p in profiles])
    boot_log_n, boot_loss = _replicate_minima(profile, profiles, models, n_boot, seed)
    se = _standard_errors(boot_log_n)
    log_c = np.log([p.budget for p in profiles])
    log_n_opt = np.array([p.log_n_opt for p in profiles])
    tau2 = between_budget_variance(log_c, log_n_opt, se)
    weight = 1.0 / (se**2 + tau2)
    jitter = np.sqrt(tau2) * np.random.default_rng(seed + 1).standard_normal(boot_log_n.shape)
    loss_opt = np.array([p.loss_opt for p in profiles])
    estimate = frontier_params(log_c, log_n_opt[None], loss_opt[None], weight)
    estimate = {key: float(value[0]) for key, value in estimate.items()}
    samples = centred(frontier_params(log_c, boot_log_n + jitter, boot_loss, weight), estimate)
    if tau2 > 0:
        notes.append(
            f"approach 2: the minima scatter about the power law by {np.sqrt(tau2):.3g} in log N beyond "
            "their bootstrap errors; the weights and intervals include that scatter"
        )
    profiles = [
        replace(p, se_log_n_opt=float(np.sqrt(s**2 + tau2)) if np.isfinite(s) else np.nan) for p, s in zip(profiles, se)
    ]
    return ApproachResult(
        name="approach2",
        title=f"Approach 2: IsoFLOP profiles ({profile})",
        estimate=estimate,
        samples=samples,
        frontier=power_law_frontier,
        warnings=tuple(notes + skipped),
        notes=off_budget,
        details=IsoflopDetails(
            runs,
            tuple(profiles),
            profile,
            float(np.sqrt(tau2)),
            np.exp(centred_columns(np.log(boot_loss), np.log(loss_opt))),
        ),
    )
