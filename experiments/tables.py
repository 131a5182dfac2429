"""Tables and plots of a comparison, generated from its run directories alone.

``python -m experiments tables <experiment>`` reads ``<output>/config.json`` (the effective config
and its command) and ``<output>/runs/<loss>/final/metrics.jsonl`` and writes ``table.md``, ``learning_curves.png``
and ``reliability.png`` beside them. Numbers are mean +- sample standard deviation over the
seeds; the paired comparisons of the paper's losses are analysed per seed by
``experiments.statistics`` (t interval, exact sign-flip test, smallest detectable difference).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from experiments import comparison, configs, losses, metrics, statistics, train  # noqa: E402
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
TEMPERATURE_NOTE = (
    "T-scaled: the logits divided by the temperature that minimises each model's validation NLL "
    "(Guo et al. 2017), then the same normalizer. The Z-loss ignores the logits' scale, so its "
    "unscaled probabilities have an arbitrary temperature and are not shown.")
PAIRED = (("log-taylor-2", "log-softmax"), ("log-spherical", "log-softmax"))


def tried_points(loss_dir: Path) -> list[dict[str, float]]:
    """The points (learning rate and hyperparameters) that the tuning runs in ``loss_dir`` tried."""
    points = []
    for config_path in loss_dir.glob("tune-*/config.json"):
        run = json.loads(config_path.read_text())["run"]
        points += [{"learning_rate": lr, **run["hyper"]} for lr in run["learning_rates"]]
    return points


OWN_PROBABILITY_METRICS = ("nll", "ece", "brier", "bins", "bucket_nll")


def without_own_probabilities(record: dict) -> dict:
    """``record`` with the metrics of the model's own probabilities set to None: for a
    scale-free loss (``Loss.scale_free``, the Z-loss) they have an arbitrary temperature."""
    return {**record, **{key: None for key in OWN_PROBABILITY_METRICS if key in record}}


def final_runs(output: Path) -> dict[str, dict]:
    """For each loss whose final run has finished every model: its run config, records, end
    records, the test metrics of the models that did not diverge (with their seeds) and the
    hyperparameter values its tuning tried. A scale-free loss's validation records and
    ``test`` hold no metric of its own probabilities (``without_own_probabilities``; its end
    records keep them as recorded), only ``scaled`` its T-scaled ones."""
    experiment = read_experiment(output)
    runs = {}
    for loss in experiment["config"]["losses"]:
        run_dir = output / "runs" / loss / "final"
        if not (run_dir / "config.json").exists():
            continue
        run = json.loads((run_dir / "config.json").read_text())["run"]
        judged = without_own_probabilities if losses.get(loss).scale_free else dict
        history = [judged(r) if r["split"] == "valid" else r for r in train.read_records(run_dir)]
        ends = [r for r in history if r["split"] == "end"]
        if len(ends) == len(run["seeds"]) * len(run["learning_rates"]):
            env = json.loads((run_dir / "env.json").read_text()) if (run_dir / "env.json").exists() else {}
            runs[loss] = {"run": run, "history": history, "ends": ends, "env": env,
                          "test": [judged({"seed": e["seed"], **e["test"]})
                                   for e in ends if not e["diverged"]],
                          "scaled": [{"seed": e["seed"], "temperature": e["temperature"], **e["test_scaled"]}
                                     for e in ends if "test_scaled" in e],
                          "tried": tried_points(output / "runs" / loss)}
    return runs


def read_experiment(output: Path) -> dict:
    """``{"config", "command", "num_classes"}`` as the comparison saved them."""
    return json.loads((Path(output) / "config.json").read_text())


def mean_std(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    values = np.asarray(values, float) * scale
    return f"{values.mean():.{digits}f} +- {values.std(ddof=1) if values.size > 1 else 0.0:.{digits}f}"


def validation_records(history: list[dict]) -> list[dict]:
    """The run's validation records (every model, every epoch), in order."""
    return [r for r in history if r["split"] == "valid"]


def _timed_epochs(history: list[dict]) -> list[dict]:
    """Each model's epochs after its first, which includes compilation (all if one only)."""
    epochs = validation_records(history)
    return [r for r in epochs if r["epoch"] > 1] or epochs


def throughput(history: list[dict]) -> float:
    """Training examples per second per model: the median over epochs after the first."""
    return float(np.median([r["train_examples"] / r["train_seconds"] for r in _timed_epochs(history)]))


