"""Regularization and schedules, each off by default: with every field at its default the
committed numbers come back; dropout leaves evaluation deterministic; weight decay is AdamW's;
the schedule takes its stated values; clipping bounds the step; label smoothing is optax's."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import configs, losses, records, train, tuning
from experiments.config import Config
from experiments.data import load

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def standard_dtype_promotion():
    """optax's Adam mixes integer and float types; see test_experiments.py."""
    with jax.numpy_dtype_promotion("standard"):
        yield


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def tiny(**fields):
    settings = dict(name="t", dataset="digits", model="mlp", widths=(16,), max_epochs=3,
                    batch_size=50, losses=("log-softmax",))
    return Config(**{**settings, **fields})


def start(config, digits, loss="log-softmax", **values):
    """A program of ``config`` and its initial state at the first starting point, ``values``
    in place (learning rate 3e-3 unless given)."""
    point = {**tuning.grid_points(config.space(loss))[0], "learning_rate": 3e-3, **values}
    program = train.Program(config, loss, digits)
    hyper = train.traced(point)
    return program, program.init(jnp.int32(0), hyper), hyper


def test_with_every_field_at_its_default_the_committed_numbers_come_back(tmp_path, digits):
    """digits-mlp's log-softmax, final seed 0, retrained three epochs by this code: the
    validations of the committed record (made before dropout, weight decay, schedules and
    clipping existed), to float32 rounding."""
    directory = ROOT / "results" / "digits-mlp"
    committed = next(m for m in records.read(directory)
                     if m["loss"] == "log-softmax" and m["stage"] == "final" and m["seed"] == 0)
    config = dataclasses.replace(configs.digits_mlp(), max_epochs=3)
    program = train.Program(config, "log-softmax", digits)
    again = train.fit(program, committed["point"], 0, digits, tmp_path, test=False)
    for old, new in zip(committed["curve"][:3], again["curve"]):
        assert new["epoch"] == old["epoch"] and new["step"] == old["step"]
        for key in ("train_loss", "nll"):
            assert new[key] == pytest.approx(old[key], rel=1e-4), key
        assert new["error"] == pytest.approx(old["error"], abs=1 / 100)  # an example may flip


def test_dropout_trains_differently_and_leaves_evaluation_deterministic(digits):
    results = {}
    for rate in (0.0, 0.5):
        program, state, hyper = start(tiny(search={"dropout": (rate,)}), digits, dropout=rate)
        state, _ = program.train_steps(state, program.epoch_order(state, jnp.int32(0)), hyper)
        first = program.evaluate(state["params"], hyper, digits.valid)
        assert program.evaluate(state["params"], hyper, digits.valid) == first
        results[rate] = first["nll"]
    assert results[0.5] != results[0.0]
    # a rate of 0 on a config that uses dropout trains as without it
    program, state, hyper = start(tiny(search={"dropout": (0.0, 0.5)}), digits, dropout=0.0)
    state, _ = program.train_steps(state, program.epoch_order(state, jnp.int32(0)), hyper)
    assert program.evaluate(state["params"], hyper, digits.valid)["nll"] == pytest.approx(
        results[0.0], rel=1e-6)


def test_dropout_masks_are_independent_draws_scaled_to_keep_the_mean():
    from experiments import models

    h = jnp.ones((2000, 50))
    dropped = models._drop(h, (jnp.float32(0.3), jax.random.key(1)), 0)
    kept = np.asarray(dropped) != 0
    assert abs(kept.mean() - 0.7) < 0.01 and np.allclose(np.asarray(dropped)[kept], 1 / 0.7)
    other_layer = models._drop(h, (jnp.float32(0.3), jax.random.key(1)), 1)
    assert not np.array_equal(np.asarray(other_layer) != 0, kept)


def test_weight_decay_is_adamw_on_the_weight_matrices(digits):
    """Five steps of the program against optax.adamw on the same loss and batches, with the
    decay masked to the parameters of two or more axes."""
    config = tiny(search={"weight_decay": (0.1,)})
    program, state, hyper = start(config, digits, weight_decay=0.1, learning_rate=1e-2)
    order = program.epoch_order(state, jnp.int32(0))[:5]
    params = state["params"]
    optimizer = optax.adamw(1e-2, weight_decay=0.1,
                            mask=lambda p: jax.tree.map(lambda a: a.ndim >= 2, p))
    opt_state = optimizer.init(params)
    images, labels = digits.train.images, digits.train.labels

    def loss(params, x, y):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(program.model.apply(params, x), y))

    for indices in np.asarray(order):
        grads = jax.grad(loss)(params, images[indices], labels[indices])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    state, _ = program.train_steps(state, order, hyper)
    for ours, theirs in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(params)):
        np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-6)
    plain, plain_state, plain_hyper = start(tiny(), digits, learning_rate=1e-2)
    plain_state, _ = plain.train_steps(plain_state, order, plain_hyper)
    assert not np.allclose(state["params"]["output"]["w"], plain_state["params"]["output"]["w"])


