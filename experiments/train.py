"""Training: one model at a time, compiled once per loss and model, early-stopped, resumable.

A ``Trainer`` holds the jitted functions for one loss on one model and dataset: ``init``,
``train_epoch`` (one ``lax.scan`` over the epoch's minibatches) and ``evaluate``. The learning
rate (in the optimizer state, ``optax.inject_hyperparams``) and the loss's hyperparameters are
traced arguments, so every tuning and final run of the loss reuses the same compiled programs.
Each seed is split into keys for initialisation and data order (no dropout), so a seed gives
the same numbers whatever the learning rate.

``run`` trains the models of a ``Run`` (every learning rate and seed) one after another. A
model trains up to ``max_epochs`` and stops when its validation metric
(``Loss.stopping_metric``: NLL; error for squared error and the Z-loss) has not improved for
``patience`` epochs; the parameters of its best epoch are then tested, as they are and, for a
loss with a distribution, after temperature scaling: the logits divided by the temperature that
minimises the validation NLL (``fit_temperature``). A model whose training loss becomes NaN or
inf stops there, marked diverged.

Devices: the minibatch axis is sharded over every local device (a 1-D ``Mesh``); parameters and
data are replicated. For several hosts, call ``jax.distributed.initialize()`` first
(``python -m experiments run ... --distributed``).

The run directory holds ``config.json`` and ``env.json`` (written atomically; the machine of
the last sitting that trained in it, kept when a finished run is only read), ``metrics.jsonl``
(append-only, the one record of the history: a ``valid`` record per model and epoch, an ``end``
record per model) and ``checkpoints/`` (Orbax, the model in training). A run started again in
the same directory resumes: finished models are read back, the model in training restarts
from its checkpoint, and since an epoch depends only on the state and the epoch number, the
numbers are those of a run never interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from scipy import optimize
from tqdm.auto import tqdm

from experiments import losses, metrics, models
from experiments.configs import Config
from experiments.data import Dataset, Split
from experiments.io import write_json_atomically, write_text_atomically

EVAL_CHUNK = 1000  # examples per evaluation step, fewer where their logits would exceed
EVAL_LOGITS = 2**24  # this many (64 MiB in float32; 282 examples at 59,335 classes)
CHECKPOINT_SECONDS = 30.0  # a model in training is saved at most this often (and at its end)
OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}


class RunError(ValueError):
    """A run that cannot start or resume as asked: settings that do not fit the data, or a run
    directory holding another configuration or checkpoint structure."""


@dataclass(frozen=True)
class Run:
    """What one run directory trains: a model per (learning rate, seed), one loss setting."""

    loss: str
    hyper: dict[str, float]  # the loss's hyperparameters
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    test: bool  # evaluate each model's best epoch on the test set

    @property
    def grid(self) -> list[tuple[float, int]]:
        return [(lr, seed) for lr in self.learning_rates for seed in self.seeds]


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
        "orbax": ocp.__version__,
        "numpy": np.__version__,
        "devices": [str(d) for d in jax.devices()],
        "platform": platform.platform(),
        "git_commit": commit,
    }


class Trainer:
    """The compiled functions of one loss on one model and dataset, for one model at a time."""

    def __init__(self, config: Config, loss: str, data: Dataset):
        self.config = config
        self.model = models.get(config.model, config.widths)
        self.loss = losses.get(loss)
        self.optimizer = optax.inject_hyperparams(OPTIMIZERS[config.optimizer])
        devices = np.array(jax.devices())
        if config.batch_size % devices.size:
            raise RunError(
                f"batch_size {config.batch_size} must be a multiple of the number of devices "
                f"({devices.size}) to shard the batch over them"
            )
        self.mesh = Mesh(devices, ("batch",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        train = data.train
        if config.train_subset is not None:
            train = Split(train.images[: config.train_subset], train.labels[: config.train_subset])
        self.train = jax.device_put((train.images, train.labels), self.replicated)
        self.steps_per_epoch = train.labels.shape[0] // config.batch_size
        if self.steps_per_epoch == 0:
            raise RunError(
                f"batch_size {config.batch_size} exceeds the {train.labels.shape[0]} training examples"
            )
        self.input_shape = train.images.shape[1:]
        self.num_classes = data.num_classes
        self.class_buckets = jnp.asarray(metrics.class_buckets(train.labels, data.num_classes))
        self.init = jax.jit(self._init, out_shardings=self.replicated)
        self.train_epoch = jax.jit(self._train_epoch, donate_argnums=0,
                                   out_shardings=self.replicated)
        self.evaluate_chunks = jax.jit(self._evaluate_chunks)
        self._chunks: dict[int, tuple] = {}  # id(split): (split, its chunks on the devices)

    def _shard_batch(self, array: jax.Array, axis: int) -> jax.Array:
        spec = [None] * array.ndim
        spec[axis] = "batch"
        return jax.lax.with_sharding_constraint(array, NamedSharding(self.mesh, PartitionSpec(*spec)))

    def initial_params(self, key: jax.Array) -> dict:
        return self.model.init(key, self.input_shape, self.num_classes)

    def trained_params(self, params: dict) -> dict:
        """The parameters the optimizer updates."""
        return params

    def dense_params(self, params: dict) -> dict:
        """The parameters as ``self.model.apply`` takes them."""
        return params

    def update(self, params, opt_state, x, y, hyper):
        """One optimizer step on the minibatch ``(x, y)``: ``(params, opt_state, mean loss)``."""

        def mean_loss(params):
            return jnp.mean(self.loss.loss(self.model.apply(params, x), y, **hyper))

        loss, grads = jax.value_and_grad(mean_loss)(params)
        # inject_hyperparams reads the learning rate from opt_state; the value here is unused.
        updates, opt_state = self.optimizer(learning_rate=0.0).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def _init(self, seed: jax.Array, learning_rate: jax.Array) -> dict:
        """The state of a model: parameters, optimizer state, data-order key."""
        init_key, data_key = jax.random.split(jax.random.key(seed))
        params = self.initial_params(init_key)
        opt_state = self.optimizer(learning_rate=learning_rate).init(self.trained_params(params))
        return {"params": params, "opt_state": opt_state, "data_key": jax.random.key_data(data_key)}

    def _epoch_order(self, state: dict, epoch: jax.Array) -> jax.Array:
        """The training examples' indices of epoch ``epoch``, in minibatches (steps, batch)."""
        steps, batch = self.steps_per_epoch, self.config.batch_size
        key = jax.random.fold_in(jax.random.wrap_key_data(state["data_key"]), epoch)
        return jax.random.permutation(key, self.train[1].shape[0])[: steps * batch].reshape(steps, batch)

    def _train_steps(self, state: dict, order: jax.Array, hyper: dict) -> tuple[dict, jax.Array]:
        """One optimizer step per row of ``order``; returns the state and each step's loss."""
        images, labels = self.train

        def step(carry, batch_indices):
            x = self._shard_batch(images[batch_indices], axis=0)
            y = self._shard_batch(labels[batch_indices], axis=0)
            params, opt_state, loss = self.update(*carry, x, y, hyper)
            return (params, opt_state), loss

        (params, opt_state), losses_ = jax.lax.scan(step, (state["params"], state["opt_state"]), order)
        return {**state, "params": params, "opt_state": opt_state}, losses_

    def _train_epoch(self, state: dict, epoch: jax.Array, hyper: dict) -> tuple[dict, jax.Array]:
        state, losses_ = self._train_steps(state, self._epoch_order(state, epoch), hyper)
        return state, jnp.mean(losses_)

    def _evaluate_chunks(self, params, hyper, temperature, images, labels, weights) -> metrics.Totals:
        """Sums over ``images`` (chunks, chunk size, ...), the probabilities those of the
        logits divided by ``temperature``."""
        params = self.dense_params(params)
        log_probabilities = None if self.loss.log_probabilities is None else (
            lambda logits: self.loss.evaluation_log_probabilities(logits / temperature, hyper))

        def chunk_totals(chunk):
            x, y, w = (self._shard_batch(a, 0) for a in chunk)
            logits = self.model.apply(params, x)
            return (metrics.totals(logits, y, w, log_probabilities, self.class_buckets[y]),
                    metrics.predictions(logits, log_probabilities))

        totals, predictions = jax.lax.map(chunk_totals, (images, labels, weights))
        return jax.tree.map(lambda t: jnp.sum(t, 0), totals), predictions.reshape(-1)

    def _device_chunks(self, split: Split) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``split``'s images, labels and weights in chunks (chunks, chunk size, ...) on the
        devices, padded with weight-0 examples; made once per split."""
        if id(split) not in self._chunks:
            n = split.labels.shape[0]
            chunk = min(EVAL_CHUNK, max(1, EVAL_LOGITS // self.num_classes), n)
            chunk = -(-chunk // self.mesh.size) * self.mesh.size  # shards evenly
            chunks = -(-n // chunk)
            pad = chunks * chunk - n

            def chunked(array):
                array = np.concatenate([array, np.zeros((pad, *array.shape[1:]), array.dtype)])
                return array.reshape(chunks, chunk, *array.shape[1:])

            arrays = (chunked(split.images), chunked(split.labels), chunked(np.ones(n, np.float32)))
            self._chunks[id(split)] = (split, jax.device_put(arrays, self.replicated))
        return self._chunks[id(split)][1]

    def evaluate(self, params: dict, hyper: dict, split: Split, temperature: float = 1.0,
                 per_example: bool = False) -> dict:
        """The model's metrics on ``split``, its logits divided by ``temperature``; with
        ``per_example``, also which examples it classified correctly (``metrics.pack_correct``)."""
        total, predicted = self.evaluate_chunks(params, hyper, np.float32(temperature),
                                                *self._device_chunks(split))
        summary = metrics.summarize(total, self.loss.log_probabilities is not None)
        if per_example:
            n = split.labels.shape[0]
            summary |= {"examples": n,
                        "correct": metrics.pack_correct(np.asarray(predicted)[:n], split.labels)}
        return summary

    def epoch_temporary_bytes(self, state: dict, hyper: dict) -> int:
        """The temporary memory of the compiled training epoch (XLA's memory analysis)."""
        compiled = self.train_epoch.lower(state, np.int32(0), hyper).compile()
        return int(compiled.memory_analysis().temp_size_in_bytes)

    def fit_temperature(self, params: dict, hyper: dict, split: Split) -> float:
        """The temperature ``T`` minimising the NLL of the logits divided by ``T`` on ``split``
        (Guo et al. 2017): a bounded scalar search over log T, for T in [0.05, 20]. While the
        minimum found lies at an edge (within 0.01; a scale-free loss's logits have any
        scale), the next interval of the same width beyond that edge is searched too, and
        its minimum kept if it is lower, until |log T| passes log 1e8. For softmax the NLL is
        convex in 1/T, so this finds its minimum; for the other normalizers, a local one."""
        def nll(log_t):
            return self.evaluate(params, hyper, split, float(np.exp(log_t)))["nll"]

        def minimum(low, high):  # (log T, its NLL)
            result = optimize.minimize_scalar(nll, bounds=(low, high), method="bounded",
                                              options={"xatol": 1e-3})
            return result.x, result.fun

        low, high = np.log(0.05), np.log(20.0)
        log_t, lowest = minimum(low, high)
        direction = int(log_t > high - 0.01) - int(log_t < low + 0.01)
        while direction and abs(log_t) < np.log(1e8):
            low, high = (high, 2 * high - low) if direction > 0 else (2 * low - high, low)
            beyond, at_beyond = minimum(low, high)
            if at_beyond >= lowest:
                break
            log_t, lowest = beyond, at_beyond
            if (high - log_t if direction > 0 else log_t - low) > 0.01:
                break
        return float(np.exp(log_t))


class LinearTrainer(Trainer):
    """A ``Trainer`` whose loss is softfam's linear loss of the model's features and output
    layer: the same loss and gradients as the dense path, without the (batch, D) logits."""

    def update(self, params, opt_state, x, y, hyper):
        def mean_loss(params):
            hidden = self.model.features(params, x)
            output = params["output"]
            return jnp.mean(self.loss.linear(hidden, output["w"], y, output["b"], **hyper))

        loss, grads = jax.value_and_grad(mean_loss)(params)
        updates, opt_state = self.optimizer(learning_rate=0.0).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss


def trainer(config: Config, loss: str, data: Dataset) -> Trainer:
    """The trainer of ``loss``: the factored layer's for the spherical family, or the linear
    loss's, when the config asks for it and the loss has one (``experiments.factored``,
    ``LinearTrainer``); the dense one otherwise."""
    entry = losses.get(loss)
    if config.output_layer == "factored" and entry.on_statistics is not None:
        from experiments.factored import FactoredTrainer

        return FactoredTrainer(config, loss, data)
    if config.output_layer == "linear" and entry.linear is not None:
        return LinearTrainer(config, loss, data)
    return Trainer(config, loss, data)


def dense_reference(config: Config, data: Dataset) -> dict:
    """How fast, and in how much temporary memory, log-softmax trains through the dense logits
    on ``config``'s model and data, to stand beside the linear losses in their table: the
    compiled epoch's temporary memory, and one epoch timed after a compiling one (seed 0, the
    first learning rate of the grid)."""
    trainer = Trainer(config, "log-softmax", data)
    state = trainer.init(jnp.int32(0), jnp.float32(config.learning_rates[0]))
    memory = trainer.epoch_temporary_bytes(state, {})
    seconds = []
    for epoch in range(2):
        start = time.perf_counter()
        state, loss = trainer.train_epoch(state, np.int32(epoch), {})
        jax.block_until_ready(loss)
        seconds.append(time.perf_counter() - start)
    return {"train_epoch_temporary_bytes": memory, "train_seconds": seconds[1],
            "train_examples": trainer.steps_per_epoch * config.batch_size, "env": environment()}


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def read_records(run_dir: Path) -> list[dict]:
    """The run's records. A last line cut short by a kill is removed from the file (its
    record is written again when the run resumes)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    if complete != text:
        with open(path, "r+") as f:
            f.truncate(len(complete.encode()))
    return [json.loads(line) for line in complete.splitlines()]


def _forget_epochs_after(run_dir: Path, identity: dict, epoch: int) -> None:
    """Removes the valid records of model ``identity`` after ``epoch`` from the run's file."""
    def later(record):
        return (record["split"] == "valid" and record["epoch"] > epoch
                and all(record[k] == v for k, v in identity.items()))

    path = Path(run_dir) / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    write_text_atomically(path, "".join(line for line in lines if not later(json.loads(line))))


class _Checkpoints:
    """Orbax checkpoints of the model in training: its state and its best parameters so far."""

    def __init__(self, directory: Path, model_index: int):
        self.directory = directory.absolute() / f"model-{model_index}"
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, epoch: int, state: dict, best: dict) -> None:
        self.manager.save(epoch, args=ocp.args.StandardSave({"state": state, "best": best}))
        self.manager.wait_until_finished()

    def restore(self, like: dict) -> tuple[Optional[int], Optional[dict]]:
        """``(epoch, {"state", "best"})`` of the latest checkpoint, or ``(None, None)``."""
        epoch = self.manager.latest_step()
        if epoch is None:
            return None, None
        try:
            saved = self.manager.restore(epoch, args=ocp.args.StandardRestore(like))
        except (ValueError, KeyError, TypeError) as error:
            self.close()
            raise RunError(
                f"the checkpoint in {self.directory} holds a state of another structure "
                f"than this code builds ({error}); delete it to start this model again"
            ) from None
        return epoch, saved

    def close(self) -> None:
        """Stops the manager's background threads."""
        self.manager.close()