def seconds_per_epoch(history: list[dict]) -> float:
    """Wall-clock training seconds per epoch of one model: the median over epochs after the first."""
    return float(np.median([r["train_seconds"] for r in _timed_epochs(history)]))


def epochs_text(ends: list[dict], max_epochs: int) -> str:
    """The models' best and stopping epochs, "best 7-9, stopped 12-14", flagged "(k of n not
    stopped early)" when some ran to ``max_epochs``."""
    def span(values):
        return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"
    ends = [e for e in ends if not e["diverged"]]
    if not ends:
        return "-"
    text = f"best {span([e['best_epoch'] for e in ends])}, stopped {span([e['stop_epoch'] for e in ends])}"
    at_limit = sum(e["stop_epoch"] == max_epochs for e in ends)
    return text + (f" (**{at_limit} of {len(ends)} not stopped early**)" if at_limit else "")


def per_example_difference(runs: dict, loss: str, baseline: str) -> list[str]:
    """Per seed, the exact McNemar test of ``loss`` against ``baseline`` on the test examples
    (``experiments.statistics.mcnemar``), summed up over seeds, as a line; no line without
    per-example records."""
    correct = {name: {m["seed"]: metrics.unpack_correct(m["correct"], m["examples"])
                      for m in runs[name]["test"] if "correct" in m} for name in (loss, baseline)}
    seeds = sorted(set(correct[loss]) & set(correct[baseline]))
    if not seeds:
        return []
    tests = [statistics.mcnemar(correct[loss][s], correct[baseline][s]) for s in seeds]
    favour = {name: sum(t.p < statistics.LEVEL and (t.only_a > t.only_b) == (name == loss)
                        for t in tests) for name in (loss, baseline)}
    return [
        f"  Per test example, exact McNemar per seed: {loss} alone right on "
        f"{np.mean([t.only_a for t in tests]):.1f} examples and {baseline} alone on "
        f"{np.mean([t.only_b for t in tests]):.1f} (means over {len(seeds)} seeds of "
        f"{len(correct[loss][seeds[0]]):,} examples); p < {statistics.LEVEL} in favour of {loss} "
        f"in {favour[loss]} seeds, of {baseline} in {favour[baseline]}."
    ]


def paired_difference(runs: dict, loss: str, baseline: str, key: str = "error",
                      what: str = "test error", scale: float = 100.0, unit: str = " points",
                      records: str = "test", digits: int = 2) -> str:
    """Test metric ``key`` (times ``scale``) of ``loss`` minus ``baseline``'s, paired by seed
    (same init and data order), analysed by ``experiments.statistics.paired``; ``records``
    "scaled" for the metrics after temperature scaling; differences shown to ``digits``."""
    values = {name: {m["seed"]: m[key] * scale for m in runs[name][records]} for name in (loss, baseline)}
    seeds = sorted(set(values[loss]) & set(values[baseline]))
    if len(seeds) < 2:
        return f"- {loss} vs {baseline}: fewer than 2 paired seeds."
    result = statistics.paired([values[loss][s] - values[baseline][s] for s in seeds])
    lower = loss if result.mean < 0 else baseline
    verdict = (f"{lower} lower" if result.resolved else
               f"not resolved (smallest detectable difference {result.detectable:.{digits}f}{unit})")
    return (
        f"- {loss} minus {baseline}, {what}: {result.mean:+.{digits}f}{unit} over {result.seeds} paired "
        f"seeds, t 95 % interval [{result.low:+.{digits}f}, {result.high:+.{digits}f}], exact sign-flip "
        f"p = {result.sign_flip_p:.3f}, detectable with 80 % power: {result.detectable:.{digits}f}{unit}: "
        f"**{verdict}**."
    )


def nll_differences(runs: dict, loss: str, baseline: str) -> list[str]:
    """``paired_difference`` lines of the test NLL, and of the T-scaled test NLL where both
    losses have it, in nats to 4 decimals."""
    lines = [paired_difference(runs, loss, baseline, "nll", "test NLL", 1.0, " nats", digits=4)]
    if runs[loss]["scaled"] and runs[baseline]["scaled"]:
        lines.append(paired_difference(runs, loss, baseline, "nll", "T-scaled test NLL", 1.0,
                                       " nats", "scaled", digits=4))
    return lines


