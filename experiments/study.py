"""A study: one comparison per size, everything else fixed. The size is the number of classes
D (the output-size studies) or, for a study whose comparisons differ in ``train_subset``, the
number of training examples N (a data-size study).

``python -m experiments run <study>`` runs each comparison (config) of a study into
``<output>/<comparison name>/`` (tables and plots of its own, see ``experiments.tables``), then writes
``<output>/table.md`` and ``<output>/output_size.png`` (``data_size.png``): each loss's test
error and NLL (perplexity, for language models) against the size, and where log-softmax and
each other loss trade places.

At each size, each other loss's metric minus log-softmax's is analysed paired by seed
(``experiments.statistics.paired``: t 95 % interval, exact sign-flip p, verdict). The table
lists every sign change of the mean difference between consecutive sizes, in both
directions, with the verdicts at its two ends (a sign change is resolved only when both ends
are resolved, in opposite directions), and the crossover by significance: the smallest D
from which on log-softmax is resolved lower at every size studied, if any. Comparisons that
train at the points another comparison chose (``points_from``) say so, and where one has that
comparison's own size, how closely its models reproduce that comparison's final models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np

from experiments import plots, records, statistics, tables
from experiments.io import write_json_atomically, write_text_atomically

if TYPE_CHECKING:
    from experiments.config import Config

BASELINE = "log-softmax"
TAYLOR = "log-taylor-2"  # the plots mark where log-softmax overtakes it: the paper's claim
METRICS = (("error", "test error (%)", 100.0), ("nll", "test NLL", 1.0))


def shown(key: str, title: str, language_model: bool) -> tuple[str, Callable, int]:
    """A metric's title, the transform of its per-seed values and the digits as tables and
    plots show them: the NLL of a language model as its perplexity, exp(NLL)."""
    if language_model and key == "nll":
        return "test perplexity", np.exp, 1
    return title, np.asarray, 3 if key == "nll" else 2


class Axis(NamedTuple):
    """What a study's size is: the comparison field that holds it, its name and symbol, and the
    plot's file name."""

    field: str
    name: str
    symbol: str
    plot: str


AXES = {axis.field: axis for axis in (
    Axis("num_classes", "number of classes", "D", "output_size.png"),
    Axis("num_train", "number of training examples", "N", "data_size.png"),
)}


def axis_of(configs: tuple[Config, ...]) -> Axis:
    """The number of training examples if the comparisons differ in ``train_subset``, else the
    number of classes."""
    return AXES["num_train" if len({c.train_subset for c in configs}) > 1 else "num_classes"]


def run(name: str, configs: tuple[Config, ...], output: Path, data_dir, command: str) -> str:
    """Runs (or resumes) every comparison of the study; returns the study table."""
    from experiments import comparison, data

    output = Path(output)
    if records.writer():
        write_json_atomically(output / "study.json", {
            "name": name, "description": configs[0].description, "command": command,
            "comparisons": [config.name for config in configs], "axis": axis_of(configs).field,
        })
    for config in configs:
        dataset = data.load(config.dataset, data_dir)
        comparison.run(config, output / config.name, dataset, command)
        if records.writer():
            tables.write(output / config.name)
    return write(output) if records.writer() else ""


def direction(result: statistics.Paired) -> int:
    """+1 when log-softmax is resolved lower (the difference challenger minus baseline is
    positive), -1 when log-Taylor is, 0 when not resolved."""
    return int(np.sign(result.mean)) if result.resolved else 0


def sign_changes(sizes: list[int], results: list[statistics.Paired],
                 challenger: str = TAYLOR) -> list[tuple[int, int, str, bool]]:
    """Each pair of consecutive sizes whose mean differences (``challenger`` minus log-softmax)
    have opposite signs: ``(D below, D above, the loss lower above, resolved)``, resolved when
    both ends are resolved in opposite directions."""
    return [(sizes[i], sizes[i + 1], BASELINE if results[i + 1].mean > 0 else challenger,
             direction(results[i]) * direction(results[i + 1]) == -1)
            for i in range(len(sizes) - 1) if results[i].mean * results[i + 1].mean < 0]