def _train_model(trainer: Trainer, run: Run, model_index: int, run_dir: Path, data: Dataset,
                 records: list[dict], progress) -> list[dict]:
    """Trains (or resumes) one model of ``run``; returns its records, appended as it goes.
    It resumes from its latest checkpoint (or epoch 0 without one); records of later epochs
    are removed and made again, so that every record describes the model that goes on (on
    another machine, retrained epochs can come out differently)."""
    config = trainer.config
    learning_rate, seed = run.grid[model_index]
    identity = {"learning_rate": learning_rate, "seed": seed}
    hyper = {k: jnp.float32(v) for k, v in run.hyper.items()}
    state = trainer.init(jnp.int32(seed), jnp.float32(learning_rate))
    best_params = state["params"]
    checkpoints = _Checkpoints(run_dir / "checkpoints", model_index)
    restored_epoch, restored = checkpoints.restore({"state": state, "best": best_params})
    epoch = 0
    if restored is not None:
        epoch = restored_epoch
        state, best_params = (jax.device_put(restored[k], trainer.replicated) for k in ("state", "best"))
    valid = [r for r in records if r["split"] == "valid"]
    if len(valid) > epoch:
        _forget_epochs_after(run_dir, identity, epoch)
        valid = valid[:epoch]
    metric = trainer.loss.stopping_metric
    best = min(valid, key=metric, default=None)
    diverged = False
    last_saved = time.monotonic()
    while epoch < config.max_epochs:
        if best is not None and config.patience is not None and epoch - best["epoch"] >= config.patience:
            break
        start = time.perf_counter()
        state, train_loss = trainer.train_epoch(state, np.int32(epoch), hyper)
        train_loss = float(train_loss)
        seconds = time.perf_counter() - start
        epoch += 1
        summary = trainer.evaluate(state["params"], hyper, data.valid)
        record = {"split": "valid", **identity, "epoch": epoch, "train_loss": train_loss,
                  "train_seconds": seconds,
                  "train_examples": trainer.steps_per_epoch * config.batch_size, **summary}
        _append(run_dir / "metrics.jsonl", record)
        valid.append(record)
        progress.update()
        if not math.isfinite(train_loss):
            diverged = True
            break
        if best is None or metric(record) < metric(best):
            best, best_params = record, jax.tree.map(jnp.copy, state["params"])  # not donated
        if time.monotonic() - last_saved > CHECKPOINT_SECONDS and epoch < config.max_epochs:
            checkpoints.save(epoch, state, best_params)
            last_saved = time.monotonic()
    tested = run.test and not diverged
    end = {"split": "end", **identity, "best_epoch": None if diverged else best["epoch"],
           "stop_epoch": epoch, "diverged": diverged,
           "test": trainer.evaluate(best_params, hyper, data.test, per_example=True) if tested else None}
    if tested and trainer.loss.log_probabilities is not None:
        temperature = trainer.fit_temperature(best_params, hyper, data.valid)
        end |= {"temperature": temperature,
                "test_scaled": trainer.evaluate(best_params, hyper, data.test, temperature)}
    _append(run_dir / "metrics.jsonl", end)
    checkpoints.close()
    shutil.rmtree(checkpoints.directory, ignore_errors=True)  # the records say it all
    return valid + [end]


