"""Tables and plots of a comparison, generated from its run directories alone.

``python -m experiments tables <experiment>`` reads ``<output>/experiment.json`` and
``<output>/runs/<loss>/final/metrics.jsonl`` and writes ``table.md``, ``learning_curves.png``
and ``reliability.png`` beside them. Numbers are mean +- sample standard deviation over the
seeds; the paired comparisons resample the seeds' differences (bootstrap, 10,000 resamples)
and give a paired t-test.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from experiments.io import open_atomically, write_text_atomically  # noqa: E402

# de Brebisson & Vincent 2016, test error (%) and Penn Treebank perplexity, as reported by a
# secondary source (../shared/reference/paper-notes.md section 3).
PAPER_ERRORS = {
    "log-softmax": {"MNIST": 0.812, "CIFAR-10": 8.52},
    "log-taylor-2": {"MNIST": 0.785, "CIFAR-10": 8.07},
    "log-spherical": {"MNIST": 0.828, "CIFAR-10": 8.37},
}
PAPER_PTB_PERPLEXITY = {"log-softmax": 126.7, "log-taylor-2": 147.2, "log-spherical": 149.2}
OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "plain SGD"}
PAIRED = (("log-taylor-2", "log-softmax"), ("log-spherical", "log-softmax"))
BOOTSTRAP_RESAMPLES = 10_000


def read_history(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def tried_settings(loss_dir: Path) -> dict[str, list[float]]:
    """The values of each hyperparameter that the tuning runs in ``loss_dir`` tried."""
    tried: dict[str, set] = {}
    for config_path in loss_dir.glob("tune-*/config.json"):
        for key, value in json.loads(config_path.read_text())["hyper"].items():
            tried.setdefault(key, set()).add(value)
    return {key: sorted(values) for key, values in tried.items()}


def final_runs(output: Path) -> dict[str, dict]:
    """For each loss with a finished final run: its config, history, test metrics by seed and
    the hyperparameter values its tuning tried."""
    experiment = json.loads((output / "experiment.json").read_text())
    runs = {}
    for loss in experiment["losses"]:
        run_dir = output / "runs" / loss / "final"
        if not (run_dir / "metrics.jsonl").exists():
            continue
        history = read_history(run_dir)
        test = [r for r in history if r["split"] == "test"]
        if test:
            config = json.loads((run_dir / "config.json").read_text())
            runs[loss] = {"config": config, "history": history, "test": test[-1]["models"],
                          "tried": tried_settings(output / "runs" / loss)}
    return runs


def mean_std(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    values = np.asarray(values, float) * scale
    return f"{values.mean():.{digits}f} +- {values.std(ddof=1) if values.size > 1 else 0.0:.{digits}f}"


def validation_records(history: list[dict]) -> list[dict]:
    """The run's per-epoch validation records, in order."""
    return [r for r in history if r["split"] == "valid"]


def _timed_epochs(history: list[dict]) -> list[dict]:
    """The epochs after the first, which includes compilation (the first if it is the only one)."""
    epochs = validation_records(history)
    return epochs[1:] or epochs


def _is_factored(run: dict) -> bool:
    return run["config"].get("output_layer") == "factored"


def throughput(history: list[dict]) -> float:
    """Training examples per second per model: the median over epochs after the first, all
    models of the run trained at once."""
    return float(np.median([r["train_examples"] / r["train_seconds"] for r in _timed_epochs(history)]))


def seconds_per_epoch(history: list[dict]) -> float:
    """Wall-clock training seconds per epoch of the run (all its models): the median over
    epochs after the first."""
    return float(np.median([r["train_seconds"] for r in _timed_epochs(history)]))


