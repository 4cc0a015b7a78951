"""The learning-rate transfer section: loss against learning rate per width, per parametrization.

A sweep that varies `train.lr` (and `model.d_model`, and optionally `model.parametrization`) asks
whether the best learning rate found at one width stays best at others: under muP it should, up to
grid resolution (Yang et al. 2022); under SP it moves. For each width the optimum is the grid point
of lowest final eval loss, refined by a parabola in log lr through it and its two neighbours. The
transfer holds when the grid optima of all widths lie within one grid step of each other.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.reporting.document import figure
from scaling import contract

LR, WIDTH, PARAMETRIZATION = (
    f"{contract.SWEPT_PREFIX}train.lr",
    "d_model",
    f"{contract.SWEPT_PREFIX}model.parametrization",
)
FIGURE = "lr_transfer.png"
NAMES = {"sp": "SP", "mup": "muP"}


def lr_sweep(table: pd.DataFrame) -> pd.DataFrame | None:
    """(parametrization, width, lr, loss) per run of a sweep that varies the learning rate; None otherwise."""
    if LR not in table.columns or table[LR].nunique() < 3 or WIDTH not in table.columns:
        return None
    loss = table[contract.FINAL_EVAL_LOSS].where(table["status"] == contract.COMPLETED)  # diverged: no loss
    return (
        pd.DataFrame(
            {
                "parametrization": table[PARAMETRIZATION] if PARAMETRIZATION in table.columns else "sp",
                "width": table[WIDTH].astype(int),
                "lr": table[LR].astype(float),
                "loss": loss.astype(float),
            }
        )
        .sort_values(["parametrization", "width", "lr"])
        .reset_index(drop=True)
    )


def optima(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (parametrization, width): the grid optimum, its grid index, and the parabola-refined optimum."""
    grid = np.sort(runs["lr"].unique())
    rows = []
    for (param, width), group in runs.groupby(["parametrization", "width"]):
        loss = group.set_index("lr")["loss"].reindex(grid).to_numpy()
        finite = np.where(np.isfinite(loss), loss, np.inf)
        i = int(np.argmin(finite))
        rows.append(
            {
                "parametrization": param,
                "width": width,
                "index": i,
                "lr": grid[i],
                "loss": finite[i],
                "lr_refined": _refine(np.log(grid), finite, i),
            }
        )
    return pd.DataFrame(rows)


def _refine(log_lr: np.ndarray, loss: np.ndarray, i: int) -> float:
    """exp of the vertex of the parabola through the optimum and its neighbours (the grid point at an edge)."""
    if i == 0 or i == len(loss) - 1 or not np.isfinite(loss[i - 1 : i + 2]).all():
        return float(np.exp(log_lr[i]))
    c2, c1, _ = np.polyfit(log_lr[i - 1 : i + 2], loss[i - 1 : i + 2], 2)
    return float(np.exp(-c1 / (2 * c2))) if c2 > 0 else float(np.exp(log_lr[i]))


def transfers(best: pd.DataFrame) -> dict[str, int]:
    """Per parametrization: how many grid steps the optimum moves across the widths."""
    return {param: int(group["index"].max() - group["index"].min()) for param, group in best.groupby("parametrization")}


def plot(runs: pd.DataFrame, best: pd.DataFrame, path: Path) -> Path:
    """Loss against lr (log axis), one line per width, one panel per parametrization, optima starred."""
    params = sorted(runs["parametrization"].unique(), key=lambda p: (p != "sp", p))
    widths = sorted(runs["width"].unique())
    colours = dict(zip(widths, plt.cm.viridis(np.linspace(0.1, 0.85, len(widths)))))
    finite = runs["loss"].dropna()
    with plt.rc_context({"font.size": 11, "axes.grid": True, "grid.alpha": 0.3}):
        fig, axes = plt.subplots(1, len(params), figsize=(6.2 * len(params), 4.8), sharey=True, squeeze=False)
        for ax, param in zip(axes[0], params):
            for width in widths:
                curve = runs[(runs["parametrization"] == param) & (runs["width"] == width)]
                ax.plot(curve["lr"], curve["loss"], marker="o", ms=4, color=colours[width], label=f"d_model {width}")
                top = best[(best["parametrization"] == param) & (best["width"] == width)].iloc[0]
                ax.plot(top["lr"], top["loss"], marker="*", ms=15, mec="black", color=colours[width], ls="none")
            ax.plot([], [], marker="*", ms=12, mec="black", color="white", ls="none", label="lowest loss of each width")
            ax.set(
                xscale="log",
                xlabel="peak learning rate",
                title=f"{NAMES.get(param, param)}: final eval loss against lr",
                ylim=(finite.min() - 0.05, min(finite.max(), finite.min() + 1.5) + 0.05),
            )
            ax.legend(fontsize=8)
        axes[0][0].set_ylabel("final eval loss (nats/token)")
        fig.tight_layout()
        fig.savefig(path, dpi=130)
        plt.close(fig)
    return path


def section(runs: pd.DataFrame, figures: Path) -> str:
    """The markdown of the transfer section (and its figure, drawn into `figures`)."""
    best = optima(runs)
    plot(runs, best, figures / FIGURE)
    moves = transfers(best)
    grid = np.sort(runs["lr"].unique())
    step = grid[1] / grid[0] if len(grid) > 1 else math.nan
    lines = [
        "# Learning-rate transfer across widths",
        "",
        f"Each width trained at {len(grid)} learning rates a factor {step:.3g} apart; the optimum is the grid point "
        "of lowest final eval loss, refined by a parabola in log lr through it and its neighbours. muP (Yang et al. "
        "2022) should keep the optimum in place as width grows; SP moves it.",
        "",
        "| parametrization | d_model | best lr (grid) | refined | final eval loss |",
        "|---|---|---|---|---|",
    ]
    for row in best.itertuples():
        lines.append(f"| {row.parametrization} | {row.width} | {row.lr:.3g} | {row.lr_refined:.3g} | {row.loss:.4f} |")
    lines.append("")
    for param, move in moves.items():
        verdict = "holds (at most one grid step)" if move <= 1 else "does not hold"
        lines.append(
            f"- **{NAMES.get(param, param)}**: across d_model {', '.join(map(str, sorted(runs['width'].unique())))} the "
            f"optimum moves by {move} grid step{'s' if move != 1 else ''}: transfer {verdict}."
        )
    unfinished = runs["loss"].isna().sum()
    if unfinished:
        lines.append(f"- {unfinished} runs did not complete (diverged or failed) and count as the worst loss.")
    lines += [
        "",
        figure(
            FIGURE,
            "Final eval loss against peak learning rate, one line per width and one panel per "
            "parametrization; stars mark each width's lowest loss",
        ),
    ]
    return "\n".join(lines)
