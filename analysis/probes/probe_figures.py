"""The probe figures, drawn from the probe table alone (one PNG per question).

Colours: one per model size (viridis, small to large) where sizes share a panel; one per
checkpoint (plasma, early to late) where a panel shows a single size through training.
Token axes are logarithmic, so the initialisation (0 tokens) is left out of them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from analysis.probes import results
from analysis.probes.counts import MIN_BIN_TOKENS, bin_range
from analysis.probes.measure import (
    FORGETTING,
    ICL_SCORE,
    LOSS_BY_POSITION,
    MEMORISATION,
    MEMORISATION_HELDOUT,
    TERM_FREQUENCY,
    TERM_FREQUENCY_TOKENS,
    VAL_LOSS,
    band_label,
    icl_bands,
)
from analysis.probes.probe_table import probe_values
from analysis.probes.stats import poisson_quantiles
from analysis.trained_runs import RunInfo, size_label

PANEL = (4.8, 3.6)  # inches per panel
POSITION_BANDS_PER_OCTAVE = 4


def _size_colours(runs: list[RunInfo]) -> dict[str, tuple]:
    ranks = np.linspace(0.1, 0.85, len(runs)) if len(runs) > 1 else [0.4]
    return {run.name: plt.cm.viridis(r) for run, r in zip(runs, ranks)}


def _step_colour(tokens: float, norm: LogNorm) -> tuple:
    return plt.cm.plasma(norm(max(tokens, norm.vmin)) * 0.9)


def _token_norm(table: pd.DataFrame) -> LogNorm:
    positive = table.tokens[table.tokens > 0]
    low = float(positive.min()) if len(positive) else 1.0
    return LogNorm(low, max(float(table.tokens.max()), low * 10))


def _tokens_axis(ax, ylabel: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen (log)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")


def _panels(n: int, rows: int = 1) -> tuple[plt.Figure, np.ndarray]:
    """A grid of panels, never narrower than two so the figure title fits."""
    width = PANEL[0] * max(n, 2)
    fig, axes = plt.subplots(rows, n, figsize=(width, PANEL[1] * rows), squeeze=False, constrained_layout=True)
    return fig, axes


def _style_legend(ax, styles: dict[str, str]) -> None:
    """Colour says the size; this legend says what each line style means."""
    handles = ax.get_legend_handles_labels()[0]
    handles += [plt.Line2D([], [], color="black", ls=ls, label=label) for label, ls in styles.items()]
    ax.legend(handles=handles, fontsize=7)


def _save(fig: plt.Figure, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name


def _by_position(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(context length, loss) averaged in log-spaced bands of positions: a few hundred held-out windows
    leave single positions too noisy to read on a log axis, where the late positions crowd together."""
    x, loss = rows.key.astype(int).to_numpy(), rows.value.to_numpy()
    band = np.floor(np.log2(x) * POSITION_BANDS_PER_OCTAVE).astype(int)
    centres = [np.exp(np.log(x[band == b]).mean()) for b in np.unique(band)]
    return np.array(centres), np.array([loss[band == b].mean() for b in np.unique(band)])


def _per_size_lines(ax, table: pd.DataFrame, runs: list[RunInfo], probe: str, key: str, **style) -> None:
    colours = _size_colours(runs)
    for run in runs:
        s = results.series(table, probe, key, run.name)
        s = s[s.tokens > 0]
        ax.plot(s.tokens, s.value, marker="o", ms=3, color=colours[run.name], label=size_label(run), **style)


