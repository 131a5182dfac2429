"""The output layer, chosen by name: how the last hidden layer's features become a loss and a
gradient. The training loop (``experiments.train``) does not know which one it has.

Each layer is an ``OutputLayer``:

- ``init(dense)``: its parameters from the model's dense output layer ``{"w": (d, D), "b": (D,)}``;
- ``step(output, hidden, labels, loss_hyper, learning_rate)``: ``(mean loss, gradient for
  hidden, gradient for the output parameters or None, output parameters)``. A layer whose
  gradient is None updates its own parameters (the factored layer, by exact SGD at
  ``learning_rate``); the others leave them to the optimizer;
- ``dense(output)``: the dense ``{"w", "b"}`` it stands for, to evaluate the model;
- ``maintain(output)``: called on the host every ``maintain_every`` steps (None: never).

``dense``: the loss of the logits ``hidden @ w + b``. ``linear``: softfam's linear loss, the
same values and gradients without the (batch, D) logits. ``factored``: softfam's factored
layer, exact SGD in O(d^2) per example for the spherical family, conditioned every
``FACTORED_CHECK_EVERY`` steps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Optional

import jax
import jax.numpy as jnp

import softfam
from experiments.losses import Loss

FACTORED_CHECK_EVERY = 10  # steps between conditioning checks of the factored layer


def _same(output):
    return output


@dataclass(frozen=True)
class OutputLayer:
    init: Callable
    step: Callable
    dense: Callable = _same
    maintain: Callable = _same
    maintain_every: Optional[int] = None


def _gradient_step(loss_of_output: Callable) -> Callable:
    """A ``step`` that differentiates ``loss_of_output(hidden, output, labels, hyper)``."""

    def step(output, hidden, labels, loss_hyper, learning_rate):
        def mean_loss(hidden, output):
            return jnp.mean(loss_of_output(hidden, output, labels, loss_hyper))

        value, (grad_hidden, grad_output) = jax.value_and_grad(mean_loss, (0, 1))(hidden, output)
        return value, grad_hidden, grad_output, output

    return step


def dense(loss: Loss) -> OutputLayer:
    def of_logits(hidden, output, labels, hyper):
        return loss.loss(hidden @ output["w"] + output["b"][None, :], labels, **hyper)

    return OutputLayer(_same, _gradient_step(of_logits))


def linear(loss: Loss) -> OutputLayer:
    def without_logits(hidden, output, labels, hyper):
        return loss.linear(hidden, output["w"], labels, output["b"], **hyper)

    return OutputLayer(_same, _gradient_step(without_logits))


def factored(loss: Loss) -> OutputLayer:
    """The output weights and bias, one (D, d + 1) matrix with the bias as its last column,
    held factored; the features get a constant 1 for the bias column."""

    def init(output):
        return softfam.factored_output(jnp.concatenate([output["w"].T, output["b"][:, None]], 1))

    def step(output, hidden, labels, loss_hyper, learning_rate):
        with_one = jnp.concatenate([hidden, jnp.ones((hidden.shape[0], 1), hidden.dtype)], 1)
        value, grad_hidden, output = softfam.factored_step(
            output, with_one, labels, functools.partial(loss.on_statistics, **loss_hyper),
            learning_rate)
        return value, grad_hidden[:, :-1], None, output

    def to_dense(output):
        weights = softfam.dense_output_weights(output)
        return {"w": weights[:, :-1].T, "b": weights[:, -1]}

    return OutputLayer(init, step, to_dense, softfam.condition_factored_output,
                       FACTORED_CHECK_EVERY)


def get(name: str, loss: Loss) -> OutputLayer:
    """Layer ``name`` for ``loss``; a loss the layer cannot train (not of the spherical family
    for ``factored``, without a linear loss for ``linear``) gets the dense layer."""
    if name == "factored" and loss.on_statistics is not None:
        return factored(loss)
    if name == "linear" and loss.linear is not None:
        return linear(loss)
    return dense(loss)