def test_the_schedule_takes_its_stated_values():
    """Linear warmup from 0 over 2 epochs of 10 steps, then a cosine to 0 at epoch 10."""
    config = tiny(schedule="warmup-cosine", warmup_epochs=2, max_epochs=10)
    factor = train.schedule(config, steps_per_epoch=10)
    expected = {0: 0.0, 10: 0.5, 20: 1.0, 60: 0.5, 100: 0.0,
                40: 0.5 * (1 + np.cos(np.pi * 20 / 80))}
    for step, value in expected.items():
        assert float(factor(step)) == pytest.approx(value, abs=1e-6), step


def test_the_first_step_of_a_warmup_does_not_move_the_parameters(digits):
    config = tiny(schedule="warmup-cosine", warmup_epochs=1)
    program, state, hyper = start(config, digits)
    before = jax.tree.map(np.asarray, state["params"])
    state, _ = program.train_steps(state, program.epoch_order(state, jnp.int32(0))[:1], hyper)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state["params"])):
        np.testing.assert_array_equal(a, b)
    state, _ = program.train_steps(state, program.epoch_order(state, jnp.int32(0))[1:2], hyper)
    assert not np.array_equal(before["output"]["w"], state["params"]["output"]["w"])


def test_clipping_bounds_the_global_norm_of_a_plain_sgd_step(digits):
    config = tiny(optimizer="sgd", clip_norm=1e-3)
    program, state, hyper = start(config, digits, learning_rate=0.5)
    before = jax.tree.map(np.asarray, state["params"])
    state, _ = program.train_steps(state, program.epoch_order(state, jnp.int32(0))[:1], hyper)
    step = np.sqrt(sum(np.sum((np.asarray(b) - a) ** 2)
                       for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state["params"]))))
    assert step == pytest.approx(0.5 * 1e-3, rel=1e-3)  # the gradient's norm is far above 1e-3


def test_label_smoothing_is_optax_smooth_labels_and_zero_is_the_plain_loss():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(6, 5)) * 3, jnp.float32)
    labels = jnp.array([0, 4, 2, 2, 1, 3])
    loss = losses.get("label-smoothed-log-softmax").loss
    smoothed = optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(labels, 5), 0.2))
    np.testing.assert_allclose(loss(logits, labels, label_smoothing=jnp.float32(0.2)), smoothed,
                               rtol=1e-5)
    plain = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(loss(logits, labels, label_smoothing=jnp.float32(0.0)), plain, rtol=1e-6)


def test_the_unigram_mixture_weight_minimises_the_validation_nll(digits):
    program, state, hyper = start(tiny(), digits, learning_rate=1e-2)
    state, _ = program.train_steps(state, program.epoch_order(state, jnp.int32(0)), hyper)
    # logits 20 times too large: an overconfident model that mixing with the unigram helps
    params = state["params"] | {"output": jax.tree.map(lambda p: 20 * p, state["params"]["output"])}
    weight = program.fit_unigram_weight(params, hyper, digits.valid)
    logits = np.asarray(program.model.apply(params, digits.valid.images), np.float64)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    train = digits.train.labels
    prior = (np.bincount(train, minlength=10) + 1) / (train.size + 10)  # add-one unigram

    def nll(w):  # NumPy float64 NLL of (1 - w) p + w prior
        mixed = (1 - w) * probabilities + w * prior[None, :]
        return -np.mean(np.log(mixed[np.arange(len(logits)), digits.valid.labels]))

    assert 0.01 < weight < 0.99
    assert program.evaluate(params, hyper, digits.valid, unigram_weight=weight)["nll"] == \
        pytest.approx(nll(weight), rel=1e-5)
    assert nll(weight) < min(nll(weight + 0.005), nll(weight - 0.005))
    assert program.evaluate(params, hyper, digits.valid)["nll"] == pytest.approx(nll(0.0), rel=1e-5)