def loss_figure(table: pd.DataFrame, runs: list[RunInfo], folder: Path) -> str:
    fig, axes = _panels(2)
    _per_size_lines(axes[0, 0], table, runs, VAL_LOSS, "mean")
    _tokens_axis(axes[0, 0], "validation loss (nats/token)")
    axes[0, 0].set_title("Validation loss through training")
    axes[0, 0].legend(fontsize=8)
    colours, ax = _size_colours(runs), axes[0, 1]
    rows = probe_values(table, LOSS_BY_POSITION)
    for run in runs:
        mine = rows[rows.run == run.name]
        ax.plot(*_by_position(mine[mine.step == mine.step.max()]), color=colours[run.name], label=size_label(run))
    ax.set_xscale("log")
    ax.set(xlabel="tokens of context (log, banded)", ylabel="loss on the next token (nats)")
    ax.set_title("Loss by position, final checkpoint")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, folder, "probe_loss.png")


def loss_by_position_figure(table: pd.DataFrame, runs: list[RunInfo], folder: Path) -> str:
    fig, axes = _panels(len(runs))
    rows, norm = probe_values(table, LOSS_BY_POSITION), _token_norm(table)
    for ax, run in zip(axes[0], runs):
        mine = rows[rows.run == run.name]
        for _, checkpoint in mine.groupby("step"):
            ax.plot(*_by_position(checkpoint), color=_step_colour(checkpoint.tokens.iloc[0], norm), lw=1)
        ax.set_xscale("log")
        ax.set(xlabel="tokens of context (log, banded)", ylabel="loss on the next token (nats)", title=size_label(run))
        ax.grid(alpha=0.3, which="both")
    fig.colorbar(plt.cm.ScalarMappable(norm, plt.cm.plasma), ax=axes[0, -1], label="tokens seen by the checkpoint")
    fig.suptitle("Loss by position in the context, every checkpoint")
    return _save(fig, folder, "probe_loss_by_position.png")


def icl_figure(table: pd.DataFrame, runs: list[RunInfo], folder: Path) -> str:
    fig, axes = _panels(1)
    ax = axes[0, 0]
    _per_size_lines(ax, table, runs, ICL_SCORE, "late_minus_early")
    ax.axhline(0, color="grey", lw=0.8, label="0: the context does not help")
    early, late = (band_label(band) for band in icl_bands(runs[0].seq_len))
    _tokens_axis(ax, f"loss at context {late} - at {early} tokens (nats)")
    ax.set_title("In-context learning score (lower = more use of context)")
    ax.legend(fontsize=8)
    return _save(fig, folder, "probe_icl.png")