def paired_difference(runs: dict, loss: str, baseline: str, key: str = "error",
                      what: str = "test error", scale: float = 100.0, unit: str = " points") -> str:
    """Test metric ``key`` (times ``scale``) of ``loss`` minus ``baseline``'s, paired by seed
    (same init and data order): mean, bootstrap interval, paired t-test and the verdict."""
    values = {name: {m["seed"]: m[key] * scale for m in runs[name]["test"]} for name in (loss, baseline)}
    seeds = sorted(set(values[loss]) & set(values[baseline]))
    if len(seeds) < 2:
        return f"- {loss} vs {baseline}: fewer than 2 paired seeds."
    diff = np.array([values[loss][s] - values[baseline][s] for s in seeds])
    rng = np.random.default_rng(0)
    means = rng.choice(diff, (BOOTSTRAP_RESAMPLES, diff.size)).mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    p_value = stats.ttest_rel([values[loss][s] for s in seeds], [values[baseline][s] for s in seeds]).pvalue
    lower = loss if high < 0 else baseline if low > 0 else None
    if lower is None:
        verdict = "no difference resolved (the interval contains 0)"
    elif p_value < 0.05:
        verdict = f"{lower} has the lower {what}"
    else:  # with few seeds the percentile bootstrap interval is too narrow
        verdict = (f"weak evidence that {lower} has the lower {what} (the interval excludes 0, "
                   "the t-test does not reach p < 0.05)")
    return (
        f"- {loss} minus {baseline}, {what}: {diff.mean():+.2f}{unit} over {len(seeds)} "
        f"paired seeds, 95 % bootstrap interval [{low:+.2f}, {high:+.2f}], paired t-test "
        f"p = {p_value:.3f}: {verdict}."
    )


def with_edge_mark(value: float, grid) -> str:
    """``value``, marked when it is the smallest or largest of a grid of several values."""
    at_edge = len(grid) > 1 and value in (min(grid), max(grid))
    return f"{value:g} (edge)" if at_edge else f"{value:g}"


def _column(test: list[dict], key: str, scale: float = 1.0, digits: int = 3, transform=None) -> str:
    values = [m[key] for m in test]
    if any(v is None for v in values):
        return "-"
    values = np.asarray(values, float) if transform is None else transform(np.asarray(values, float))
    return mean_std(values, scale, digits)


def _is_language_model(experiment: dict) -> bool:
    return experiment["model"] == "ngram"


