"""What every figure of the report shares: axis labels with units, one font size and grid, PNG at one
resolution, and compute written as people write it (1.4e18)."""

import functools
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FormatStrFormatter

FLOPS_LABEL = "training compute C (FLOPs)"
N_LABEL = "parameters N"
D_LABEL = "training tokens D"
LOSS_LABEL = "loss (nats/token)"
DPI = 130

STYLE = {"font.size": 11, "axes.grid": True, "grid.alpha": 0.3}


def styled(plot):
    """Draw under our font size and grid without changing matplotlib's settings for anyone else."""

    @functools.wraps(plot)
    def styled(*args, **kwargs):
        with plt.rc_context(STYLE):
            return plot(*args, **kwargs)

    return styled


def save(fig: plt.Figure, path: Path) -> Path:
    if fig.get_layout_engine() is None:  # a figure with its legend outside the axes lays itself out
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plain_log_y(ax: plt.Axes) -> None:
    """Loss on a log axis reads better as 2.5, 3.0 than as 3 x 10^0."""
    for formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        formatter(FormatStrFormatter("%.1f"))


def flops_text(value: float) -> str:
    """A compute value as people write it: 1.4e18, not 1.4e+18."""
    return f"{value:.2g}".replace("e+", "e")


def budget_label(budget: float) -> str:
    return f"C = {flops_text(budget)} FLOPs"
