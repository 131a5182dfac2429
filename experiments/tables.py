"""The table of a comparison, rendered from its records (``experiments.records``) alone. No JAX.

``python -m experiments tables <experiment>`` reads ``config.json`` and ``records.jsonl.gz``
and writes ``table.md`` and the plots (``experiments.plots``) beside them. A row is a loss's
final models; each column is a ``Column`` of ``CLASSIFIER_COLUMNS`` or ``LANGUAGE_MODEL_COLUMNS``.
Numbers are mean +- sample standard deviation over the seeds; the paired comparisons are
analysed per seed by ``experiments.statistics`` (t interval, exact sign-flip test, smallest
detectable difference) and per test example by the exact McNemar test. What the numbers mean
for the papers' claims is written by hand in each experiment's ``findings.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from experiments import plots, records, statistics, tuning
from experiments.io import write_text_atomically

OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "plain SGD"}
OWN_PROBABILITY_METRICS = ("nll", "ece", "brier", "bins", "bucket_nll")
BUCKET_EDGES = (10, 100, 1000, 10_000)  # as experiments.metrics
PAIRED = (("log-taylor-2", "log-softmax"), ("log-spherical", "log-softmax"),
          ("log-taylor-2", "label-smoothed-log-softmax"),
          ("log-spherical", "label-smoothed-log-softmax"))
# The margins of the equivalence tests. Error: 0.45 points, the gap that de Brebisson &
# Vincent report between log-softmax and log-Taylor on CIFAR-10, the smallest difference
# their 10-class claim rests on. NLL: 0.01 nats, a 1 % change in perplexity.
MARGINS = {"error": 0.45, "nll": 0.01}
TEMPERATURE_NOTE = (
    "T-scaled: the logits divided by the temperature that minimises each model's validation NLL "
    "(Guo et al. 2017), then the same normalizer. The Z-loss ignores the logits' scale, so its "
    "unscaled probabilities have an arbitrary temperature and are not shown.")


@dataclass
class Row:
    """A loss's finished final models, as the columns read them."""

    loss: str
    point: dict  # the chosen learning rate and hyperparameters
    models: list[dict]  # its final models' records
    test: list[dict]  # test metrics of the models that did not diverge, with their seeds
    scaled: list[dict]  # T-scaled test metrics, with the temperature
    mixed: list[dict]  # test metrics mixed with the unigram, with the weight
    tried: list[dict]  # the points its tuning tried
    text: dict  # the cells shown for the chosen point's hyperparameters
    properties: dict  # the loss's properties (experiments.losses.properties)


def without_own_probabilities(metrics: dict) -> dict:
    """``metrics`` with those of the model's own probabilities set to None: for a scale-free
    loss (the Z-loss) they have an arbitrary temperature."""
    return {**metrics, **{key: None for key in OWN_PROBABILITY_METRICS if key in metrics}}


def chosen_text(point: dict, tried: list[dict], space: dict, tuning_mode: str) -> dict:
    """Each hyperparameter of ``point`` as shown: its value, marked "(edge)" when it sits at an
    end of the grid tried along its axis ("(edge, bound)" when the next step lies outside the
    bounds), or "(near edge)" within 10 % of the random search's range end; no mark where
    nothing was tried here."""
    shown = {}
    for name, value in point.items():
        axis = space[name]
        if not tried:  # chosen by another comparison (points_from), whose table marks it
            mark = ""
        elif tuning_mode == "random":
            mark = " (near edge)" if len(axis["values"]) > 1 and tuning.near_edge(value, axis) else ""
        else:
            edge = (None if name not in tuning.widened(space) else
                    tuning.beyond_edge(tuning.line(tried, point, name), value, axis["bounds"]))
            mark = "" if edge is None else f" (edge{'' if edge[1] else ', bound'})"
        shown[name] = f"{value:.3g}{mark}"
    return shown