def with_edge_mark(value: float, axis: str, chosen: dict, tried: list[dict], bounds: dict) -> str:
    """``value``, marked when it sits at an end of the values tried along ``axis``: "(edge)",
    or "(edge, bound)" when the next step lies outside the axis's bounds."""
    edge = comparison.beyond_edge(comparison.line(tried, chosen, axis), value, bounds[axis])
    return f"{value:.3g}" if edge is None else f"{value:.3g} (edge{'' if edge[1] else ', bound'})"


def _column(test: list[dict], key: str, scale: float = 1.0, digits: int = 3, transform=None) -> str:
    values = [m[key] for m in test]
    if any(v is None for v in values):
        return "-"
    values = np.asarray(values, float) if transform is None else transform(np.asarray(values, float))
    return mean_std(values, scale, digits)


def _is_language_model(config: dict) -> bool:
    return config["model"] == "ngram"


def _is_factored(config: dict, loss: str) -> bool:
    return config["output_layer"] == "factored" and losses.get(loss).on_statistics is not None


def _budget(config: dict) -> str:
    stopping = ("no early stopping" if config["patience"] is None
                else f"early stopping with patience {config['patience']} on validation NLL "
                     "(error for squared error and the Z-loss), the best epoch tested")
    return (f"up to {config['max_epochs']} epochs of {OPTIMIZER_NAMES[config['optimizer']]} "
            f"({stopping}), batch {config['batch_size']}")