def ahead_from(sizes: list[int], results: list[statistics.Paired]) -> int | None:
    """The smallest D from which on log-softmax is resolved lower at every size, or None."""
    first = None
    for size, result in zip(sizes, results):
        first = (first or size) if direction(result) == 1 else None
    return first


def collect(output: Path) -> tuple[dict, list[int], dict[str, dict[int, dict]]]:
    """The study's description (with ``bayes_error[D]`` where the data set knows it), its
    sizes, and ``runs[loss][D]`` = the test metrics by seed."""
    study = json.loads((output / "study.json").read_text())
    sizes, runs = [], {}  # sizes in the order of the study, increasing
    study["bayes_error"], study["flags"], study["points_from"] = {}, {}, set()
    study["language_model"], study["reproduced"] = False, None
    axis = AXES[study.get("axis", "num_classes")]
    for name in study["comparisons"]:
        if not (output / name / "config.json").exists():
            continue
        comparison = records.read_comparison(output / name)
        config = comparison["config"]
        size = comparison[axis.field]
        sizes.append(size)
        if "bayes_error" in comparison:
            study["bayes_error"][size] = comparison["bayes_error"]
        study["language_model"] = tables.is_language_model(config)
        found = tables.rows(comparison, records.read(output / name))
        for loss, row in found.items():
            runs.setdefault(loss, {})[size] = {m["seed"]: m for m in row.test}
        study["flags"][size] = flag(found, config["max_epochs"])
        if config.get("points_from") is not None:
            study["points_from"].add(config["points_from"])
            study["reproduced"] = study["reproduced"] or reproduction(
                Path(config["points_from"]), comparison, found, axis)
    return study, sizes, runs


def reproduction(source: Path, comparison: dict, found: dict, axis: Axis) -> tuple | None:
    """Where a comparison trains at the points of ``source`` and at its size: ``(size, the
    number of models trained by both, the largest difference of their test NLL)``, else None."""
    if not (source / "config.json").exists():
        return None
    if records.read_comparison(source).get(axis.field) != comparison[axis.field]:
        return None
    theirs = {(m["loss"], m["seed"]): m["test"]["nll"] for m in records.read(source)
              if m["stage"] == "final" and not m["diverged"]}
    ours = {(loss, m["seed"]): m["nll"] for loss, row in found.items() for m in row.test}
    both = sorted(set(theirs) & set(ours))
    if not both:
        return None
    return comparison[axis.field], len(both), max(abs(ours[k] - theirs[k]) for k in both)


def flag(found: dict, max_epochs: int) -> dict[str, str]:
    """Why each loss's models at one size cannot be read, by loss (none where they can): final
    models that ran to ``max_epochs`` (not stopped early), or a chosen value that the tuning's
    bounds stopped at."""
    flags = {}
    for loss, row in found.items():
        reasons = []
        capped = tables.capped(row.models, max_epochs)
        if capped:
            reasons.append(f"{capped} of {len(row.models)} {loss} models ran to the "
                           f"{max_epochs}-epoch cap")
        bound = [name for name, text in row.text.items() if "bound" in text]
        if bound:
            reasons.append(f"{loss}'s {', '.join(bound)} stopped at its bound")
        if reasons:
            flags[loss] = "; ".join(reasons)
    return flags


def challengers(runs: dict) -> list[str]:
    """The losses compared with log-softmax: every other loss of the study, in its order."""
    return [loss for loss in runs if loss != BASELINE]


