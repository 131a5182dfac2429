"""The plots of the comparisons and studies, PNG files beside their tables. No JAX.

Every plot draws a loss in the same colour (``COLOURS``), has a legend on every panel, and
labels its log axes with plain numbers (10, 100, 1,000).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from experiments import records  # noqa: E402
from experiments.io import open_atomically  # noqa: E402

COLOURS = {  # one colour per loss, in every plot
    "log-softmax": "tab:blue", "log-taylor-2": "tab:orange", "log-taylor-4": "tab:olive",
    "log-spherical": "tab:green", "squared-error": "tab:purple", "z-loss": "tab:brown",
    "soft-margin-softmax": "tab:pink", "soft-margin-taylor-2": "tab:gray",
    "softmax-upper-bound": "tab:cyan", "label-smoothed-log-softmax": "tab:red",
}


def colour(loss: str) -> str:
    return COLOURS.get(loss, "black")


def plain_log_axis(axes, axis: str = "y") -> None:
    """A log axis with plain-number tick labels (0.5, 2, 10, 1,000) instead of powers of ten."""
    formatter = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,g}")
    target = axes.yaxis if axis == "y" else axes.xaxis
    target.set_major_formatter(formatter)
    target.set_minor_formatter(formatter)


def save(figure, path: Path) -> None:
    with open_atomically(path, "wb") as f:
        figure.savefig(f, format="png", dpi=100)
    plt.close(figure)


def learning_curves(found: dict, path: Path, title: str) -> None:
    """Validation error and NLL by epoch, mean +- std over the seeds still training; a loss
    with diverged seeds is labelled so and its curve ends with an x."""
    figure, panels = plt.subplots(1, 2, figsize=(11, 4))
    for axes, key, scale, label in ((panels[0], "error", 100, "validation error (%)"),
                                    (panels[1], "nll", 1, "validation NLL")):
        for loss, row in found.items():
            values = records.by_epoch(row.models, key)
            if not values:
                continue
            epochs = sorted(values)
            mean = np.array([np.mean(values[e]) for e in epochs]) * scale
            std = np.array([np.std(values[e]) for e in epochs]) * scale
            diverged = sum(m["diverged"] for m in row.models)
            name = loss + (f" (diverged: {diverged} of {len(row.models)})" if diverged else "")
            axes.plot(epochs, mean, color=colour(loss), label=name)
            axes.fill_between(epochs, mean - std, mean + std, color=colour(loss), alpha=0.2)
            if diverged:
                axes.plot(epochs[-1:], mean[-1:], "x", color=colour(loss), markersize=9)
        axes.set(xlabel="epoch", ylabel=label, yscale="log")
        plain_log_axis(axes)
        axes.legend(fontsize=7)
    figure.suptitle(f"{title}: mean +- std over seeds")
    figure.tight_layout()
    save(figure, path)


def reliability(found: dict, path: Path, title: str) -> None:
    """Accuracy against confidence per bin, all seeds pooled, with each bin's example count;
    the losses with probabilities of their own (not the Z-loss)."""
    calibrated = {loss: row for loss, row in found.items() if row.test and row.test[0].get("bins")}
    columns = 4
    rows = max(1, -(-len(calibrated) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for ax in axes.flat[len(calibrated):]:
        ax.axis("off")
    for ax, (loss, row) in zip(axes.flat, calibrated.items()):
        count = np.sum([m["bins"]["count"] for m in row.test], 0)
        confidence = np.sum([m["bins"]["confidence"] for m in row.test], 0)
        correct = np.sum([m["bins"]["correct"] for m in row.test], 0)
        filled = count > 0
        centers = (np.arange(count.size) + 0.5) / count.size
        bars = ax.bar(centers[filled], correct[filled] / count[filled], width=1 / count.size,
                      color=colour(loss), edgecolor="black", label="accuracy")
        ax.bar_label(bars, labels=[f"{c:,.0f}" for c in count[filled]], fontsize=5, rotation=90)
        ax.plot(confidence[filled] / count[filled], correct[filled] / count[filled], "k.",
                label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        diverged = sum(m["diverged"] for m in row.models)
        ax.set(title=loss + (f" ({diverged} diverged)" if diverged else ""), xlabel="confidence",
               ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.15))
        ax.legend(fontsize=5, loc="upper left")
    figure.suptitle(f"{title}: test-set reliability, all seeds pooled (bars: accuracy, with the "
                    "number of examples; dots: mean confidence)")
    figure.tight_layout()
    save(figure, path)
