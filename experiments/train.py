"""One training run: several models of one configuration, trained at once, resumable.

A run trains one model per (learning rate, seed) pair of its ``RunConfig``, all at once under
``vmap``; an epoch is one jitted ``lax.scan`` over minibatches. Each seed is split into keys
for initialisation and data order (the models have no dropout), so the same seed gives the
same numbers, whatever the learning rate.

Devices: the minibatch axis is sharded over every local device (a 1-D ``Mesh``), parameters
and data are replicated, so one command uses every GPU or TPU present. For several hosts, call
``jax.distributed.initialize()`` first in every process (``python -m experiments run ...
--distributed``); ``jax.devices()`` then spans all hosts.

The run directory holds ``config.json``, ``env.json``, ``metrics.jsonl`` (one record per
evaluation) and ``checkpoint.npz`` (state and metrics after the last finished epoch), all
written atomically. A run started again in the same directory resumes from its checkpoint;
since an epoch depends only on the state and the epoch number, the final numbers are those
of a run never interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

import softfam
from experiments import losses, metrics, models
from experiments.data import Dataset, Split
from experiments.io import open_atomically, write_json_atomically, write_jsonl_atomically

EVAL_CHUNK = 1000  # examples per evaluation step
OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}


@dataclass(frozen=True)
class RunConfig:
    """What one run trains: every (learning rate, seed) pair, with one loss setting."""

    dataset: str
    model: str  # "mlp" or "cnn"
    widths: tuple[int, ...]  # see models.get
    loss: str  # a name in experiments.losses.LOSSES
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int
    hyper: dict[str, float] = field(default_factory=dict)  # the loss's keyword arguments
    train_subset: Optional[int] = None  # train on the first N training examples only
    evaluate_test: bool = False  # also evaluate on the test set after the last epoch
    optimizer: str = "adam"  # a name in OPTIMIZERS
    # "dense", or "factored": softfam's factored layer trains the output weights (and bias) by
    # exact SGD at the model's learning rate, the rest of the model by ``optimizer`` (then
    # "sgd") from the gradient for its features; the models of the grid then run one after
    # another (``lax.map``), since under ``vmap`` the layer's conditionals would run every branch.
    output_layer: str = "dense"

    @property
    def grid(self) -> list[tuple[float, int]]:
        """The (learning rate, seed) of each model, in the order of the model axis."""
        return [(lr, seed) for lr in self.learning_rates for seed in self.seeds]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict) -> "RunConfig":
        return cls(**{**value, "widths": tuple(value["widths"]),
                      "learning_rates": tuple(value["learning_rates"]), "seeds": tuple(value["seeds"])})


def environment() -> dict:
    """Versions, devices and the git commit, for ``env.json``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    import jaxlib

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "devices": [str(d) for d in jax.devices()],
        "platform": platform.platform(),
        "git_commit": commit,
    }