def rows(comparison: dict, models: list[dict]) -> dict[str, Row]:
    """A ``Row`` for each loss whose final models have all finished."""
    config = comparison["config"]
    found = {}
    for loss in config["losses"]:
        finals = [m for m in models if m["loss"] == loss and m["stage"] == "final"]
        if sorted(m["seed"] for m in finals) != sorted(config["seeds"]):
            continue
        properties = comparison["losses"][loss]
        judged = without_own_probabilities if properties["scale_free"] else dict
        point = finals[0]["point"]
        tried = [m["point"] for m in models if m["loss"] == loss and m["stage"] == "tune"]
        found[loss] = Row(
            loss, point,
            [{**m, "curve": [judged(e) for e in m["curve"]]} for m in finals],
            [judged({"seed": m["seed"], **m["test"]}) for m in finals if not m["diverged"]],
            [{"seed": m["seed"], "temperature": m["temperature"], **m["test_scaled"]}
             for m in finals if "test_scaled" in m],
            [{"seed": m["seed"], "unigram_weight": m["unigram_weight"], **m["test_interpolated"]}
             for m in finals if "test_interpolated" in m and not properties["scale_free"]],
            tried, chosen_text(point, tried, properties["space"], config["tuning"]), properties)
    return found


def mean_std(values, scale: float = 1.0, digits: int = 2) -> str:
    values = np.asarray(values, float) * scale
    return f"{values.mean():.{digits}f} +- {values.std(ddof=1) if values.size > 1 else 0.0:.{digits}f}"


def _timed(models: list[dict]) -> list[tuple[float, float]]:
    """``(training seconds per epoch, examples per second)`` of each validation after the
    models' first epoch, which includes compilation (of all validations if none is later)."""
    timed = []
    for model in models:
        previous = 0
        for entry in model["curve"]:
            seconds_per_epoch = entry["train_seconds"] / (entry["epoch"] - previous)
            timed.append((entry["epoch"], seconds_per_epoch,
                          entry["train_examples"] / entry["train_seconds"]))
            previous = entry["epoch"]
    later = [t for t in timed if t[0] > 1] or timed
    return [t[1:] for t in later]


def throughput(models: list[dict]) -> float:
    """Training examples per second per model: the median over validations after the first
    epoch."""
    return float(np.median([speed for _, speed in _timed(models)]))


def seconds_per_epoch(models: list[dict]) -> float:
    """Training seconds per epoch of one model: the median over validations after the first."""
    return float(np.median([seconds for seconds, _ in _timed(models)]))


def capped(models: list[dict], max_epochs: int) -> int:
    """How many of ``models`` ran to ``max_epochs``: not stopped early."""
    return sum(m["stop_epoch"] == max_epochs for m in models)


def epochs_text(models: list[dict], max_epochs: int) -> str:
    """The models' best and stopping epochs, "best 7-9, stopped 12-14", flagged "(k of n not
    stopped early)" when some ran to ``max_epochs``."""
    def span(values):
        return f"{min(values):g}" if min(values) == max(values) else f"{min(values):g}-{max(values):g}"
    models = [m for m in models if not m["diverged"]]
    if not models:
        return "-"
    text = f"best {span([m['best_epoch'] for m in models])}, stopped {span([m['stop_epoch'] for m in models])}"
    at_limit = capped(models, max_epochs)
    return text + (f" (**{at_limit} of {len(models)} not stopped early**)" if at_limit else "")


def _cell(metrics: list[dict], key: str, scale: float = 1.0, digits: int = 3,
          transform: Optional[Callable] = None) -> str:
    values = [m.get(key) for m in metrics]
    if not values or any(v is None for v in values):
        return "-"
    values = np.asarray(values, float)
    return mean_std(values if transform is None else transform(values), scale, digits)


@dataclass(frozen=True)
class Column:
    """A table column: its header, its cell for a loss's row (given the config), its cell
    for a baseline (None: "-"), and whether it is a test metric (a row with diverged seeds
    shows none)."""

    header: str
    cell: Callable[[Row, dict], str]
    baseline: Optional[Callable[[dict], str]] = None
    metric: bool = False
    optional: bool = False  # shown only where some row has a value (newer records)


def _test(header: str, cell: Callable[[Row], str],
          baseline: Optional[Callable[[dict], str]] = None, optional: bool = False) -> Column:
    """A test-metric column."""
    return Column(header, lambda row, config: cell(row), baseline, metric=True, optional=optional)


def _hyperparameters(row: Row, config: dict) -> str:
    """The chosen values of the hyperparameters other than the learning rate that the loss
    uses (not fixed at 0)."""
    shown = [f"{name} = {text}" for name, text in row.text.items()
             if name != "learning_rate" and any(p[name] != 0 for p in [row.point, *row.tried])]
    return ", ".join(shown) or "-"


