"""A comparison of losses on one dataset and model: tune each loss fairly, then train seeds.

For each loss, a point is a learning rate and a value of each of the loss's hyperparameters.
Every point of the starting grid (``config.learning_rates`` times ``Config.grid``) is trained
with every tuning seed (at least 2, none of them a final seed). A point that diverged on any
tuning seed is out; of the rest, the one with the lowest best-epoch validation NLL (error for
squared error, which defines no distribution, and for the Z-loss, whose softmax has an
arbitrary temperature: ``Loss.stopping_metric``) averaged over the tuning seeds is chosen.
While the chosen point sits at an end of the values tried along some axis (that coordinate
varied, the others fixed), the point one step past that end is tried too (the step is the ratio
of the two end values, 3 for a single value), unless it lies outside ``config.bounds``; then
the choice is made again. The final point is trained with each of ``seeds`` and its best epoch
evaluated once on the test set. The test set plays no part in the choice.

Layout under ``<output>/``: ``config.json`` (the effective config, the command that made it,
the baselines and, for a linear output layer, ``dense_reference``: log-softmax timed through
the dense logits, ``experiments.train.dense_reference``) and ``runs/<loss>/``, with ``tune-<point>/`` for each point tried and ``final/``, each a
run directory (``experiments.train``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from experiments import metrics, train
from experiments.configs import Config
from experiments.data import Dataset
from experiments.io import write_json_atomically


def starting_points(config: Config, loss: str) -> list[dict[str, float]]:
    """Every combination of the learning rates and the loss's starting hyperparameter grid."""
    grid = {"learning_rate": config.learning_rates, **config.grid(loss)}
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def loss_hyperparameters(point: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in point.items() if k != "learning_rate"}


def setting_name(point: dict[str, float]) -> str:
    return "-".join(f"{k}={v:g}" for k, v in sorted(point.items())) or "default"


def same(a: float, b: float) -> bool:
    """Whether two values of a coordinate name the same setting (``setting_name``'s 6 digits):
    a learning rate stepped down to 0.009 / 3 = 0.0030000000000000005 is the grid's 0.003."""
    return f"{a:g}" == f"{b:g}"


def line(points: list[dict], chosen: dict, axis: str) -> list[float]:
    """The values of ``axis`` tried with every other coordinate at its chosen value, sorted,
    one per setting."""
    values = {f"{p[axis]:g}": p[axis] for p in points
              if all(same(p[k], v) for k, v in chosen.items() if k != axis)}
    return sorted(values.values())


def within(value: float, bounds) -> bool:
    """Whether ``value`` lies in the (low, high) ``bounds``, up to rounding (1e-9 relative): a
    step computed as 0.15 / 3 = 0.04999... is at a bound of 0.05, not beyond it."""
    low, high = bounds
    return low * (1 - 1e-9) <= value <= high * (1 + 1e-9)


def beyond_edge(values: list[float], value: float, bounds) -> Optional[tuple[float, bool]]:
    """``(next value, whether it is within bounds)`` one step past the end of the sorted
    ``values`` that ``value`` sits at, or None when it is interior. The step is the ratio of
    the two values at that end (3 for a single value, which sits at both ends: the upper one
    first, the lower one once the upper is out of bounds)."""
    if not same(value, values[0]) and not same(value, values[-1]):
        return None
    if same(value, values[-1]):
        upper = value * (values[-1] / values[-2] if len(values) > 1 else 3.0)
        if within(upper, bounds) or len(values) > 1:
            return upper, within(upper, bounds)
    lower = value / (values[1] / values[0] if len(values) > 1 else 3.0)
    return lower, within(lower, bounds)


def widening(points: list[dict], chosen: dict, bounds: dict) -> list[dict]:
    """The points one step past each end of the grid that ``chosen`` sits at, within bounds."""
    new = []
    for axis, value in chosen.items():
        edge = beyond_edge(line(points, chosen, axis), value, bounds[axis])
        if edge is not None and edge[1]:
            new.append({**chosen, axis: edge[0]})
    return new


