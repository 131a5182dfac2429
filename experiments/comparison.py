"""A comparison of losses on one dataset and model: tune each loss, then train its final seeds.

For each loss of the config, its points are chosen by ``experiments.tuning`` (grid widening
or random search, on the tuning seeds), or taken from the comparison in
``config.points_from``; then the chosen point is trained with each of ``config.seeds`` and its
best validation evaluated once on the test set.

Everything is written under ``<output>/`` as ``experiments.records`` describes: a model whose
record is there is read, not trained again, so a comparison started again resumes, and one
that has finished only renders its table. A directory made under a config with another
fingerprint (``Config.fingerprint``: the fields that change training) is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tqdm.auto import tqdm

from experiments import losses, metrics, records, train, tuning
from experiments.config import Config, to_json
from experiments.data import Dataset


def describe(config: Config, data: Dataset, command: str, previous: dict) -> dict:
    """What ``config.json`` holds of a comparison (``experiments.records``)."""
    comparison = {
        "config": to_json(config), "fingerprint": config.fingerprint(), "command": command,
        "num_classes": data.num_classes, "num_train": len(data.train.labels[: config.train_subset]),
        "baselines": metrics.baselines(data.train.labels[: config.train_subset],
                                       data.test.labels, data.num_classes),
        "losses": {loss: {**losses.properties(loss), "space": config.space(loss)}
                   for loss in config.losses},
    }
    if data.bayes_error is not None:
        comparison["bayes_error"] = data.bayes_error
    reference = previous.get("dense_reference")
    if reference is None and config.output_layer == "linear" and "log-softmax" in config.losses:
        first = {name: axis["values"][0] for name, axis in config.space("log-softmax").items()}
        reference = train.dense_reference(config, data, first)
    if reference is not None:
        comparison["dense_reference"] = reference
    return comparison


def run(config: Config, output: Path, data: Dataset, command: str) -> None:
    """Tunes and trains every loss of ``config`` (or reads what is already done)."""
    output = Path(output)
    previous = records.read_comparison(output) if (output / "config.json").exists() else {}
    if previous and previous.get("fingerprint") != config.fingerprint():
        raise records.RunError(
            f"{output} holds a comparison trained under other settings (its config.json has "
            f"fingerprint {previous.get('fingerprint')}, this config {config.fingerprint()}); "
            "choose another output directory or delete that one")
    records.write_comparison(output, describe(config, data, command, previous))
    done = {records.record_key(r): r for r in records.read(output)}
    environment = train.environment()
    for loss in config.losses:
        program = train.Program(config, loss, data)
        metric = program.loss.stopping_metric

        def trained(point, seeds, stage, bar):
            models = []
            for seed in seeds:
                key = records.key(loss, stage, point, seed)
                if key not in done:
                    work_dir = output / "work" / loss / f"{stage}-{records.point_name(point)}-seed{seed}"
                    model = {"loss": loss, "stage": stage, "point": point, "seed": seed,
                             **train.fit(program, point, seed, data, work_dir, stage == "final", bar)}
                    if stage == "final":
                        model["train_epoch_temporary_bytes"] = program.epoch_temporary_bytes(point)
                    done[key] = records.add(output, model, environment)
                    train.finish(work_dir)
                models.append(done[key])
            return models

        with tqdm(desc=f"{loss}", leave=False) as bar:
            space = config.space(loss)

            def tune(point):
                return trained(point, config.tuning_seeds, "tune", bar)

            if config.points_from is not None:
                chosen = records.chosen_point(Path(config.points_from), loss)
            elif config.tuning == "grid":
                chosen = tuning.search_grid(space, tune, metric)
            else:
                chosen = tuning.search_random(space, config.trials, tune, metric)
            trained(chosen, config.seeds, "final", bar)
    if records.writer():  # every model's working files went with its record
        shutil.rmtree(output / "work", ignore_errors=True)