def _factored(row: Row, config: dict) -> str:
    return (" (factored)" if config["output_layer"] == "factored"
            and row.properties["spherical_family"] else "")


COMMON_START = [
    Column("loss", lambda row, config: row.loss + _factored(row, config)),
    Column("learning rate", lambda row, config: row.text["learning_rate"]),
    Column("hyperparameter", _hyperparameters),
]
CLASSIFIER_COLUMNS = [
    *COMMON_START,
    _test("test error (%)", lambda r: _cell(r.test, "error", 100, 2), lambda b: f"{100 * b['error']:.2f}"),
    _test("test NLL", lambda r: _cell(r.test, "nll"), lambda b: f"{b['nll']:.3f}"),
    _test("test ECE (%)", lambda r: _cell(r.test, "ece", 100, 2)),
    _test("test Brier", lambda r: _cell(r.test, "brier"), lambda b: f"{b['brier']:.3f}"),
    _test("T-scaled NLL", lambda r: _cell(r.scaled, "nll")),
    _test("T-scaled ECE (%)", lambda r: _cell(r.scaled, "ece", 100, 2)),
    _test("temperature", lambda r: _cell(r.scaled, "temperature", digits=2)),
    Column("epochs", lambda row, config: epochs_text(row.models, config["max_epochs"])),
    Column("train examples/s per model", lambda row, config: f"{throughput(row.models):,.0f}"),
]
LANGUAGE_MODEL_COLUMNS = [
    *COMMON_START,
    _test("test perplexity", lambda r: _cell(r.test, "nll", digits=1, transform=np.exp),
          lambda b: f"{np.exp(b['nll']):.1f}"),
    _test("T-scaled perplexity", lambda r: _cell(r.scaled, "nll", digits=1, transform=np.exp)),
    _test("unigram-mixed perplexity", lambda r: _cell(r.mixed, "nll", digits=1, transform=np.exp),
          optional=True),
    _test("unigram weight", lambda r: _cell(r.mixed, "unigram_weight", digits=3), optional=True),
    _test("top-1 accuracy (%)", lambda r: _cell(r.test, "error", 100, 2, lambda e: 1 - e),
          lambda b: f"{100 * (1 - b['error']):.2f}"),
    _test("top-10 accuracy (%)", lambda r: _cell(r.test, "top10_accuracy", 100, 2),
          lambda b: f"{100 * b['top10_accuracy']:.2f}"),
    Column("epochs", lambda row, config: epochs_text(row.models, config["max_epochs"])),
    Column("train tokens/s per model", lambda row, config: f"{throughput(row.models):,.0f}"),
    Column("train s/epoch per model", lambda row, config: f"{seconds_per_epoch(row.models):.1f}"),
    Column("train temp. memory (MiB)", lambda row, config: (
        "-" if row.models[0].get("train_epoch_temporary_bytes") is None
        else f"{row.models[0]['train_epoch_temporary_bytes'] / 2**20:,.1f}")),
]


def is_language_model(config: dict) -> bool:
    return config["model"] == "ngram"


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def results_table(comparison: dict, found: dict[str, Row]) -> list[str]:
    """The main table: a row per loss, the dense reference and the baselines."""
    config = comparison["config"]
    columns = [c for c in (LANGUAGE_MODEL_COLUMNS if is_language_model(config) else CLASSIFIER_COLUMNS)
               if not c.optional or any(c.cell(row, config) != "-" for row in found.values())]
    lines = [_line([c.header for c in columns]), "|---" * len(columns) + "|"]
    for row in found.values():
        diverged = len(row.models) - len(row.test)
        cells, shown = [], False
        for column in columns:
            if column.metric and diverged:
                cells.append("-" if shown else f"diverged ({diverged} of {len(row.models)} seeds)")
                shown = True
            else:
                cells.append(column.cell(row, config))
        lines.append(_line(cells))
    reference = comparison.get("dense_reference")
    if reference:
        speed = [f"{reference['train_examples'] / reference['train_seconds']:,.0f}"]
        if is_language_model(config):
            speed += [f"{reference['train_seconds']:.1f}",
                      f"{reference['train_epoch_temporary_bytes'] / 2**20:,.1f}"]
        lines.append(_line(["*log-softmax, dense logits*"] + ["-"] * (len(columns) - 1 - len(speed)) + speed))
    names = {"uniform": "uniform guess", "prior": "unigram" if is_language_model(config) else "class prior"}
    for name, baseline in sorted(comparison.get("baselines", {}).items(), key=lambda item: item[0] != "uniform"):
        lines.append(_line([f"*{names[name]}*"] + [
            "-" if c.baseline is None else c.baseline(baseline) for c in columns[1:]]))
    if "bayes_error" in comparison:
        lines.append(_line(["*Bayes error*"] + [
            f"{100 * comparison['bayes_error']:.2f}" if c.header == "test error (%)" else "-"
            for c in columns[1:]]))
    return lines


