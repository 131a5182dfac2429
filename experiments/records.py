"""A comparison's records: what its tables, plots and a resume read, in three files. No JAX.

Under a comparison's directory:

- ``config.json``: the schema version, the effective config and its fingerprint
  (``Config.fingerprint``), the command that made it, the number of classes, the baselines,
  each loss's properties and search space, and what else the tables show
  (``bayes_error``, ``dense_reference``);
- ``records.jsonl.gz``: one JSON line per finished model (``ModelRecord`` below), rewritten
  atomically each time a model ends;
- ``environments.json``: the distinct machines and versions the models trained on; each
  record names its entry by index.

A model record: ``loss``, ``stage`` ("tune" or "final"), ``point`` (the learning rate and
every hyperparameter the loss takes), ``seed``; ``curve``, one entry per validation
(``epoch``, ``step``, ``train_loss``, ``train_seconds``, ``train_examples``, ``error``,
``nll``); ``best``, the full validation summary of the best evaluation; ``best_epoch``,
``stop_epoch``, ``diverged``; for a final model ``test`` (with per-example correctness),
``temperature`` and ``test_scaled``, and ``train_epoch_temporary_bytes``; ``environment``.

While a model trains, its working files (the metrics of each validation and an Orbax
checkpoint) are in ``work/``, which is deleted when the model's record is written. On several
processes only process 0 writes (``writer``).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from experiments.io import open_atomically, write_json_atomically

SCHEMA = 2
RECORDS = "records.jsonl.gz"
ENVIRONMENTS = "environments.json"
CURVE_KEYS = ("epoch", "step", "train_loss", "train_seconds", "train_examples", "error", "nll")


class RunError(ValueError):
    """A run that cannot start or resume as asked: settings that do not fit the data, or a
    directory holding a comparison of other settings or a checkpoint of another structure."""


def writer() -> bool:
    """Whether this process writes (process 0 of a multi-process run, or the only one)."""
    return int(os.environ.get("SOFTFAM_PROCESS_INDEX", "0")) == 0


def point_name(point: dict[str, float]) -> str:
    """A point's name, the same for values equal to 6 significant digits."""
    return "-".join(f"{k}={v:g}" for k, v in sorted(point.items())) or "default"


def key(loss: str, stage: str, point: dict[str, float], seed: int) -> tuple:
    return loss, stage, point_name(point), seed


def record_key(record: dict) -> tuple:
    return key(record["loss"], record["stage"], record["point"], record["seed"])


def chosen_point(output: Path, loss: str) -> dict[str, float]:
    """The point that the comparison in ``output`` chose for ``loss``: its final models'."""
    finals = [r for r in read(output) if r["loss"] == loss and r["stage"] == "final"]
    if not finals:
        raise RunError(f"{output} holds no final model of {loss}: run that comparison first, "
                       "or train this one with its own tuning (config.points_from)")
    return finals[0]["point"]


def read_comparison(output: Path) -> dict:
    return json.loads((Path(output) / "config.json").read_text())


def write_comparison(output: Path, comparison: dict) -> None:
    if writer():
        write_json_atomically(Path(output) / "config.json", {"schema": SCHEMA, **comparison})


def read(output: Path) -> list[dict]:
    """Every finished model's record, in the order they finished."""
    path = Path(output) / RECORDS
    if not path.exists():
        return []
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def write(output: Path, records: Iterable[dict]) -> None:
    """Writes ``records`` as the comparison's records file (gzip without a timestamp, so that
    the same records give the same bytes)."""
    if not writer():
        return
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    with open_atomically(Path(output) / RECORDS, "wb") as f:
        f.write(gzip.compress(lines, mtime=0))


def add(output: Path, record: dict, environment: dict) -> dict:
    """Adds a finished model's ``record``, naming its ``environment``; returns the record."""
    record = {**record, "environment": environment_index(output, environment)}
    write(output, [*read(output), record])
    return record


def environment_index(output: Path, environment: dict) -> int:
    """The index of ``environment`` in the comparison's environments, added if new."""
    path = Path(output) / ENVIRONMENTS
    known = json.loads(path.read_text()) if path.exists() else []
    if environment not in known:
        known.append(environment)
        if writer():
            write_json_atomically(path, known)
    return known.index(environment)


def environments(output: Path) -> list[dict]:
    path = Path(output) / ENVIRONMENTS
    return json.loads(path.read_text()) if path.exists() else []


def slim(evaluation: dict) -> dict:
    """A curve entry: what the learning curves and throughput read of a validation."""
    return {k: evaluation[k] for k in CURVE_KEYS if k in evaluation}


def pack_correct(predicted: np.ndarray, labels: np.ndarray) -> str:
    """Per-example correctness as a compact string (bits packed, base64)."""
    return base64.b64encode(np.packbits(np.asarray(predicted) == np.asarray(labels))).decode()


def unpack_correct(packed: str, count: int) -> np.ndarray:
    """The boolean per-example correctness that ``pack_correct`` stored for ``count`` examples."""
    return np.unpackbits(np.frombuffer(base64.b64decode(packed), np.uint8), count=count).astype(bool)


def by_epoch(models: list[dict], key: str) -> dict[float, list[float]]:
    """Each validation epoch's values of ``key`` over the models' curves that reached it."""
    values: dict[float, list[float]] = {}
    for model in models:
        for entry in model["curve"]:
            if entry.get(key) is not None:
                values.setdefault(entry["epoch"], []).append(entry[key])
    return values
