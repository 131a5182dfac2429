"""Training one model, top to bottom: create the state, train steps, evaluate, fit.

``Program`` holds the compiled functions of one loss on one config and dataset: ``init``,
``train_steps`` (one ``lax.scan`` over minibatches) and ``evaluate``. The learning rate, the
weight decay, the dropout rate and the loss's hyperparameters are traced arguments, so every
tuning and final model of the loss reuses the same compiled programs. A seed is split into
keys for initialisation, data order and dropout, so a seed gives the same numbers whatever
the hyperparameters.

``fit`` trains one model up to ``max_epochs``, validating every ``eval_every`` steps (at each
epoch's end by default), and stops when the validation metric (``Loss.stopping_metric``: NLL;
error for squared error and the Z-loss) has not improved for ``patience`` validations. The
parameters of the best validation are then tested, as they are and, for a loss with a
distribution, after temperature scaling: the logits divided by the temperature that minimises
the validation NLL (``fit_temperature``), and mixed with the unigram by the weight that
minimises the validation NLL (``fit_unigram_weight``). A model whose training loss becomes NaN or inf
stops there, marked diverged. It returns the model's record (``experiments.records``).

While it trains, ``work_dir`` holds ``metrics.jsonl`` (one line per validation) and an Orbax
checkpoint of the state and the best parameters, saved at most every ``CHECKPOINT_SECONDS``.
Started again in the same directory, it resumes from the checkpoint; since a step depends only
on the state, the numbers are those of a run never interrupted.

Devices: the minibatch axis is sharded over every device (a 1-D ``Mesh``); parameters and data
are replicated. For several hosts, call ``jax.distributed.initialize()`` first
(``python -m experiments run ... --distributed``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from scipy import optimize

from experiments import losses, metrics, models, output_layers, records
from experiments.config import MODEL_HYPERPARAMETERS, OPTIMIZER_HYPERPARAMETERS, Config
from experiments.data import Dataset, Split
from experiments.io import write_text_atomically
from experiments.records import RunError

EVAL_CHUNK = 1000  # examples per evaluation step, fewer where their logits would exceed
EVAL_LOGITS = 2**24  # this many (64 MiB in float32; 282 examples at 59,335 classes)
CHECKPOINT_SECONDS = 30.0  # a model in training is saved at most this often (and at its end)


def environment() -> dict:
    """Versions, devices and the git commit of this sitting."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    import jaxlib

    return {"python": platform.python_version(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "optax": optax.__version__, "orbax": ocp.__version__,
            "numpy": np.__version__, "devices": [str(d) for d in jax.devices()],
            "platform": platform.platform(), "git_commit": commit}


def traced(point: dict[str, float]) -> dict:
    """A point's values as the float32 arrays the compiled programs take."""
    return {k: jnp.float32(v) for k, v in point.items()}


def decayed(params) -> dict:
    """Which parameters weight decay applies to: weight matrices, kernels and embeddings
    (two or more axes), not biases."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def optimizer(config: Config, steps_per_epoch: int) -> Callable[..., optax.GradientTransformation]:
    """The config's optimizer as a function of its traced hyperparameters ``learning_rate``
    and ``weight_decay``, which it keeps in its state (``optax.inject_hyperparams``):
    gradient clipping by global norm (``clip_norm``), Adam's scaling (none for SGD), decoupled
    weight decay as in AdamW (when the config uses it), the schedule's factor, the step."""
    def transform(learning_rate, weight_decay):
        transforms = []
        if config.clip_norm is not None:
            transforms.append(optax.clip_by_global_norm(config.clip_norm))
        if config.optimizer == "adam":
            transforms.append(optax.scale_by_adam())
        if config.uses("weight_decay"):
            transforms.append(optax.add_decayed_weights(weight_decay, decayed))
        if config.schedule != "constant":
            transforms.append(optax.scale_by_schedule(schedule(config, steps_per_epoch)))
        transforms.append(optax.scale_by_learning_rate(learning_rate))
        return optax.chain(*transforms)

    return optax.inject_hyperparams(transform)


def schedule(config: Config, steps_per_epoch: int) -> optax.Schedule:
    """The factor on the learning rate at each step: a linear warmup from 0 over
    ``warmup_epochs``, then a cosine decay to 0 at ``max_epochs`` (for "warmup-cosine")."""
    return optax.warmup_cosine_decay_schedule(
        0.0, 1.0, round(config.warmup_epochs * steps_per_epoch),
        config.max_epochs * steps_per_epoch)


class Program:
    """The compiled functions of one loss on one config and dataset."""

    def __init__(self, config: Config, loss: str, data: Dataset):
        self.config = config
        self.model = models.get(config.model, config.widths)
        self.loss = losses.get(loss)
        self.layer = output_layers.get(config.output_layer, self.loss)
        devices = np.array(jax.devices())
        if config.batch_size % devices.size:
            raise RunError(f"batch_size {config.batch_size} must be a multiple of the number of "
                           f"devices ({devices.size}) to shard the batch over them")
        self.mesh = Mesh(devices, ("batch",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        train = data.train
        if config.train_subset is not None:
            train = Split(train.images[: config.train_subset], train.labels[: config.train_subset])
        self.train = jax.device_put((train.images, train.labels), self.replicated)
        self.steps_per_epoch = train.labels.shape[0] // config.batch_size
        if self.steps_per_epoch == 0:
            raise RunError(f"batch_size {config.batch_size} exceeds the "
                           f"{train.labels.shape[0]} training examples")
        self.input_shape = train.images.shape[1:]
        self.num_classes = data.num_classes
        self.class_buckets = jnp.asarray(metrics.class_buckets(train.labels, data.num_classes))
        self.log_prior = jnp.log(jnp.asarray(metrics.prior(train.labels, data.num_classes)))
        self.optimizer = optimizer(config, self.steps_per_epoch)
        self.init = jax.jit(self._init, out_shardings=self.replicated)
        # Every output replicated, so that each process of a multi-process run can read it.
        self.epoch_order = jax.jit(self._epoch_order, out_shardings=self.replicated)
        self.train_steps = jax.jit(self._train_steps, donate_argnums=0,
                                   out_shardings=self.replicated)
        self.evaluate_chunks = jax.jit(self._evaluate_chunks, out_shardings=self.replicated)
        self._chunks: dict[int, tuple] = {}  # id(split): (split, its chunks on the devices)

    def _shard_batch(self, array: jax.Array) -> jax.Array:
        spec = PartitionSpec("batch", *[None] * (array.ndim - 1))
        return jax.lax.with_sharding_constraint(array, NamedSharding(self.mesh, spec))

    def _init(self, seed: jax.Array, hyper: dict) -> dict:
        """A model's state: parameters, optimizer state, data-order and dropout keys, step."""
        root = jax.random.key(seed)
        init_key, data_key = jax.random.split(root)
        params = self.model.init(init_key, self.input_shape, self.num_classes)
        params["output"] = self.layer.init(params["output"])
        opt_state = self._optimizer(hyper).init(self._optimized(params))
        return {"params": params, "opt_state": opt_state, "step": jnp.int32(0),
                "data_key": jax.random.key_data(data_key),
                "dropout_key": jax.random.key_data(jax.random.fold_in(root, 1))}

    def _optimized(self, params: dict) -> dict:
        """The parameters the optimizer updates: all but a self-updating output layer's."""
        if self.layer.maintain_every is None:
            return params
        return {k: v for k, v in params.items() if k != "output"}

    def _optimizer(self, hyper: dict) -> optax.GradientTransformation:
        return self.optimizer(**{k: hyper[k] for k in OPTIMIZER_HYPERPARAMETERS})

    def _learning_rate(self, hyper: dict, step) -> jax.Array:
        """The learning rate at ``step``, after the schedule."""
        if self.config.schedule == "constant":
            return hyper["learning_rate"]
        return hyper["learning_rate"] * schedule(self.config, self.steps_per_epoch)(step)

    def _epoch_order(self, state: dict, epoch: jax.Array) -> jax.Array:
        """The training examples' indices of epoch ``epoch``, in minibatches (steps, batch)."""
        steps, batch = self.steps_per_epoch, self.config.batch_size
        key = jax.random.fold_in(jax.random.wrap_key_data(state["data_key"]), epoch)
        return jax.random.permutation(key, self.train[1].shape[0])[: steps * batch].reshape(steps, batch)

    def _train_steps(self, state: dict, order: jax.Array, hyper: dict) -> tuple[dict, jax.Array]:
        """One optimizer step per row of ``order``; returns the state and each step's loss."""
        images, labels = self.train
        loss_hyper = {k: v for k, v in hyper.items()
                      if k not in OPTIMIZER_HYPERPARAMETERS + MODEL_HYPERPARAMETERS}
        dropout_key = jax.random.wrap_key_data(state["dropout_key"])

        def step(carry, batch_indices):
            params, opt_state, step = carry
            x, y = self._shard_batch(images[batch_indices]), self._shard_batch(labels[batch_indices])
            dropout = ((hyper["dropout"], jax.random.fold_in(dropout_key, step))
                       if self.config.uses("dropout") else None)
            body = {k: v for k, v in params.items() if k != "output"}
            hidden, backprop = jax.vjp(lambda body: self.model.features(body, x, dropout), body)
            loss, grad_hidden, grad_output, output = self.layer.step(
                params["output"], hidden, y, loss_hyper, self._learning_rate(hyper, step))
            (grads,) = backprop(grad_hidden)
            if grad_output is not None:
                grads["output"] = grad_output
            optimized = self._optimized({**params, "output": output})
            updates, opt_state = self._optimizer(hyper).update(grads, opt_state, optimized)
            params = {**params, "output": output, **optax.apply_updates(optimized, updates)}
            return (params, opt_state, step + 1), loss

        carry = (state["params"], state["opt_state"], state["step"])
        (params, opt_state, step), step_losses = jax.lax.scan(step, carry, order)
        return {**state, "params": params, "opt_state": opt_state, "step": step}, step_losses

    def dense_params(self, params: dict) -> dict:
        """The parameters as ``self.model.apply`` takes them."""
        return {**params, "output": self.layer.dense(params["output"])}

    def _evaluate_chunks(self, params, hyper, temperature, unigram_weight, images, labels, weights):
        """Sums over ``images`` (chunks, chunk size, ...), the probabilities those of the
        logits divided by ``temperature``, mixed with the unigram as ``(1 - w) p + w prior``
        for ``w = unigram_weight``."""
        params = self.dense_params(params)
        loss_hyper = {k: v for k, v in hyper.items()
                      if k not in OPTIMIZER_HYPERPARAMETERS + MODEL_HYPERPARAMETERS}

        def mixed(logits):
            own = self.loss.log_probabilities(logits / temperature, **loss_hyper)
            return jnp.logaddexp(jnp.log1p(-unigram_weight) + own,
                                 jnp.log(unigram_weight) + self.log_prior[None, :])

        log_probabilities = None if self.loss.log_probabilities is None else mixed

        def chunk_totals(chunk):
            x, y, w = (self._shard_batch(a) for a in chunk)
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
                 per_example: bool = False, unigram_weight: float = 0.0) -> dict:
        """The model's metrics on ``split``, its logits divided by ``temperature`` and its
        probabilities mixed with the unigram's by ``unigram_weight``; with ``per_example``,
        also which examples it classified correctly."""
        total, predicted = self.evaluate_chunks(params, hyper, np.float32(temperature),
                                                np.float32(unigram_weight),
                                                *self._device_chunks(split))
        summary = metrics.summarize(total, self.loss.log_probabilities is not None)
        if per_example:
            n = split.labels.shape[0]
            summary |= {"examples": n,
                        "correct": records.pack_correct(np.asarray(predicted)[:n], split.labels)}
        return summary

    def epoch_temporary_bytes(self, point: dict[str, float]) -> int:
        """The temporary memory of the compiled training steps up to the first pause of an
        epoch (the whole epoch unless it validates or maintains within; XLA's analysis)."""
        hyper = traced(point)
        state = self.init(jnp.int32(0), hyper)
        order = self.epoch_order(state, np.int32(0))[: self.segment_ends(0)[0]]
        compiled = self.train_steps.lower(state, order, hyper).compile()
        return int(compiled.memory_analysis().temp_size_in_bytes)

    def segment_ends(self, offset: int) -> list[int]:
        """The steps within an epoch, after ``offset``, at which training pauses: each
        validation (every ``eval_every`` steps, and the epoch's end) and, for a layer that
        needs it, each maintenance."""
        ends = {self.steps_per_epoch}
        for every in (self.config.eval_every, self.layer.maintain_every):
            if every is not None:
                ends |= set(range(every, self.steps_per_epoch, every))
        return sorted(end for end in ends if end > offset)

    def validates_at(self, step: int) -> bool:
        within = step % self.steps_per_epoch
        every = self.config.eval_every
        return within == 0 or (every is not None and within % every == 0)

    def fit_unigram_weight(self, params: dict, hyper: dict, split: Split) -> float:
        """The weight ``w`` in [0, 1] of the unigram in ``(1 - w) p + w prior`` that minimises
        the NLL on ``split`` (convex in ``w``): how much smoothing towards the word
        frequencies the model's distribution still gains from."""
        result = optimize.minimize_scalar(
            lambda w: self.evaluate(params, hyper, split, unigram_weight=w)["nll"],
            bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-4})
        return float(result.x)

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


class Checkpoints:
    """Orbax checkpoints of the model in training: its state and its best parameters so far."""

    def __init__(self, directory: Path):
        self.directory = Path(directory).absolute() / "checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: dict, best: dict) -> None:
        self.manager.save(step, args=ocp.args.StandardSave({"state": state, "best": best}))
        self.manager.wait_until_finished()

    def restore(self, like: dict) -> Optional[dict]:
        """``{"state", "best"}`` of the latest checkpoint, or None."""
        step = self.manager.latest_step()
        if step is None:
            return None
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(like))
        except (ValueError, KeyError, TypeError) as error:
            self.manager.close()
            raise RunError(f"the checkpoint in {self.directory} holds a state of another "
                           f"structure than this code builds ({error}); delete it to start "
                           "this model again") from None

    def close(self) -> None:
        self.manager.close()