def _no_data(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def memorisation_figure(table: pd.DataFrame, runs: list[RunInfo], folder: Path) -> str:
    fig, axes = _panels(3)
    colours = _size_colours(runs)
    panels = (
        ("memorised_fraction", "fraction memorised (score = 1)"),
        ("mean_score", "mean share of continuation matched"),
    )
    for ax, (key, ylabel) in zip(axes[0], panels):
        _per_size_lines(ax, table, runs, MEMORISATION, key)
        for run in runs:
            s = results.series(table, MEMORISATION_HELDOUT, key, run.name)
            ax.plot(s.tokens[s.tokens > 0], s.value[s.tokens > 0], ls=":", color=colours[run.name])
        _tokens_axis(ax, ylabel)
        _style_legend(ax, {"seen training sequences": "-", "held-out sequences (chance)": ":"})
    axes[0, 0].set_title("Memorised fraction of sampled sequences", fontsize=10)
    axes[0, 1].set_title("Memorisation score (greedy tokens matched)", fontsize=10)
    ax, predictions = axes[0, 2], {run.name: results.checkpoint_prediction(table, run.name) for run in runs}
    if all(pr.precision.isna().all() and pr.recall.isna().all() for pr in predictions.values()):
        _no_data(ax, "no memorised sequence at any\nfinal checkpoint: no set to predict")
        return _save(fig, folder, "probe_memorisation.png")
    for run in runs:
        pr = predictions[run.name]
        tokens = pr.step * run.batch_size * run.seq_len
        keep = tokens > 0
        ax.plot(tokens[keep], pr.precision[keep], marker="o", ms=3, color=colours[run.name], label=size_label(run))
        ax.plot(tokens[keep], pr.recall[keep], marker="s", ms=3, ls="--", color=colours[run.name])
    _tokens_axis(ax, "precision / recall")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Each checkpoint's memorised set\nas predictor of the final one's", fontsize=10)
    _style_legend(ax, {"precision": "-", "recall": "--"})
    return _save(fig, folder, "probe_memorisation.png")


def uniformity_figure(table: pd.DataFrame, runs: list[RunInfo], folder: Path) -> str:
    tests = {run.name: results.uniformity(table, run.name) for run in runs}
    tested = [run for run in runs if tests[run.name] is not None and tests[run.name].memorised_B.sum() > 0]
    fig, axes = _panels(2, rows=max(1, len(tested)))
    if not tested:
        _no_data(
            axes[0, 0], "no memorised sequence among the samples at\nthe final checkpoint of any run: nothing to test"
        )
        axes[0, 1].set_axis_off()
    for (bars, qq), run in zip(axes, tested):
        test = tests[run.name]
        bins = np.arange(1, len(test.memorised_B) + 1)
        bars.bar(bins, test.memorised_B, color="tab:blue", alpha=0.7, label="memorised")
        bars.hlines(
            test.expected_B, bins - 0.4, bins + 0.4, colors="black", linestyles="--", label="expected if uniform"
        )
        bars.set_xticks(bins)
        bars.set(xlabel="bin of training order (early -> late, equal samples)", ylabel="memorised sequences")
        bars.set_title(
            f"{size_label(run)}: chi2 = {test.statistic:.1f} (dof {test.dof}), p = {test.p_value:.2g}", fontsize=10
        )
        bars.legend(fontsize=8)
        theory = poisson_quantiles(len(test.memorised_B), test.memorised_B.mean())
        qq.plot(theory, np.sort(test.memorised_B), "o", label="one bin of training order")
        top = max(theory.max(), test.memorised_B.max()) + 1
        qq.plot([0, top], [0, top], "k:", lw=0.8, label="y = x: exactly Poisson")
        qq.legend(fontsize=8)
        qq.set(xlabel=f"Poisson({test.memorised_B.mean():.1f}) quantile", ylabel="memorised per bin (sorted)")
        qq.set_title("Q-Q against a Poisson fit")
    fig.suptitle("Are memorised sequences spread uniformly over training order? (final checkpoint)")
    return _save(fig, folder, "probe_memo_uniformity.png")


def term_frequency_figure(table: pd.DataFrame, runs: list[RunInfo], folder: Path) -> str:
    fig, axes = _panels(len(runs), rows=2)
    losses, counts, norm = (
        probe_values(table, TERM_FREQUENCY),
        probe_values(table, TERM_FREQUENCY_TOKENS),
        _token_norm(table),
    )
    merged = losses.merge(counts, on=["run", "step", "tokens", "key"], suffixes=("", "_n"))
    merged = merged[merged.value_n >= MIN_BIN_TOKENS]
    for row, kind in enumerate(("unigram", "bigram")):
        for ax, run in zip(axes[row], runs):
            mine = merged[(merged.run == run.name) & merged.key.str.startswith(f"{kind}:")]
            for _, checkpoint in mine[mine.tokens > 0].groupby("step"):
                bins = checkpoint.key.str.split(":").str[1].astype(int).to_numpy()
                order = np.argsort(bins)
                ranges = [bin_range(b) for b in bins[order]]
                x = [np.sqrt((lo + 1) * (hi + 1)) for lo, hi in ranges]  # geometric bin centre of (count + 1)
                colour = _step_colour(checkpoint.tokens.iloc[0], norm)
                ax.plot(x, checkpoint.value.to_numpy()[order], marker="o", ms=3, color=colour, lw=1)
            what = "token" if kind == "unigram" else "(previous, next) token pair"
            ax.set_xscale("log")
            ax.set(
                xlabel="occurrences in data seen + 1 (log)",
                ylabel="mean loss (nats)",
                title=f"{size_label(run)}: by {what}",
            )
            ax.grid(alpha=0.3, which="both")
    fig.colorbar(plt.cm.ScalarMappable(norm, plt.cm.plasma), ax=axes[:, -1], label="tokens seen by the checkpoint")
    fig.suptitle("Loss on held-out tokens by how often they occurred in the training data seen so far")
    return _save(fig, folder, "probe_term_frequency.png")


def forgetting_figure(table: pd.DataFrame, runs: list[RunInfo], folder: Path) -> str:
    """Top: the batch's loss. Bottom: minus the held-out loss at the same checkpoint, which takes out
    what the model learnt in general and leaves the batch's own advantage, fading as it is forgotten."""
    fig, axes = _panels(len(runs), rows=2)
    rows = probe_values(table, FORGETTING)
    for top, bottom, run in zip(axes[0], axes[1], runs):
        mine = rows[(rows.run == run.name) & (rows.step > 0)]
        held_out = results.series(table, VAL_LOSS, "mean", run.name).set_index("step").value
        for i, (key, batch) in enumerate(sorted(mine.groupby("key"), key=lambda group: int(group[0]))):
            colour = plt.cm.tab10(i)
            top.plot(batch.step, batch.value, marker="o", ms=3, color=colour, label=f"batch of step {key}")
            excess = batch.value.to_numpy() - held_out.reindex(batch.step).to_numpy()
            bottom.plot(batch.step, excess, marker="o", ms=3, color=colour)
            for ax in (top, bottom):
                ax.axvline(int(key), color=colour, ls=":", lw=1)
        top.set(ylabel="loss on that batch (nats/token)", title=size_label(run))
        bottom.set(ylabel="batch loss - held-out loss (nats)")
        bottom.axhline(0, color="grey", lw=0.8, label="0: no better than unseen data")
        bottom.legend(fontsize=8)
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xlabel("checkpoint step (log)")
            ax.grid(alpha=0.3, which="both")
        _style_legend(top, {"dotted: the step that trained the batch": ":"})
    fig.suptitle("Forgetting: the exact batch trained at the dotted step, at every checkpoint")
    return _save(fig, folder, "probe_forgetting.png")


FIGURES = (
    (
        loss_figure,
        "validation loss against tokens seen, one colour per size (left), and loss by position in the "
        "context at the final checkpoint (right)",
    ),
    (
        loss_by_position_figure,
        "loss by position in the context at every checkpoint, coloured by the tokens the "
        "checkpoint had seen, one panel per size",
    ),
    (
        icl_figure,
        "in-context learning score against tokens seen, one colour per size; below the grey zero line the "
        "context helps",
    ),
    (
        memorisation_figure,
        "memorised fraction and mean score of sampled training sequences (solid) against held-out "
        "ones, the chance level (dotted); right: each checkpoint's memorised set as a predictor of the "
        "final one's (precision solid, recall dashed)",
    ),
    (
        uniformity_figure,
        "memorised sequences per bin of training order against the count expected if uniform "
        "(dashed), with a Q-Q plot against a Poisson fit",
    ),
    (
        term_frequency_figure,
        "loss on held-out tokens against how often the token (top) and the token pair (bottom) "
        "occurred in the data seen, coloured by the checkpoint's tokens seen",
    ),
    (
        forgetting_figure,
        "loss on the exact batch trained at each chosen (dotted) step, at every checkpoint (top), and "
        "the same minus the held-out loss (bottom)",
    ),
)


def write_figures(table: pd.DataFrame, runs: list[RunInfo], folder: Path) -> list[tuple[str, str]]:
    """Draw every figure into `folder`; (file name, caption) pairs for the report."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = sorted((run for run in runs if (table.run == run.name).any()), key=lambda r: r.params)
    return [(draw(table, runs, folder), caption) for draw, caption in FIGURES]