def render(experiment: dict, runs: dict) -> str:
    config, command = experiment["config"], experiment["command"]
    seeds = sorted({m["seed"] for run in runs.values() for m in run["ends"]})
    language_model = _is_language_model(config)
    lines = [
        f"# {config['name']}: {config['dataset']}, {config['model']} {tuple(config['widths'])}",
        "",
        f"Generated by `{command.split(' --')[0].replace(' run ', ' tables ', 1)}` from the run "
        "directories under `runs/` and "
        f"the effective config in `config.json`, made by `{command}`.",
        f"Test-set metrics, mean +- std over {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
        f"{_budget(config)}"
        + (f", on the first {config['train_subset']:,} training examples in the data set's "
           "fixed order"
           if config.get("train_subset") else "")
        + f". Each loss's learning rate (starting from {list(config['learning_rates'])}) and "
        "hyperparameters were chosen on the validation split, widening the grids past a chosen end "
        f"(README, the comparison protocol), with seeds {list(config['tuning_seeds'])}; the test "
        "set was not used to choose.",
    ]
    if config["description"]:
        lines.append(config["description"])
    if language_model:
        lines.append(
            "Perplexity is exp(test NLL per token) under the model's own normalized probabilities "
            "(softmax for the Z-loss); squared error defines no distribution, so it has accuracies only. "
            + TEMPERATURE_NOTE + " Top-k accuracy: the next token is among the k most probable.")
    else:
        lines.append(
            "NLL, ECE (15 bins) and Brier score use the model's own normalized probabilities (softmax "
            "for the Z-loss; the plain normalizer for the soft-margin losses); squared error defines none. "
            + TEMPERATURE_NOTE)
    missing = [loss for loss in config["losses"] if loss not in runs]
    if missing:
        lines += ["", f"**Incomplete**: no finished final run yet for {', '.join(missing)}."]
    if language_model:
        header = ("| loss | learning rate | hyperparameter | test perplexity | T-scaled perplexity "
                  "| top-1 accuracy (%) | top-10 accuracy (%) | epochs | train tokens/s per model "
                  "| train s/epoch per model | train temp. memory (MiB) |")
    else:
        header = ("| loss | learning rate | hyperparameter | test error (%) | test NLL | test ECE (%) "
                  "| test Brier | T-scaled NLL | T-scaled ECE (%) | temperature | epochs "
                  "| train examples/s per model |")
    lines += ["", header, "|---" * header.count(" | ") + "|---|"]
    bounds = configs.Config(**config).bounds
    for loss, run in runs.items():
        test = run["test"]
        chosen = {"learning_rate": run["run"]["learning_rates"][0], **run["run"]["hyper"]}
        shown = {k: with_edge_mark(v, k, chosen, run["tried"], bounds) for k, v in chosen.items()}
        hyper = ", ".join(f"{k} = {v}" for k, v in shown.items() if k != "learning_rate") or "-"
        diverged = len(run["ends"]) - len(test)
        columns = 4 if language_model else 7
        scaled = run["scaled"] or [{"nll": None, "ece": None, "temperature": None}]
        if diverged:
            metrics = " | ".join([f"diverged ({diverged} of {len(run['ends'])} seeds)"] + ["-"] * (columns - 1))
        elif language_model:
            metrics = (f"{_column(test, 'nll', digits=1, transform=np.exp)} "
                       f"| {_column(scaled, 'nll', digits=1, transform=np.exp)} "
                       f"| {_column(test, 'error', 100, 2, lambda e: 1 - e)} "
                       f"| {_column(test, 'top10_accuracy', 100, 2)}")
        else:
            metrics = (f"{_column(test, 'error', 100, 2)} | {_column(test, 'nll')} "
                       f"| {_column(test, 'ece', 100, 2)} | {_column(test, 'brier')} "
                       f"| {_column(scaled, 'nll')} | {_column(scaled, 'ece', 100, 2)} "
                       f"| {_column(scaled, 'temperature', digits=2)}")
        speed = f"{throughput(run['history']):,.0f}"
        if language_model:
            memory = run["env"].get("train_epoch_temporary_bytes")
            speed += (f" | {seconds_per_epoch(run['history']):.1f} | "
                      + ("-" if memory is None else f"{memory / 2**20:,.1f}"))
        layer = " (factored)" if _is_factored(config, loss) else ""
        lines.append(f"| {loss}{layer} | {shown['learning_rate']} | {hyper} | {metrics} "
                     f"| {epochs_text(run['ends'], config['max_epochs'])} | {speed} |")
    reference = experiment.get("dense_reference")
    if reference:
        speed = [f"{reference['train_examples'] / reference['train_seconds']:,.0f}"]
        if language_model:
            speed += [f"{reference['train_seconds']:.1f}",
                      f"{reference['train_epoch_temporary_bytes'] / 2**20:,.1f}"]
        blanks = ["-"] * (header.count(" | ") - len(speed))
        lines.append("| *log-softmax, dense logits* | " + " | ".join(blanks + speed) + " |")
    names = {"uniform": "uniform guess", "prior": "unigram" if language_model else "class prior"}
    for name, b in sorted(experiment.get("baselines", {}).items(), key=lambda item: item[0] != "uniform"):
        metrics = (f"{np.exp(b['nll']):.1f} | - | {100 * (1 - b['error']):.2f} | {100 * b['top10_accuracy']:.2f}"
                   if language_model else
                   f"{100 * b['error']:.2f} | {b['nll']:.3f} | - | {b['brier']:.3f} | - | - | -")
        lines.append(f"| *{names[name]}* | - | - | {metrics} | - | - |" + (" - | - |" if language_model else ""))
    if "bayes_error" in experiment:
        lines.append(f"| *Bayes error* | - | - | {100 * experiment['bayes_error']:.2f} | - | - | - | - "
                     "| - | - | - | - |")
    lines += [
        "",
        *(["*uniform guess*, *class prior* / *unigram*: baselines that ignore the input: the "
           "uniform distribution, and the training labels' frequencies with add-one smoothing "
           "(its prediction is the most frequent class)."] if "baselines" in experiment else []),
        *(["*Bayes error*: the test error of the best possible classifier, which knows the "
           "teacher's label distribution."] if "bayes_error" in experiment else []),
        *(["*log-softmax, dense logits*: the same model with log-softmax through the (batch, D) "
           "logits instead of its linear loss, for speed and memory only: one epoch timed after "
           "a compiling one, and that epoch's compiled temporary memory, measured when the "
           "comparison started (on the machine in config.json)."] if reference else []),
        "(edge): the chosen value is at an end of the values tried along its axis (the other "
        "coordinates at their chosen values); a wider grid might have done better. (edge, bound): "
        "the next step lies outside the config's bounds, so tuning did not widen further.",
        *(["(factored): the output layer was trained by softfam's factored layer (exact SGD on "
           "the statistics, O(d^2) per example); the other losses used the dense layer."]
          if any(_is_factored(config, loss) for loss in runs) else []),
        "Epochs: the range over seeds of the best validation epoch (the one tested) and of the "
        "epoch training stopped at; \"not stopped early\": the model ran to max_epochs and may "
        "not have converged.",
        f"Training throughput: {'tokens' if language_model else 'examples'} per second per model "
        "on this run's machine (env.json), the median over epochs after each model's first; the "
        "models of a run train one after another."
        + (" Train temp. memory: the temporary memory of the compiled training epoch (XLA's "
           "memory analysis, in env.json), the logits' among it unless the output layer "
           "avoids them." if language_model else ""),
        "",
    ]
    if language_model:
        lines += validation_perplexity_by_epoch(runs) + perplexity_by_frequency(runs, experiment)
    lines += [
        "## Does the paper's claim hold here?",
        "",
    ]
    compared = [(a, b) for a, b in PAIRED if a in runs and b in runs]
    if language_model:
        lines += [
            "de Brebisson & Vincent (2016) report that with many classes (Penn Treebank, 10k words) "
            "log-softmax beats log-Taylor and log-spherical in perplexity. Paired by seed, on the "
            "test NLL per token (the log of the perplexity):",
            "",
        ]
        for a, b in compared:
            lines += nll_differences(runs, a, b)
    else:
        lines += [
            "de Brebisson & Vincent (2016) report, with 10 classes, log-Taylor < log-spherical < "
            "log-softmax in test error. Paired by seed:",
            "",
        ]
        for a, b in compared:
            lines += [paired_difference(runs, a, b), *per_example_difference(runs, a, b),
                      *nll_differences(runs, a, b)]
        baseline = PAIRED[0][1]
        others = [loss for loss in runs if loss != baseline and loss not in dict(PAIRED)]
        if baseline in runs and others:
            lines += ["", f"The other losses against {baseline}, paired by seed:", ""]
            lines += [paired_difference(runs, loss, baseline) for loss in others]
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