def best_records(history: list[dict]) -> list[dict]:
    """Each model's validation record at its best epoch, with ``diverged`` from its end record."""
    valid = {(r["learning_rate"], r["seed"], r["epoch"]): r for r in history if r["split"] == "valid"}
    return [{**valid[(end["learning_rate"], end["seed"], end["best_epoch"])], "diverged": False}
            if not end["diverged"] else {**end, "error": np.inf, "nll": None}
            for end in history if end["split"] == "end"]


def choose(candidates: list[tuple[dict, dict]], metric: Callable[[dict], float]) -> tuple[dict, float]:
    """The (setting, learning rate) with the lowest mean over its tuning seeds of ``metric``,
    the one early stopping uses (``Loss.stopping_metric``); a candidate that diverged on any
    seed is never chosen; first wins ties."""
    groups: dict[tuple, list] = {}
    for hyper, record in candidates:
        groups.setdefault((setting_name(hyper), record["learning_rate"]), []).append((hyper, record))

    def key(group):
        records = [record for _, record in group]
        if any(r["diverged"] for r in records):
            return (True, np.inf)
        return (False, np.mean([metric(r) for r in records]))

    group = min(groups.values(), key=key)
    if key(group)[0]:
        raise RuntimeError("every setting diverged on some tuning seed")
    hyper, record = group[0]
    return hyper, record["learning_rate"]


def search(points: list[dict], tune: Callable[[dict], list[dict]], bounds: dict,
           metric: Callable[[dict], float]) -> tuple[dict, float]:
    """Tunes the starting ``points`` (``tune(point)``: the best-epoch validation record of each
    tuning seed), chooses by ``metric``, and widens past the ends the choice sits at until it
    is interior or bounded; returns the chosen (hyperparameters, learning rate)."""
    tuned: dict[str, tuple[dict, list[dict]]] = {}  # name: (point, records)
    while points:
        tuned.update({setting_name(point): (point, tune(point)) for point in points})
        hyper, learning_rate = choose([(loss_hyperparameters(point), record)
                                       for point, records in tuned.values() for record in records],
                                      metric)
        chosen = {"learning_rate": learning_rate, **hyper}
        tried = [point for point, _ in tuned.values()]
        points = [p for p in widening(tried, chosen, bounds) if setting_name(p) not in tuned]
    return hyper, learning_rate


def run(config: Config, output: Path, data: Dataset, command: str) -> dict[str, Path]:
    """Tunes and trains every loss of ``config``; returns each loss's final run directory."""
    output = Path(output)
    config_path = output / "config.json"
    saved = json.loads(json.dumps(dataclasses.asdict(config)))
    previous = json.loads(config_path.read_text()) if config_path.exists() else {}
    if previous and previous["config"] != saved:
        raise train.RunError(f"{output} holds a comparison of another configuration "
                             f"({config_path}); choose another output directory or delete that one")
    reference = previous.get("dense_reference")
    if reference is None and config.output_layer == "linear" and "log-softmax" in config.losses:
        reference = train.dense_reference(config, data)
    write_json_atomically(config_path, {
        "config": saved, "command": command, "num_classes": data.num_classes,
        "baselines": metrics.baselines(data.train.labels[: config.train_subset],
                                       data.test.labels, data.num_classes),
        **({} if data.bayes_error is None else {"bayes_error": data.bayes_error}),
        **({} if reference is None else {"dense_reference": reference})})
    finals = {}
    for loss in config.losses:
        trainer = train.trainer(config, loss, data)

        def tune(point):
            name = setting_name(point)
            tuning = train.Run(loss, loss_hyperparameters(point), (point["learning_rate"],),
                               config.tuning_seeds, test=False)
            return best_records(train.run(config, tuning, output / "runs" / loss / f"tune-{name}",
                                          data, trainer, progress=f"{loss} tune {name}"))

        hyper, learning_rate = search(starting_points(config, loss), tune, config.bounds,
                                      trainer.loss.stopping_metric)
        final_dir = output / "runs" / loss / "final"
        train.run(config, train.Run(loss, hyper, (learning_rate,), config.seeds, test=True),
                  final_dir, data, trainer, progress=f"{loss} final")
        finals[loss] = final_dir
    return finals