def _budget(config: dict) -> str:
    stopping = ("no early stopping" if config["patience"] is None
                else f"early stopping with patience {config['patience']} on validation NLL "
                     "(error for squared error and the Z-loss), the best "
                     + ("epoch" if config.get("eval_every") is None else "validation") + " tested")
    every = ("" if config.get("eval_every") is None
             else f", validated every {config['eval_every']} steps")
    return (f"up to {config['max_epochs']} epochs of {OPTIMIZER_NAMES[config['optimizer']]} "
            f"({stopping}{every}), batch {config['batch_size']}")


def _training(config: dict) -> str:
    """The regularization and schedule, when a config uses any."""
    parts = []
    if config.get("schedule", "constant") != "constant":
        parts.append(f"learning rate: linear warmup over {config['warmup_epochs']:g} epochs, then "
                     f"cosine decay to 0 at epoch {config['max_epochs']}")
    if config.get("clip_norm") is not None:
        parts.append(f"gradients clipped to global norm {config['clip_norm']:g}")
    return "; ".join(parts) + "." if parts else ""


def tuning_text(comparison: dict, found: dict[str, Row]) -> str:
    """How the hyperparameters were chosen, and the budget: models trained per loss."""
    config = comparison["config"]
    if config.get("points_from") is not None:
        return (f"Each loss trained with the hyperparameters that the comparison in "
                f"`{config['points_from']}` chose for it on its own validation split; none were "
                "tuned here, and no test set was used to choose.")
    seeds = list(config["tuning_seeds"])
    rates = next(iter(comparison["losses"].values()))["space"]["learning_rate"]["values"]
    if config.get("tuning", "grid") == "random":
        how = (f"learning rate (in [{min(rates):g}, {max(rates):g}]) and hyperparameters were "
               f"chosen on the validation split by a quasi-random (Halton) search of "
               f"{config['trials']} points per loss over the range each one's values span")
        budget = ", ".join(f"{loss} {len(row.tried)} ({len({json.dumps(p, sort_keys=True) for p in row.tried})} "
                           "points)" for loss, row in found.items())
    else:
        how = (f"learning rate (starting from {rates}) and hyperparameters were chosen on the "
               "validation split, widening the grids past a chosen end")
        budget = ", ".join(f"{loss} {len(row.tried)}" for loss, row in found.items())
    return (f"Each loss's {how}, with seeds {seeds}; the test set was not used to choose. "
            f"Tuning models trained per loss: {budget or '-'}.")


def _correct(found: dict[str, Row], name: str) -> dict[int, np.ndarray]:
    return {m["seed"]: records.unpack_correct(m["correct"], m["examples"])
            for m in found[name].test if "correct" in m}


def per_example_difference(found: dict[str, Row], loss: str, baseline: str) -> list[str]:
    """Per seed, the exact McNemar test of ``loss`` against ``baseline`` on the test examples,
    summed up over seeds, as a line, and the bootstrap interval of the error difference over
    seeds and test examples; no lines without per-example records."""
    correct = {name: _correct(found, name) for name in (loss, baseline)}
    seeds = sorted(set(correct[loss]) & set(correct[baseline]))
    if not seeds:
        return []
    tests = [statistics.mcnemar(correct[loss][s], correct[baseline][s]) for s in seeds]
    favour = {name: sum(t.p < statistics.LEVEL and (t.only_a > t.only_b) == (name == loss)
                        for t in tests) for name in (loss, baseline)}
    low, high = statistics.bootstrap_error_difference(
        [correct[loss][s] for s in seeds], [correct[baseline][s] for s in seeds])
    return [
        f"  Per test example, exact McNemar per seed: {loss} alone right on "
        f"{np.mean([t.only_a for t in tests]):.1f} examples and {baseline} alone on "
        f"{np.mean([t.only_b for t in tests]):.1f} (means over {len(seeds)} seeds of "
        f"{len(correct[loss][seeds[0]]):,} examples); p < {statistics.LEVEL} in favour of {loss} "
        f"in {favour[loss]} seeds, of {baseline} in {favour[baseline]}.",
        f"  Bootstrap over seeds and test examples (4,000 replicates), 95 % interval of the "
        f"test error difference: [{100 * low:+.2f}, {100 * high:+.2f}] points.",
    ]