def _read_validations(path: Path, up_to_step: int) -> list[dict]:
    """The validations in ``path`` up to ``up_to_step``; later ones (past the checkpoint, or a
    line cut short by a kill) are removed, to be made again by the model that goes on."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]
    kept = [line for line in lines if json.loads(line)["step"] <= up_to_step]
    if kept != lines or path.read_text() != "".join(lines):
        write_text_atomically(path, "".join(kept))
    return [json.loads(line) for line in kept]


def fit(program: Program, point: dict[str, float], seed: int, data: Dataset, work_dir: Path,
        test: bool, progress=None) -> dict:
    """Trains (or resumes) one model at ``point`` from ``seed``; returns its record."""
    config, spe = program.config, program.steps_per_epoch
    hyper = traced(point)
    state = program.init(jnp.int32(seed), hyper)
    best_params = state["params"]
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(work_dir)
    restored = checkpoints.restore({"state": state, "best": best_params})
    if restored is not None:
        state, best_params = (jax.device_put(restored[k], program.replicated) for k in ("state", "best"))
    step = int(state["step"])
    validations = _read_validations(work_dir / "metrics.jsonl", step)
    metric = program.loss.stopping_metric
    best = min(validations, key=metric, default=None)
    diverged, last_saved, seconds, step_losses, order = False, time.monotonic(), 0.0, [], None
    while step < config.max_epochs * spe and not diverged:
        if best is not None and config.patience is not None and \
                len(validations) - 1 - validations.index(best) >= config.patience:
            break
        epoch, offset = divmod(step, spe)
        if offset == 0 or order is None:  # the epoch's minibatches, drawn once per epoch
            order = program.epoch_order(state, np.int32(epoch))
        end = program.segment_ends(offset)[0]
        start = time.perf_counter()
        state, losses_ = program.train_steps(state, order[offset:end], hyper)
        step_losses.append(losses_)
        if program.layer.maintain_every is not None:
            output = program.layer.maintain(state["params"]["output"])
            state = {**state, "params": {**state["params"], "output": output}}
        step = epoch * spe + end
        if not program.validates_at(step):
            seconds += time.perf_counter() - start
            continue
        train_loss = float(jnp.mean(jnp.concatenate(step_losses)))
        seconds += time.perf_counter() - start
        record = {"epoch": step // spe if step % spe == 0 else round(step / spe, 4),
                  "step": step, "train_loss": train_loss, "train_seconds": seconds,
                  "train_examples": sum(len(l) for l in step_losses) * config.batch_size,
                  **program.evaluate(state["params"], hyper, data.valid)}
        seconds, step_losses = 0.0, []
        if records.writer():
            with open(work_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        validations.append(record)
        if progress is not None:
            progress.update()
        diverged = not math.isfinite(train_loss)
        if not diverged and (best is None or metric(record) < metric(best)):
            best, best_params = record, jax.tree.map(jnp.copy, state["params"])  # not donated
        if time.monotonic() - last_saved > CHECKPOINT_SECONDS and step < config.max_epochs * spe:
            checkpoints.save(step, state, best_params)
            last_saved = time.monotonic()
    result = {"curve": [records.slim(v) for v in validations], "best": None if diverged else best,
              "best_epoch": None if diverged else best["epoch"],
              "stop_epoch": validations[-1]["epoch"], "diverged": diverged}
    if test and not diverged:
        result["test"] = program.evaluate(best_params, hyper, data.test, per_example=True)
        if program.loss.log_probabilities is not None:
            temperature = program.fit_temperature(best_params, hyper, data.valid)
            weight = program.fit_unigram_weight(best_params, hyper, data.valid)
            result |= {"temperature": temperature,
                       "test_scaled": program.evaluate(best_params, hyper, data.test, temperature),
                       "unigram_weight": weight,
                       "test_interpolated": program.evaluate(best_params, hyper, data.test,
                                                             unigram_weight=weight)}
    checkpoints.close()
    return result


def finish(work_dir: Path) -> None:
    """Deletes a finished model's working files: its record says it all."""
    if records.writer():
        shutil.rmtree(work_dir, ignore_errors=True)


def dense_reference(config: Config, data: Dataset, point: dict[str, float]) -> dict:
    """How fast, and in how much temporary memory, log-softmax trains through the dense logits
    on ``config``'s model and data, to stand beside the linear losses in their table: the
    compiled epoch's temporary memory, and one epoch timed after a compiling one (seed 0)."""
    program = Program(dataclasses.replace(config, output_layer="dense"), "log-softmax", data)
    memory = program.epoch_temporary_bytes(point)
    hyper = traced(point)
    state = program.init(jnp.int32(0), hyper)
    seconds = []
    for epoch in range(2):
        start = time.perf_counter()
        state, losses_ = program.train_steps(state, program.epoch_order(state, np.int32(epoch)), hyper)
        jax.block_until_ready(losses_)
        seconds.append(time.perf_counter() - start)
    return {"train_epoch_temporary_bytes": memory, "train_seconds": seconds[1],
            "train_examples": program.steps_per_epoch * config.batch_size}