def by_epoch(history: list[dict], key: str) -> dict[int, list[float]]:
    """Each epoch's validation values of ``key`` over the models that trained that epoch."""
    values: dict[int, list[float]] = {}
    for r in validation_records(history):
        if r[key] is not None:
            values.setdefault(r["epoch"], []).append(r[key])
    return values


def validation_perplexity_by_epoch(runs: dict) -> list[str]:
    """Lines of a table of each loss's validation perplexity after each epoch, mean over the
    seeds still training: it shows where training went past the best epoch."""
    with_distribution = {loss: by_epoch(run["history"], "nll") for loss, run in runs.items()}
    with_distribution = {loss: nll for loss, nll in with_distribution.items() if nll}
    if not with_distribution:
        return []
    epochs = sorted({e for nll in with_distribution.values() for e in nll})
    lines = ["## Validation perplexity after each epoch", "",
             "Mean of exp(validation NLL per token) over the seeds still training at that epoch.",
             "", "| loss | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
             "|---" * (len(epochs) + 1) + "|"]
    for loss, nll in with_distribution.items():
        cells = [f"{np.mean(np.exp(nll[e])):.1f}" if e in nll else "-" for e in epochs]
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return lines + [""]


def perplexity_by_frequency(runs: dict, experiment: dict) -> list[str]:
    """Lines of a table of test perplexity per frequency bucket of the next word
    (``metrics.class_buckets``), mean +- std over seeds, beside the baselines'; a scale-free
    loss (the Z-loss) after temperature scaling. Empty for runs that did not record buckets."""
    measured = {}
    for loss, run in runs.items():
        scale_free = losses.get(loss).scale_free
        records = run["scaled"] if scale_free else run["test"]
        if records and records[0].get("bucket_nll"):
            measured[loss + (" (T-scaled)" if scale_free else "")] = records
    if not measured:
        return []
    counts = np.asarray(next(iter(measured.values()))[0]["bucket_count"])
    edges = (0, *metrics.BUCKET_EDGES)
    names = [f"ranks {low + 1:,}-{high:,}" for low, high in zip(edges, edges[1:])] + [f"ranks > {edges[-1]:,}"]
    shown = [b for b in range(metrics.NUM_BUCKETS) if counts[b]]
    lines = ["## Test perplexity by frequency of the next word", "",
             "The test tokens grouped by their word's rank in the training frequencies; "
             "exp(mean NLL per token) within the group, mean +- std over seeds.", "",
             "| loss | " + " | ".join(f"{names[b]} ({100 * counts[b] / counts.sum():.1f} % of tokens)"
                                      for b in shown) + " |",
             "|---" * (len(shown) + 1) + "|"]
    for loss, records in measured.items():
        cells = [mean_std([np.exp(r["bucket_nll"][b]) for r in records], digits=1) for b in shown]
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    for name, baseline in experiment.get("baselines", {}).items():
        if baseline.get("bucket_nll"):
            lines.append(f"| *{'unigram' if name == 'prior' else 'uniform guess'}* | "
                         + " | ".join(f"{np.exp(baseline['bucket_nll'][b]):.1f}" for b in shown) + " |")
    return lines + [""]