def paired_difference(found: dict[str, Row], loss: str, baseline: str, key: str = "error",
                      what: str = "test error", scale: float = 100.0, unit: str = " points",
                      metrics: str = "test", digits: int = 2) -> list[str]:
    """Test metric ``key`` (times ``scale``) of ``loss`` minus ``baseline``'s, paired by seed
    (same init and data order), analysed by ``experiments.statistics.paired``; ``metrics``:
    the row's "test", "scaled" (after temperature scaling) or "mixed" (with the unigram)
    metrics. A difference not resolved gets a second line: its equivalence test within
    ``MARGINS[key]``."""
    values = {name: {m["seed"]: m[key] * scale for m in getattr(found[name], metrics)}
              for name in (loss, baseline)}
    seeds = sorted(set(values[loss]) & set(values[baseline]))
    if len(seeds) < 2:
        return [f"- {loss} vs {baseline}: fewer than 2 paired seeds."]
    differences = [values[loss][s] - values[baseline][s] for s in seeds]
    result = statistics.paired(differences)
    lower = loss if result.mean < 0 else baseline
    verdict = (f"{lower} lower" if result.resolved else
               f"not resolved (smallest detectable difference {result.detectable:.{digits}f}{unit})")
    lines = [
        f"- {loss} minus {baseline}, {what}: {result.mean:+.{digits}f}{unit} over {result.seeds} paired "
        f"seeds, t 95 % interval [{result.low:+.{digits}f}, {result.high:+.{digits}f}], exact sign-flip "
        f"p = {result.sign_flip_p:.3f}, detectable with 80 % power: {result.detectable:.{digits}f}{unit}: "
        f"**{verdict}**."
    ]
    if not result.resolved:
        same = statistics.equivalence(differences, MARGINS[key])
        lines.append(
            f"  Equivalence within +-{same.margin:g}{unit} (two one-sided t tests, t 90 % interval "
            f"[{same.low:+.{digits}f}, {same.high:+.{digits}f}], p = {same.p:.3f}): "
            f"**{'equivalent' if same.equivalent else 'inconclusive'}**.")
    return lines


def nll_differences(found: dict[str, Row], loss: str, baseline: str) -> list[str]:
    """``paired_difference`` lines of the test NLL, and of the T-scaled and unigram-mixed test
    NLL where both losses have them, in nats to 4 decimals."""
    lines = paired_difference(found, loss, baseline, "nll", "test NLL", 1.0, " nats", digits=4)
    for metrics, what in (("scaled", "T-scaled test NLL"), ("mixed", "unigram-mixed test NLL")):
        if getattr(found[loss], metrics) and getattr(found[baseline], metrics):
            lines += paired_difference(found, loss, baseline, "nll", what, 1.0, " nats",
                                       metrics=metrics, digits=4)
    return lines


def capped_note(comparison: dict, found: dict[str, Row], *losses: str) -> list[str]:
    """A line flagging the verdicts above it when final models of ``losses`` ran to the epoch
    cap; none otherwise."""
    max_epochs = comparison["config"]["max_epochs"]
    counts = {loss: capped(found[loss].models, max_epochs) for loss in losses}
    reasons = [f"{count} of {len(found[loss].models)} {loss} final models"
               for loss, count in counts.items() if count]
    if not reasons:
        return []
    return [f"  **Flagged**: {' and '.join(reasons)} ran to the {max_epochs}-epoch cap (not "
            "stopped early, so perhaps not converged); these verdicts compare such models."]