def render(experiment: dict, runs: dict) -> str:
    seeds = sorted({m["seed"] for run in runs.values() for m in run["test"]})
    language_model = _is_language_model(experiment)
    tables_command = experiment["command"].replace(" run ", " tables ", 1).split(" --")[0]
    lines = [
        f"# {experiment['name']}: {experiment['dataset']}, {experiment['model']} {tuple(experiment['widths'])}",
        "",
        f"Generated by `{tables_command}` from the run directories under `runs/`, made by "
        f"`{experiment['command']}`.",
        f"Test-set metrics, mean +- std over {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
        f"{experiment['epochs']} epochs of {OPTIMIZER_NAMES[experiment.get('optimizer', 'adam')]}, "
        f"batch {experiment['batch_size']}"
        + (f", on a fixed random {experiment['train_subset']:,} training examples"
           if experiment.get("train_subset") else "")
        + f". Each loss's learning rate (from {list(experiment['learning_rates'])}) and hyperparameter "
        f"were chosen on the validation split with seed {experiment['tuning_seed']}; the test set "
        "was not used to choose.",
    ]
    if language_model:
        lines.append(
            "Perplexity is exp(test NLL per token) under the model's own normalized probabilities "
            "(softmax for the Z-loss); squared error defines no distribution, so it has accuracies only. "
            "Top-k accuracy: the next token is among the k most probable.")
    else:
        lines.append(
            "NLL, ECE (15 bins) and Brier score use the model's own normalized probabilities (softmax "
            "for the Z-loss; the plain normalizer for the soft-margin losses); squared error defines none.")
    missing = [loss for loss in experiment["losses"] if loss not in runs]
    if missing:
        lines += ["", f"**Incomplete**: no finished final run yet for {', '.join(missing)}."]
    if language_model:
        header = ("| loss | learning rate | hyperparameter | test perplexity | top-1 accuracy (%) "
                  "| top-10 accuracy (%) | train tokens/s per model | train s/epoch, all seeds |")
    else:
        header = ("| loss | learning rate | hyperparameter | test error (%) | test NLL | test ECE (%) "
                  "| test Brier | train examples/s per model |")
    lines += ["", header, "|---" * header.count(" | ") + "|---|"]
    for loss, run in runs.items():
        test = run["test"]
        grids = {"learning rate": experiment["learning_rates"], **run["tried"]}
        chosen = {"learning rate": run["config"]["learning_rates"][0], **run["config"]["hyper"]}
        shown = {k: with_edge_mark(v, grids[k]) for k, v in chosen.items()}
        hyper = ", ".join(f"{k} = {v}" for k, v in shown.items() if k != "learning rate") or "-"
        if language_model:
            metrics = (f"{_column(test, 'nll', digits=1, transform=np.exp)} "
                       f"| {_column(test, 'error', 100, 2, lambda e: 1 - e)} "
                       f"| {_column(test, 'top10_accuracy', 100, 2)}")
            speed = f"{throughput(run['history']):,.0f} | {seconds_per_epoch(run['history']):.1f}"
        else:
            metrics = (f"{_column(test, 'error', 100, 2)} | {_column(test, 'nll')} "
                       f"| {_column(test, 'ece', 100, 2)} | {_column(test, 'brier')}")
            speed = f"{throughput(run['history']):,.0f}"
        layer = " (factored)" if _is_factored(run) else ""
        lines.append(f"| {loss}{layer} | {shown['learning rate']} | {hyper} | {metrics} | {speed} |")
    lines += [
        "",
        "(edge): the chosen value is at an end of its grid; a wider grid might have done better.",
        *(["(factored): the output layer was trained by softfam's factored layer (exact SGD on "
           "the statistics, O(d^2) per example); the other losses used the dense layer."]
          if any(_is_factored(run) for run in runs.values()) else []),
        f"Training throughput: {'tokens' if language_model else 'examples'} per second per model "
        "on this run's machine (env.json), the median over epochs after the first; the seeds of "
        "a run are trained together (at once under `vmap`; one after the other under `lax.map` "
        "with the factored layer), so a model's throughput is its training examples per epoch over "
        "the run's wall-clock seconds per epoch.",
        "",
    ]
    if language_model:
        lines += validation_perplexity_by_epoch(runs)
    lines += [
        "## Does the paper's claim hold here?",
        "",
    ]
    if language_model:
        lines += [
            "de Brebisson & Vincent (2016) report that with many classes (Penn Treebank, 10k words) "
            "log-softmax beats log-Taylor and log-spherical in perplexity. Paired by seed, on the "
            "test NLL per token (the log of the perplexity):",
            "",
        ]
        lines += [paired_difference(runs, a, b, "nll", "test NLL", 1.0, " nats")
                  for a, b in PAIRED if a in runs and b in runs]
    else:
        lines += [
            "de Brebisson & Vincent (2016) report, with 10 classes, log-Taylor < log-spherical < "
            "log-softmax in test error. Paired by seed:",
            "",
        ]
        lines += [paired_difference(runs, a, b) for a, b in PAIRED if a in runs and b in runs]
    lines += [
        "",
        "## The paper's numbers, for context",
        "",
        "Reported by de Brebisson & Vincent (2016), as transcribed by a secondary source; other "
        "data and unknown architectures and budgets, so context only.",
        "",
    ]
    if language_model:
        lines += ["| loss | Penn Treebank test perplexity |", "|---|---|"]
        lines += [f"| {loss} | {v} |" for loss, v in PAPER_PTB_PERPLEXITY.items()]
    else:
        lines += ["| loss | MNIST test error (%) | CIFAR-10 test error (%) |", "|---|---|---|"]
        lines += [f"| {loss} | {v['MNIST']} | {v['CIFAR-10']} |" for loss, v in PAPER_ERRORS.items()]
    return "\n".join(lines) + "\n"