def loss_colour(loss: str) -> str:
    """The loss's colour, the same in every panel and plot (its place among all losses)."""
    return f"C{list(losses.LOSSES).index(loss) % 10}"


def _plain_log_axis(axes, axis: str = "y") -> None:
    """A log axis with plain-number tick labels (0.5, 2, 10) instead of powers of ten."""
    formatter = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    target = axes.yaxis if axis == "y" else axes.xaxis
    target.set_major_formatter(formatter)
    target.set_minor_formatter(formatter)


def plot_learning_curves(runs: dict, path: Path, title: str) -> None:
    """Validation error and NLL by epoch, mean +- std over the seeds still training; a loss
    with diverged seeds is labelled so and its curve ends with an x."""
    figure, panels = plt.subplots(1, 2, figsize=(11, 4))
    for axes, key, scale, label in ((panels[0], "error", 100, "validation error (%)"),
                                    (panels[1], "nll", 1, "validation NLL")):
        for loss, run in runs.items():
            values = by_epoch(run["history"], key)
            if not values:
                continue
            epochs = sorted(values)
            mean = np.array([np.mean(values[e]) for e in epochs]) * scale
            std = np.array([np.std(values[e]) for e in epochs]) * scale
            diverged = sum(e["diverged"] for e in run["ends"])
            name = loss + (f" (diverged: {diverged} of {len(run['ends'])})" if diverged else "")
            axes.plot(epochs, mean, color=loss_colour(loss), label=name)
            axes.fill_between(epochs, mean - std, mean + std, color=loss_colour(loss), alpha=0.2)
            if diverged:
                axes.plot(epochs[-1:], mean[-1:], "x", color=loss_colour(loss), markersize=9)
        axes.set(xlabel="epoch", ylabel=label, yscale="log")
        _plain_log_axis(axes)
        axes.legend(fontsize=7)
    figure.suptitle(f"{title}: mean +- std over seeds")
    figure.tight_layout()
    save(figure, path)


def plot_reliability(runs: dict, path: Path, title: str) -> None:
    """Accuracy against confidence per bin, all seeds pooled, with each bin's example count;
    the losses with probabilities of their own (not the Z-loss: ``final_runs``)."""
    calibrated = {loss: run for loss, run in runs.items() if run["test"] and run["test"][0].get("bins")}
    columns = 4
    rows = max(1, -(-len(calibrated) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for ax in axes.flat[len(calibrated):]:
        ax.axis("off")
    for ax, (loss, run) in zip(axes.flat, calibrated.items()):
        count = np.sum([m["bins"]["count"] for m in run["test"]], 0)
        confidence = np.sum([m["bins"]["confidence"] for m in run["test"]], 0)
        correct = np.sum([m["bins"]["correct"] for m in run["test"]], 0)
        filled = count > 0
        centers = (np.arange(count.size) + 0.5) / count.size
        bars = ax.bar(centers[filled], correct[filled] / count[filled], width=1 / count.size,
                      color=loss_colour(loss), edgecolor="black")
        ax.bar_label(bars, labels=[f"{c:,.0f}" for c in count[filled]], fontsize=5, rotation=90)
        ax.plot(confidence[filled] / count[filled], correct[filled] / count[filled], "k.")
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        diverged = sum(e["diverged"] for e in run["ends"])
        ax.set(title=loss + (f" ({diverged} diverged)" if diverged else ""), xlabel="confidence",
               ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.15))
    figure.suptitle(f"{title}: test-set reliability, all seeds pooled (bars: accuracy, with the "
                    "number of examples; dots: mean confidence)")
    figure.tight_layout()
    save(figure, path)


def save(figure, path: Path) -> None:
    with open_atomically(path, "wb") as f:
        figure.savefig(f, format="png", dpi=100)
    plt.close(figure)


def write(output: Path) -> str:
    """Writes the table and plots of the comparison in ``output``; returns the table."""
    output = Path(output)
    experiment = read_experiment(output)
    runs = final_runs(output)
    if not runs:
        raise FileNotFoundError(f"no finished final run under {output / 'runs'}")
    table = render(experiment, runs)
    write_text_atomically(output / "table.md", table)
    plot_learning_curves(runs, output / "learning_curves.png", experiment["config"]["name"])
    plot_reliability(runs, output / "reliability.png", experiment["config"]["name"])
    return table