def paired_comparisons(comparison: dict, found: dict[str, Row]) -> list[str]:
    """log-Taylor-2 and log-spherical against log-softmax, paired by seed (and, for a
    classifier, per test example), then every other loss against log-softmax; and how many
    comparisons the section makes."""
    compared = [(a, b) for a, b in PAIRED if a in found and b in found]
    lines = []
    if is_language_model(comparison["config"]):
        intro = "Paired by seed, on the test NLL per token (the log of the perplexity):"
        for a, b in compared:
            lines += nll_differences(found, a, b) + capped_note(comparison, found, a, b)
    else:
        intro = "Paired by seed:"
        for a, b in compared:
            lines += [*paired_difference(found, a, b), *per_example_difference(found, a, b),
                      *nll_differences(found, a, b), *capped_note(comparison, found, a, b)]
        baseline = PAIRED[0][1]
        others = [loss for loss in found if loss not in {name for pair in PAIRED for name in pair}]
        if baseline in found and others:
            lines += ["", f"The other losses against {baseline}, paired by seed:", ""]
            lines += [line for loss in others for line in paired_difference(found, loss, baseline)]
    count = sum(line.startswith("- ") and "paired seeds" in line for line in lines)
    return ["## Paired comparisons", "", intro, "", *lines, "",
            f"{count} paired comparisons, each at level {statistics.LEVEL} without a correction "
            f"for multiplicity: where no difference exists, about {count * statistics.LEVEL:.1f} "
            "of them would be resolved by chance. Equivalence margins: "
            f"+-{MARGINS['error']:g} points of test error (the gap de Brebisson & Vincent report "
            f"between log-softmax and log-Taylor on CIFAR-10), +-{MARGINS['nll']:g} nats of NLL "
            "(a 1 % change in perplexity). The bootstrap interval covers the sampling of the "
            "test set as well as the seeds' spread; the t interval covers the seeds' only.", ""]


def validation_perplexity_by_epoch(found: dict[str, Row]) -> list[str]:
    """A table of each loss's validation perplexity after each validation, mean over the
    seeds still training: it shows where training went past the best one."""
    with_distribution = {loss: records.by_epoch(row.models, "nll") for loss, row in found.items()}
    with_distribution = {loss: nll for loss, nll in with_distribution.items() if nll}
    if not with_distribution:
        return []
    epochs = sorted({e for nll in with_distribution.values() for e in nll})
    lines = ["## Validation perplexity after each epoch", "",
             "Mean of exp(validation NLL per token) over the seeds still training at that epoch.",
             "", "| loss | " + " | ".join(f"epoch {e:g}" for e in epochs) + " |",
             "|---" * (len(epochs) + 1) + "|"]
    for loss, nll in with_distribution.items():
        cells = [f"{np.mean(np.exp(nll[e])):.1f}" if e in nll else "-" for e in epochs]
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return lines + [""]


def perplexity_by_frequency(comparison: dict, found: dict[str, Row]) -> list[str]:
    """A table of test perplexity per frequency bucket of the next word, mean +- std over
    seeds, beside the baselines'; a scale-free loss (the Z-loss) after temperature scaling."""
    measured = {}
    for loss, row in found.items():
        scale_free = row.properties["scale_free"]
        metrics = row.scaled if scale_free else row.test
        if metrics and metrics[0].get("bucket_nll"):
            measured[loss + (" (T-scaled)" if scale_free else "")] = metrics
    if not measured:
        return []
    counts = np.asarray(next(iter(measured.values()))[0]["bucket_count"])
    edges = (0, *BUCKET_EDGES)
    names = [f"ranks {low + 1:,}-{high:,}" for low, high in zip(edges, edges[1:])] + [f"ranks > {edges[-1]:,}"]
    shown = [b for b in range(len(names)) if counts[b]]
    lines = ["## Test perplexity by frequency of the next word", "",
             "The test tokens grouped by their word's rank in the training frequencies; "
             "exp(mean NLL per token) within the group, mean +- std over seeds.", "",
             "| loss | " + " | ".join(f"{names[b]} ({100 * counts[b] / counts.sum():.1f} % of tokens)"
                                      for b in shown) + " |",
             "|---" * (len(shown) + 1) + "|"]
    for loss, metrics in measured.items():
        cells = [mean_std([np.exp(m["bucket_nll"][b]) for m in metrics], digits=1) for b in shown]
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    for name, baseline in comparison.get("baselines", {}).items():
        if baseline.get("bucket_nll"):
            lines.append(f"| *{'unigram' if name == 'prior' else 'uniform guess'}* | "
                         + " | ".join(f"{np.exp(baseline['bucket_nll'][b]):.1f}" for b in shown) + " |")
    return lines + [""]