def render(study: dict, sizes: list[int], runs: dict) -> str:
    axis = AXES[study.get("axis", "num_classes")]
    n = axis.symbol
    if study["points_from"]:
        chosen = (f"Each loss trains at the hyperparameters that "
                  f"{', '.join(f'`{p}`' for p in sorted(study['points_from']))} chose for it on its "
                  f"validation split; none were tuned at any {n} here")
    else:
        chosen = (f"Each loss's hyperparameters are chosen on a validation split as its "
                  f"comparison's table says, at every {n}")
    lines = [
        f"# {study['name']}: the losses against the {axis.name} {n}",
        "",
        study["description"],
        "",
        f"Generated by `python -m experiments tables {study['name']}` from the records of "
        f"its comparisons (each in its own directory here, with its own table), made by "
        f"`{study['command']}`. {chosen}; test-set numbers, mean +- std over seeds.",
    ]
    if study["reproduced"]:
        size, count, largest = study["reproduced"]
        lines.append(f"At {n} = {size:,} the {count} models retrain that comparison's final "
                     f"models (the same points and seeds): their test NLL differs from theirs by "
                     f"at most {largest:.2g} nats.")
    for key, title, scale in METRICS:
        title, transform, digits = shown(key, title, study["language_model"])
        lines += ["", f"## {title}", "", "| loss | " + " | ".join(f"{n} = {d:,}" for d in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for loss, by_size in runs.items():
            cells = []
            for d in sizes:
                values = [m[key] for m in by_size.get(d, {}).values()]
                cells.append("-" if not values or None in values else
                             tables.mean_std(transform(values), scale, digits))
            lines.append(f"| {loss} | " + " | ".join(cells) + " |")
        if key == "error" and study["bayes_error"]:
            lines.append("| *Bayes error* | " + " | ".join(
                f"{100 * study['bayes_error'][d]:.2f}" if d in study["bayes_error"] else "-"
                for d in sizes) + " |")
    for challenger in challengers(runs):
        lines += ["", f"## Where {BASELINE} and {challenger} trade places", ""]
        lines += trade_places(sizes, runs, challenger, n)
    lines.append("")
    for d, flags in sorted(study["flags"].items()):
        for loss, reason in flags.items():
            which = "no verdict" if loss == BASELINE else f"no verdict of {loss}"
            lines.append(f"**Flagged, {n} = {d:,}**: {reason}; {which} at this {n} above is "
                         "evidence either way.")
    return "\n".join(lines) + "\n"


def trade_places(sizes: list[int], runs: dict, challenger: str, n: str) -> list[str]:
    """The paired differences ``challenger`` minus log-softmax at each size, per metric: their
    sign changes, the size from which log-softmax is resolved lower, and the equivalence tests
    where not resolved."""
    lines = []
    for (key, title, scale), found in zip(METRICS, crossovers(sizes, runs, challenger)):
        if found is None:
            lines.append(f"- {title}: fewer than two sizes where both losses have it.")
            continue
        paired_sizes, results, equivalences = found
        by_size = "; ".join(
            f"{n} = {d:,}: {r.mean:+.3f} [{r.low:+.3f}, {r.high:+.3f}], "
            + {1: f"{BASELINE} lower", -1: f"{challenger} lower", 0: "not resolved"}[direction(r)]
            for d, r in zip(paired_sizes, results))
        changes = sign_changes(paired_sizes, results, challenger)
        change_text = "; ".join(
            f"between {n} = {low:,} and {high:,}, towards {lower} lower "
            f"({'resolved' if resolved else 'not resolved'})"
            for low, high, lower, resolved in changes) or "none"
        ahead = ahead_from(paired_sizes, results)
        lines.append(
            f"- {title}, {challenger} minus {BASELINE} (paired by seed, t 95 % interval, verdict "
            f"of the t interval and the sign-flip test): {by_size}. Sign changes of the mean: "
            f"{change_text}. "
            + (f"{BASELINE} is resolved lower at every {n} from {n} = {ahead:,} on."
               if ahead is not None
               else f"There is no {n} from which {BASELINE} is resolved lower at every larger {n}.")
        )
        unresolved = [(d, e) for d, r, e in zip(paired_sizes, results, equivalences) if not r.resolved]
        if unresolved:
            lines.append(
                f"  Equivalence within +-{tables.MARGINS[key]:g} (two one-sided t tests) where not "
                "resolved: " + "; ".join(
                    f"{n} = {d:,}: [{e.low:+.3f}, {e.high:+.3f}] (t 90 %), "
                    + ("equivalent" if e.equivalent else "inconclusive") for d, e in unresolved) + ".")
    return lines


def crossovers(sizes: list[int], runs: dict, challenger: str = TAYLOR) -> list:
    """Per metric of METRICS: None, or (sizes with both losses and at least 2 paired seeds,
    the paired analysis of the seeds' differences ``challenger`` minus log-softmax at each,
    their equivalence test within ``tables.MARGINS``)."""
    found = []
    paired_sizes = [d for d in sizes if d in runs.get(BASELINE, {}) and d in runs.get(challenger, {})]
    for key, _, scale in METRICS:
        if len(paired_sizes) < 2:
            found.append(None)
            continue
        per_size = []
        for d in paired_sizes:
            a, b = runs[challenger][d], runs[BASELINE][d]
            seeds = [s for s in sorted(set(a) & set(b)) if None not in (a[s][key], b[s][key])]
            per_size.append([(a[s][key] - b[s][key]) * scale for s in seeds])
        kept = [(d, x) for d, x in zip(paired_sizes, per_size) if len(x) >= 2]
        found.append(None if len(kept) < 2 else
                     ([d for d, _ in kept], [statistics.paired(x) for _, x in kept],
                      [statistics.equivalence(x, tables.MARGINS[key]) for _, x in kept]))
    return found


def plot(sizes: list[int], runs: dict, path: Path, title: str, axis: Axis,
         language_model: bool = False) -> None:
    """Each loss's test metrics against the size, mean +- std over seeds; a dashed line where
    log-softmax is resolved lower than log-Taylor-2 from there on."""
    figure, all_axes = plots.plt.subplots(1, len(METRICS), figsize=(11, 4))
    for axes, (key, label, scale), found in zip(all_axes, METRICS, crossovers(sizes, runs)):
        label, transform, _ = shown(key, label, language_model)
        for loss, by_size in runs.items():
            xs = [d for d in sizes if d in by_size and None not in [m[key] for m in by_size[d].values()]]
            if not xs:
                continue
            values = [transform([m[key] for m in by_size[d].values()]) * scale for d in xs]
            axes.errorbar(xs, [v.mean() for v in values], [v.std(ddof=1) if v.size > 1 else 0 for v in values],
                          marker="o", capsize=3, label=loss, color=plots.colour(loss))
        if found is not None and ahead_from(*found[:2]) is not None:
            axes.axvline(ahead_from(*found[:2]), color="black", linestyle="--",
                         label=f"{BASELINE} resolved lower than {TAYLOR} from here on")
        axes.set(xscale="log", xlabel=f"{axis.name} {axis.symbol}", ylabel=label)
        plots.plain_log_axis(axes, "x")
        axes.legend(fontsize=7)
    figure.suptitle(f"{title}: test metrics, mean +- std over seeds")
    figure.tight_layout()
    plots.save(figure, path)


def write(output: Path, with_comparisons: bool = False) -> str:
    """Writes the study's table and plot (first each comparison's, if ``with_comparisons``)
    from the records; returns the study's table."""
    output = Path(output)
    if with_comparisons:
        for name in json.loads((output / "study.json").read_text())["comparisons"]:
            if (output / name / "config.json").exists():
                tables.write(output / name)
    study, sizes, runs = collect(output)
    table = render(study, sizes, runs)
    write_text_atomically(output / "table.md", table)
    axis = AXES[study.get("axis", "num_classes")]
    plot(sizes, runs, output / axis.plot, study["name"], axis, study["language_model"])
    return table