def run(config: Config, run: Run, run_dir: Path, data: Dataset, trainer: Trainer,
        progress: str = "") -> list[dict]:
    """Trains (or resumes, or just reads) the models of ``run`` in ``run_dir``; returns its
    records: ``valid`` records (``learning_rate``, ``seed``, ``epoch``, ``train_loss``,
    ``train_seconds``, ``train_examples`` and the metrics of ``experiments.metrics``) and an
    ``end`` record per model (``best_epoch``, ``stop_epoch``, ``diverged``, ``test``)."""
    run_dir = Path(run_dir)
    saved_config = {"config": dataclasses.asdict(config), "run": dataclasses.asdict(run)}
    config_path = run_dir / "config.json"
    if config_path.exists():
        if json.loads(config_path.read_text()) != json.loads(json.dumps(saved_config)):
            raise RunError(
                f"{run_dir} holds a run of another configuration ({config_path}); "
                "choose another output directory or delete that one"
            )
    else:
        write_json_atomically(config_path, saved_config)
    records = read_records(run_dir)
    ended = {(r["learning_rate"], r["seed"]) for r in records if r["split"] == "end"}
    trains = bool(set(run.grid) - ended)
    if trains or not (run_dir / "env.json").exists():  # this sitting's machine
        env = environment()
        if run.test:  # the memory a final model trains in, for the tables
            state = trainer.init(jnp.int32(run.seeds[0]), jnp.float32(run.learning_rates[0]))
            hyper = {k: jnp.float32(v) for k, v in run.hyper.items()}
            env["train_epoch_temporary_bytes"] = trainer.epoch_temporary_bytes(state, hyper)
        write_json_atomically(run_dir / "env.json", env)
    history = []
    with tqdm(desc=progress, total=len(run.grid) * config.max_epochs, leave=False) as bar:
        for index, (learning_rate, seed) in enumerate(run.grid):
            mine = [r for r in records if r["learning_rate"] == learning_rate and r["seed"] == seed]
            if any(r["split"] == "end" for r in mine):
                history += mine
                bar.update(config.max_epochs)
                continue
            history += _train_model(trainer, run, index, run_dir, data, mine, bar)
    return history