def notes(comparison: dict, found: dict[str, Row]) -> list[str]:
    config = comparison["config"]
    language_model = is_language_model(config)
    return [
        *(["*uniform guess*, *class prior* / *unigram*: baselines that ignore the input: the "
           "uniform distribution, and the training labels' frequencies with add-one smoothing "
           "(its prediction is the most frequent class)."] if "baselines" in comparison else []),
        *(["*Bayes error*: the test error of the best possible classifier, which knows the "
           "teacher's label distribution."] if "bayes_error" in comparison else []),
        *(["*log-softmax, dense logits*: the same model with log-softmax through the (batch, D) "
           "logits instead of its linear loss, for speed and memory only: one epoch timed after "
           "a compiling one, and that epoch's compiled temporary memory, measured when the "
           "comparison started."] if comparison.get("dense_reference") else []),
        *(["unigram-mixed: the model's probabilities mixed with the unigram's, "
           "(1 - w) p + w prior, with the weight w that minimises the validation NLL: how much "
           "of a loss's perplexity smoothing towards the word frequencies still improves."]
          if any(row.mixed for row in found.values()) and language_model else []),
        "(edge): the chosen value is at an end of the values tried along its axis (the other "
        "coordinates at their chosen values); a wider grid might have done better. (edge, bound): "
        "the next step lies outside the config's bounds, so tuning did not widen further. "
        "(near edge): within 10 % of the end of its random-search range.",
        *(["(factored): the output layer was trained by softfam's factored layer (exact SGD on "
           "the statistics, O(d^2) per example); the other losses used the dense layer."]
          if any(_factored(row, config) for row in found.values()) else []),
        "Epochs: the range over seeds of the best validation epoch (the one tested) and of the "
        "epoch training stopped at; \"not stopped early\": the model ran to max_epochs and may "
        "not have converged.",
        f"Training throughput: {'tokens' if language_model else 'examples'} per second per model "
        "on this run's machine (environments.json), the median over validations after each "
        "model's first epoch; the models of a run train one after another."
        + (" Train temp. memory: the temporary memory of the compiled training epoch (XLA's "
           "memory analysis), the logits' among it unless the output layer avoids them."
           if language_model else ""),
        "",
    ]


def render(comparison: dict, models: list[dict]) -> str:
    config, command = comparison["config"], comparison["command"]
    found = rows(comparison, models)
    seeds = sorted({m["seed"] for row in found.values() for m in row.models})
    language_model = is_language_model(config)
    lines = [
        f"# {config['name']}: {config['dataset']}, {config['model']} {tuple(config['widths'])}",
        "",
        f"Generated by `{command.split(' --')[0].replace(' run ', ' tables ', 1)}` from the records "
        f"(`records.jsonl.gz`) and the effective config in `config.json`, made by `{command}`.",
        f"Test-set metrics, mean +- std over {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
        f"{_budget(config)}"
        + (f", on the first {config['train_subset']:,} training examples in the data set's "
           "fixed order" if config.get("train_subset") else "")
        + f". {tuning_text(comparison, found)}",
    ]
    lines += [text for text in (_training(config), config["description"]) if text]
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
    missing = [loss for loss in config["losses"] if loss not in found]
    if missing:
        lines += ["", f"**Incomplete**: no finished final models yet for {', '.join(missing)}."]
    lines += ["", *results_table(comparison, found), "", *notes(comparison, found)]
    if language_model:
        lines += validation_perplexity_by_epoch(found) + perplexity_by_frequency(comparison, found)
    lines += paired_comparisons(comparison, found)
    return "\n".join(lines) + "\n"


def write(output: Path) -> str:
    """Writes the table and plots of the comparison in ``output``; returns the table."""
    output = Path(output)
    comparison = records.read_comparison(output)
    models = records.read(output)
    found = rows(comparison, models)
    if not found:
        raise FileNotFoundError(f"no finished final models in {output / records.RECORDS}")
    table = render(comparison, models)
    write_text_atomically(output / "table.md", table)
    name = comparison["config"]["name"]
    plots.learning_curves(found, output / "learning_curves.png", name)
    plots.reliability(found, output / "reliability.png", name)
    return table