class Trainer:
    """The jitted functions of one run, for the models of its grid."""

    def __init__(self, config: RunConfig, data: Dataset):
        self.config = config
        self.model = models.get(config.model, config.widths)
        loss = losses.get(config.loss)
        self.loss, self.log_probabilities = loss.bind(config.hyper)
        if config.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {config.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        self.optimizer = optax.inject_hyperparams(OPTIMIZERS[config.optimizer])
        if config.output_layer not in ("dense", "factored"):
            raise ValueError(f"output_layer must be 'dense' or 'factored', got {config.output_layer!r}")
        self.factored = config.output_layer == "factored"
        if self.factored and (loss.on_statistics is None or config.optimizer != "sgd"):
            raise ValueError(
                f"output_layer='factored' trains by exact SGD a loss of the spherical family: it "
                f"needs optimizer='sgd' (got {config.optimizer!r}) and a loss with statistics "
                f"(got {config.loss!r}; these have them: "
                f"{', '.join(n for n, entry in losses.LOSSES.items() if entry.on_statistics)})"
            )
        if self.factored:
            self.loss_on_statistics = loss.bind_statistics(config.hyper)
        devices = np.array(jax.devices())
        if config.batch_size % devices.size:
            raise ValueError(
                f"batch_size {config.batch_size} must be a multiple of the number of devices "
                f"({devices.size}) to shard the batch over them"
            )
        self.mesh = Mesh(devices, ("batch",))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        train = data.train
        if config.train_subset is not None:
            train = Split(train.images[: config.train_subset], train.labels[: config.train_subset])
        self.train = jax.device_put((train.images, train.labels), replicated)
        self.steps_per_epoch = train.labels.shape[0] // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size {config.batch_size} exceeds the {train.labels.shape[0]} training examples"
            )
        self.input_shape = train.images.shape[1:]
        self.num_classes = data.num_classes
        self.train_epoch = jax.jit(self._train_epoch, donate_argnums=0)
        self.evaluate_chunks = jax.jit(self._evaluate_chunks)

    def _shard_batch(self, array: jax.Array, axis: int) -> jax.Array:
        spec = [None] * array.ndim
        spec[axis] = "batch"
        return jax.lax.with_sharding_constraint(array, NamedSharding(self.mesh, PartitionSpec(*spec)))

    def init(self) -> dict:
        """The state of every model: parameters, optimizer state, data-order key."""
        learning_rates, seeds = (jnp.asarray(v) for v in zip(*self.config.grid))

        def init_one(seed, learning_rate):
            init_key, data_key = jax.random.split(jax.random.key(seed))
            params = self.model.init(init_key, self.input_shape, self.num_classes)
            if self.factored:  # the bias is the last column of the factored weights
                output = params.pop("output")
                weights = jnp.concatenate([output["w"].T, output["b"][:, None]], 1)
                params = {"body": params, "output": softfam.factored_output(weights)}
            trained = params["body"] if self.factored else params
            opt_state = self.optimizer(learning_rate=learning_rate).init(trained)
            return {"params": params, "opt_state": opt_state, "data_key": jax.random.key_data(data_key)}

        return jax.jit(jax.vmap(init_one))(seeds, learning_rates.astype(jnp.float32))

    def _train_epoch(self, state: dict, epoch: jax.Array) -> tuple[dict, jax.Array]:
        images, labels = self.train
        steps, batch = self.steps_per_epoch, self.config.batch_size

        def order(data_key):  # this epoch's minibatches: (steps, batch) example indices
            key = jax.random.fold_in(jax.random.wrap_key_data(data_key), epoch)
            return jax.random.permutation(key, labels.shape[0])[: steps * batch].reshape(steps, batch)

        indices = jnp.swapaxes(jax.vmap(order)(state["data_key"]), 0, 1)  # (steps, models, batch)

        def mean_loss(params, x, y):
            return jnp.mean(self.loss(self.model.apply(params, x), y))

        def update(params, opt_state, x, y):
            loss, grads = jax.value_and_grad(mean_loss)(params, x, y)
            # inject_hyperparams reads each model's learning rate from its opt_state; the
            # value given here is not used.
            updates, opt_state = self.optimizer(learning_rate=0.0).update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        def factored_update(params, opt_state, x, y):
            def features(body):  # with a constant 1 for the bias column
                h = self.model.features(body, x)
                return jnp.concatenate([h, jnp.ones((h.shape[0], 1), h.dtype)], 1)

            hidden, backprop = jax.vjp(features, params["body"])
            loss, grad_hidden, output = softfam.factored_step(
                params["output"], hidden, y, self.loss_on_statistics,
                opt_state.hyperparams["learning_rate"],
            )
            (grads,) = backprop(grad_hidden)
            updates, opt_state = self.optimizer(learning_rate=0.0).update(grads, opt_state, params["body"])
            return {"body": optax.apply_updates(params["body"], updates), "output": output}, opt_state, loss

        def step(carry, batch_indices):
            params, opt_state = carry
            x = self._shard_batch(images[batch_indices], axis=1)
            y = self._shard_batch(labels[batch_indices], axis=1)
            if self.factored:
                params, opt_state, loss = jax.lax.map(lambda a: factored_update(*a), (params, opt_state, x, y))
            else:
                params, opt_state, loss = jax.vmap(update)(params, opt_state, x, y)
            return (params, opt_state), loss

        (params, opt_state), step_losses = jax.lax.scan(
            step, (state["params"], state["opt_state"]), indices
        )
        return {**state, "params": params, "opt_state": opt_state}, jnp.mean(step_losses, 0)

    def _evaluate_chunks(self, params, images, labels, weights) -> metrics.Totals:
        """Sums over ``images`` (chunks, chunk size, ...) for every model."""

        if self.factored:
            params = jax.vmap(self._dense_params)(params)

        def chunk_totals(chunk):
            x, y, w = (self._shard_batch(a, 0) for a in chunk)
            logits = jax.vmap(self.model.apply, in_axes=(0, None))(params, x)
            return jax.vmap(metrics.totals, in_axes=(0, None, None, None))(
                logits, y, w, self.log_probabilities
            )

        per_chunk = jax.lax.map(chunk_totals, (images, labels, weights))
        return jax.tree.map(lambda t: jnp.sum(t, 0), per_chunk)

    @staticmethod
    def _dense_params(params: dict) -> dict:
        """The model's parameters with a dense output layer, from a factored one."""
        weights = softfam.dense_output_weights(params["output"])
        return {**params["body"], "output": {"w": weights[:, :-1].T, "b": weights[:, -1]}}

    def evaluate(self, state: dict, split: Split) -> list[dict]:
        """The metrics of every model on ``split``, in the order of ``config.grid``."""
        n = split.labels.shape[0]
        chunk = -(-min(EVAL_CHUNK, n) // self.mesh.size) * self.mesh.size  # shards evenly
        chunks = -(-n // chunk)
        pad = chunks * chunk - n  # padding examples get weight 0

        def chunked(array):
            array = np.concatenate([array, np.zeros((pad, *array.shape[1:]), array.dtype)])
            return array.reshape(chunks, chunk, *array.shape[1:])

        weights = chunked(np.ones(n, np.float32))
        total = self.evaluate_chunks(
            state["params"], chunked(split.images), chunked(split.labels), weights
        )
        has_probs = self.log_probabilities is not None
        return [
            metrics.summarize(jax.tree.map(lambda t: t[m], total), has_probs)
            for m in range(len(self.config.grid))
        ]


def _save_checkpoint(path: Path, state: dict, history: list[dict]) -> None:
    leaves = jax.tree.leaves(state)
    with open_atomically(path, "wb") as f:
        np.savez(f, history=json.dumps(history), **{f"leaf_{i}": np.asarray(v) for i, v in enumerate(leaves)})


def _load_checkpoint(path: Path, like: dict) -> tuple[dict, list[dict]]:
    treedef = jax.tree.structure(like)
    with np.load(path) as saved:
        leaves = [saved[f"leaf_{i}"] for i in range(treedef.num_leaves)]
        history = json.loads(str(saved["history"]))
    return jax.tree.unflatten(treedef, [jnp.asarray(v) for v in leaves]), history


def _models_record(config: RunConfig, summaries: list[dict], **per_model) -> list[dict]:
    return [
        {"learning_rate": lr, "seed": seed, **summary, **{k: v[m] for k, v in per_model.items()}}
        for m, ((lr, seed), summary) in enumerate(zip(config.grid, summaries))
    ]


def run(config: RunConfig, run_dir: Path, data: Dataset, progress: str = "") -> list[dict]:
    """Trains (or resumes, or just reads) the run in ``run_dir``; returns its metrics records.

    Each record is ``{"split": "valid" | "test", "epoch": int, "seconds": float, "models":
    [{"learning_rate", "seed", "error", "nll", "ece", "brier", ...}, ...]}``.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if config_path.exists():
        saved = RunConfig.from_json(json.loads(config_path.read_text()))
        if saved != config:
            raise ValueError(
                f"{run_dir} holds a run of another configuration ({config_path}); "
                "choose another output directory or delete that one"
            )
    else:
        write_json_atomically(config_path, config.to_json())
    checkpoint = run_dir / "checkpoint.npz"
    trainer = Trainer(config, data)
    state, history = trainer.init(), []
    if checkpoint.exists():
        state, history = _load_checkpoint(checkpoint, state)
    write_json_atomically(run_dir / "env.json", environment())
    write_jsonl_atomically(run_dir / "metrics.jsonl", history)  # drops any later, lost line
    done = sum(r["split"] == "valid" for r in history)
    for epoch in tqdm(range(done, config.epochs), desc=progress, initial=done,
                      total=config.epochs, leave=False, disable=done == config.epochs):
        start = time.perf_counter()
        state, train_loss = trainer.train_epoch(state, jnp.asarray(epoch))
        train_loss = jax.device_get(train_loss)
        seconds = time.perf_counter() - start
        summaries = trainer.evaluate(state, data.valid)
        history.append({
            "split": "valid", "epoch": epoch + 1, "train_seconds": seconds,
            "train_examples": trainer.steps_per_epoch * config.batch_size,
            "models": _models_record(config, summaries, train_loss=[float(v) for v in train_loss]),
        })
        if epoch + 1 == config.epochs and config.evaluate_test:
            summaries = trainer.evaluate(state, data.test)
            history.append({"split": "test", "epoch": epoch + 1,
                            "models": _models_record(config, summaries)})
        _save_checkpoint(checkpoint, state, history)
        write_jsonl_atomically(run_dir / "metrics.jsonl", history)
    return history