def validation_perplexity_by_epoch(runs: dict) -> list[str]:
    """Lines of a table of each loss's validation perplexity after each epoch, mean over seeds:
    it shows when the fixed budget trained past the best epoch."""
    with_distribution = {loss: validation_records(run["history"])
                         for loss, run in runs.items() if run["test"][0]["nll"] is not None}
    if not with_distribution:
        return []
    epochs = [r["epoch"] for r in next(iter(with_distribution.values()))]
    lines = ["## Validation perplexity after each epoch", "",
             "Mean over seeds of exp(validation NLL per token); the test row above is after the last epoch.",
             "", "| loss | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
             "|---" * (len(epochs) + 1) + "|"]
    for loss, valid in with_distribution.items():
        perplexities = [np.mean([np.exp(m["nll"]) for m in r["models"]]) for r in valid]
        lines.append(f"| {loss} | " + " | ".join(f"{p:.1f}" for p in perplexities) + " |")
    return lines + [""]


def plot_learning_curves(runs: dict, path: Path, title: str) -> None:
    figure, (error_axes, nll_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for loss, run in runs.items():
        valid = validation_records(run["history"])
        epochs = [r["epoch"] for r in valid]
        for axes, key, scale in ((error_axes, "error", 100), (nll_axes, "nll", 1)):
            if any(m[key] is None for m in valid[0]["models"]):
                continue
            values = np.array([[m[key] * scale for m in r["models"]] for r in valid])
            mean, std = values.mean(1), values.std(1)
            axes.plot(epochs, mean, label=loss)
            axes.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    error_axes.set(xlabel="epoch", ylabel="validation error (%)", yscale="log")
    nll_axes.set(xlabel="epoch", ylabel="validation NLL", yscale="log")
    error_axes.legend(fontsize=7)
    figure.suptitle(f"{title}: mean +- std over seeds")
    figure.tight_layout()
    save(figure, path)


def plot_reliability(runs: dict, path: Path, title: str) -> None:
    calibrated = {loss: run for loss, run in runs.items() if "bins" in run["test"][0]}
    columns = 4
    rows = -(-len(calibrated) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for ax in axes.flat[len(calibrated):]:
        ax.axis("off")
    for ax, (loss, run) in zip(axes.flat, calibrated.items()):
        count = np.sum([m["bins"]["count"] for m in run["test"]], 0)
        confidence = np.sum([m["bins"]["confidence"] for m in run["test"]], 0)
        correct = np.sum([m["bins"]["correct"] for m in run["test"]], 0)
        filled = count > 0
        centers = (np.arange(count.size) + 0.5) / count.size
        ax.bar(centers[filled], correct[filled] / count[filled], width=1 / count.size,
               edgecolor="black", label="accuracy")
        ax.plot(confidence[filled] / count[filled], correct[filled] / count[filled], "r.", label="(confidence, accuracy)")
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        ax.set(title=loss, xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    figure.suptitle(f"{title}: test-set reliability, all seeds pooled")
    figure.tight_layout()
    save(figure, path)


def save(figure, path: Path) -> None:
    with open_atomically(path, "wb") as f:
        figure.savefig(f, format="png", dpi=100)
    plt.close(figure)


def write(output: Path) -> str:
    """Writes the table and plots of the comparison in ``output``; returns the table."""
    output = Path(output)
    experiment = json.loads((output / "experiment.json").read_text())
    runs = final_runs(output)
    if not runs:
        raise FileNotFoundError(f"no finished final run under {output / 'runs'}")
    table = render(experiment, runs)
    write_text_atomically(output / "table.md", table)
    plot_learning_curves(runs, output / "learning_curves.png", experiment["name"])
    plot_reliability(runs, output / "reliability.png", experiment["name"])
    return table
