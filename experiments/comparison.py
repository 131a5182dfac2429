"""A comparison of losses on one dataset and model: tune each loss fairly, then train seeds.

For each loss: every setting of its hyperparameter grid (``Config.grid``) is trained with every
learning rate and every tuning seed. Settings that diverged on any tuning seed are out; of the
rest, the (setting, learning rate) with the lowest best-epoch validation error averaged over
the tuning seeds (ties: lowest validation NLL, then the first) is then trained with each of
``seeds`` and its best epoch evaluated once on the test set. The test set plays no part in the
choice.

Layout under ``<output>/``: ``config.json`` (the effective config and the command that made
it) and ``runs/<loss>/``, with ``tune-<setting>/`` for each setting and ``final/``, each a run
directory (``experiments.train``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np

from experiments import train
from experiments.configs import Config
from experiments.data import Dataset
from experiments.io import write_json_atomically


def settings(config: Config, loss: str) -> list[dict[str, float]]:
    """Every combination of the loss's hyperparameter grid (one empty setting if none)."""
    grid = config.grid(loss)
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def setting_name(hyper: dict[str, float]) -> str:
    return "-".join(f"{k}={v:g}" for k, v in sorted(hyper.items())) or "default"


def best_records(history: list[dict]) -> list[dict]:
    """Each model's validation record at its best epoch, with ``diverged`` from its end record."""
    valid = {(r["learning_rate"], r["seed"], r["epoch"]): r for r in history if r["split"] == "valid"}
    return [{**valid[(end["learning_rate"], end["seed"], end["best_epoch"])], "diverged": False}
            if not end["diverged"] else {**end, "error": np.inf, "nll": None}
            for end in history if end["split"] == "end"]


def choose(candidates: list[tuple[dict, dict]]) -> tuple[dict, float]:
    """The (setting, learning rate) with the lowest mean validation error over its tuning
    seeds, then NLL; a candidate that diverged on any seed is never chosen; first wins ties."""
    groups: dict[tuple, list] = {}
    for hyper, record in candidates:
        groups.setdefault((setting_name(hyper), record["learning_rate"]), []).append((hyper, record))

    def key(group):
        records = [record for _, record in group]
        nll = [r["nll"] for r in records]
        return (any(r["diverged"] for r in records), np.mean([r["error"] for r in records]),
                np.mean(nll) if None not in nll else 0.0)

    group = min(groups.values(), key=key)
    if key(group)[0]:
        raise RuntimeError("every setting diverged on some tuning seed")
    hyper, record = group[0]
    return hyper, record["learning_rate"]


def run(config: Config, output: Path, data: Dataset, command: str) -> dict[str, Path]:
    """Tunes and trains every loss of ``config``; returns each loss's final run directory."""
    output = Path(output)
    config_path = output / "config.json"
    saved = json.loads(json.dumps(dataclasses.asdict(config)))
    if config_path.exists() and json.loads(config_path.read_text())["config"] != saved:
        raise train.RunError(f"{output} holds a comparison of another configuration "
                             f"({config_path}); choose another output directory or delete that one")
    write_json_atomically(config_path, {"config": saved, "command": command,
                                        "num_classes": data.num_classes})
    finals = {}
    for loss in config.losses:
        trainer = train.trainer(config, loss, data)
        candidates = []
        for hyper in settings(config, loss):
            tuning = train.Run(loss, hyper, config.learning_rates, config.tuning_seeds, test=False)
            history = train.run(config, tuning, output / "runs" / loss / f"tune-{setting_name(hyper)}",
                                data, trainer, progress=f"{loss} tune {setting_name(hyper)}")
            candidates += [(hyper, record) for record in best_records(history)]
        hyper, learning_rate = choose(candidates)
        final_dir = output / "runs" / loss / "final"
        train.run(config, train.Run(loss, hyper, (learning_rate,), config.seeds, test=True),
                  final_dir, data, trainer, progress=f"{loss} final")
        finals[loss] = final_dir
    return finals
