"""A comparison of losses on one dataset and model: tune each loss fairly, then train seeds.

For each loss: every setting of its hyperparameter grid (epsilon, margin) is trained with
every learning rate of the config, one seed (``tuning_seed``); the (setting, learning rate)
with the lowest final validation error (ties: lowest validation NLL, then the first) is then
trained with each of ``seeds`` and evaluated once on the test set. The test set plays no part
in the choice.

Directory layout under ``<output>/runs/<loss>/``: ``tune-<setting>/`` for each setting and
``final/``; each is a run directory (see ``experiments.train``).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from experiments import losses, tables, train
from experiments.data import Dataset
from experiments.io import write_json_atomically


@dataclass(frozen=True)
class ComparisonConfig:
    """One experiment: the losses compared, the model, the grids and the seeds."""

    name: str
    dataset: str
    model: str
    widths: tuple[int, ...]
    epochs: int
    batch_size: int
    learning_rates: tuple[float, ...]
    losses: tuple[str, ...] = losses.COMPARED
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    tuning_seed: int = 0
    train_subset: Optional[int] = None
    optimizer: str = "adam"  # see train.RunConfig
    output_layer: str = "dense"  # "factored": for every loss of the spherical family
    command: str = ""  # the command that runs it, quoted in its tables


def settings(loss: str) -> list[dict[str, float]]:
    """Every combination of the loss's hyperparameter grid (one empty setting if none)."""
    grid = losses.get(loss).grid
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def setting_name(hyper: dict[str, float]) -> str:
    return "-".join(f"{k}={v:g}" for k, v in sorted(hyper.items())) or "default"


def _run_config(config: ComparisonConfig, loss: str, hyper: dict, learning_rates, seeds, test: bool):
    factored = config.output_layer == "factored" and losses.get(loss).on_statistics is not None
    return train.RunConfig(
        dataset=config.dataset, model=config.model, widths=config.widths, loss=loss,
        learning_rates=tuple(learning_rates), seeds=tuple(seeds), epochs=config.epochs,
        batch_size=config.batch_size, hyper=hyper, train_subset=config.train_subset,
        evaluate_test=test, optimizer=config.optimizer,
        output_layer="factored" if factored else "dense",
    )


def last_valid(history: list[dict]) -> list[dict]:
    """The per-model metrics of a run's last validation record."""
    return tables.validation_records(history)[-1]["models"]


def choose(candidates: list[tuple[dict, dict]]) -> tuple[dict, float]:
    """The (setting, learning rate) with the lowest validation error, then NLL; first wins ties."""

    def key(candidate):
        _, model = candidate
        return (model["error"], model["nll"] if model["nll"] is not None else 0.0)

    hyper, model = min(candidates, key=key)
    return hyper, model["learning_rate"]


def run(config: ComparisonConfig, output: Path, data: Dataset) -> dict[str, Path]:
    """Tunes and trains every loss of ``config``; returns each loss's final run directory."""
    output = Path(output)
    write_json_atomically(output / "experiment.json",
                          dataclasses.asdict(config) | {"num_classes": data.num_classes})
    finals = {}
    for loss in config.losses:
        candidates = []
        for hyper in settings(loss):
            run_config = _run_config(config, loss, hyper, config.learning_rates, [config.tuning_seed], False)
            history = train.run(run_config, output / "runs" / loss / f"tune-{setting_name(hyper)}",
                                data, progress=f"{loss} tune {setting_name(hyper)}")
            candidates += [(hyper, model) for model in last_valid(history)]
        hyper, learning_rate = choose(candidates)
        final_dir = output / "runs" / loss / "final"
        train.run(_run_config(config, loss, hyper, [learning_rate], config.seeds, True), final_dir,
                  data, progress=f"{loss} final")
        finals[loss] = final_dir
    return finals
