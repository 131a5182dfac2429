"""Training with softfam's factored output layer: exact SGD on the output layer in O(d^2) per
example, for the losses of the spherical family.

The output weights and bias (one matrix, the bias as the last column) are held factored and
updated by ``softfam.factored_step`` at the model's learning rate; the rest of the model is
trained by the config's optimizer (which must be ``sgd``, so that the whole model follows
dense SGD exactly) from the gradient for its features. Data, evaluation, checkpoints and
records are ``experiments.train``'s. An epoch runs as jitted chunks of ``CHECK_EVERY`` steps,
with ``softfam.condition_factored_output`` between them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import softfam
from experiments import losses
from experiments.train import Trainer

CHECK_EVERY = 10  # steps between conditioning checks of the factored layer


class FactoredTrainer(Trainer):
    """A ``Trainer`` whose output layer is softfam's factored layer."""

    def __init__(self, config, loss, data):
        if config.optimizer != "sgd":
            raise ValueError(
                f"output_layer='factored' trains by exact SGD: it needs optimizer='sgd' "
                f"(got {config.optimizer!r})"
            )
        if losses.get(loss).on_statistics is None:
            raise ValueError(
                f"output_layer='factored' trains a loss of the spherical family; {loss!r} is not "
                f"one (these are: "
                f"{', '.join(n for n, entry in losses.LOSSES.items() if entry.on_statistics)})"
            )
        super().__init__(config, loss, data)
        self.epoch_order = jax.jit(self._epoch_order)
        self.train_steps = jax.jit(self._train_steps, donate_argnums=0, out_shardings=self.replicated)
        self.train_epoch = self.conditioned_epoch

    def conditioned_epoch(self, state, epoch, hyper):
        """``Trainer.train_epoch`` in chunks of CHECK_EVERY steps, the output layer conditioned
        between them (on the host: only a drifted layer touches its D x d buffer)."""
        order = self.epoch_order(state, epoch)
        losses_ = []
        for start in range(0, self.steps_per_epoch, CHECK_EVERY):
            state, chunk_losses = self.train_steps(state, order[start:start + CHECK_EVERY], hyper)
            output = softfam.condition_factored_output(state["params"]["output"])
            state = {**state, "params": {**state["params"], "output": output}}
            losses_.append(chunk_losses)
        return state, jnp.mean(jnp.concatenate(losses_))

    def epoch_temporary_bytes(self, state, hyper):
        """The temporary memory of one compiled chunk of CHECK_EVERY steps."""
        chunk = self.epoch_order(state, np.int32(0))[:CHECK_EVERY]
        compiled = self.train_steps.lower(state, chunk, hyper).compile()
        return int(compiled.memory_analysis().temp_size_in_bytes)

    def initial_params(self, key):
        params = super().initial_params(key)
        output = params.pop("output")
        weights = jnp.concatenate([output["w"].T, output["b"][:, None]], 1)
        return {"body": params, "output": softfam.factored_output(weights)}

    def trained_params(self, params):
        return params["body"]

    def dense_params(self, params):
        weights = softfam.dense_output_weights(params["output"])
        return {**params["body"], "output": {"w": weights[:, :-1].T, "b": weights[:, -1]}}

    def update(self, params, opt_state, x, y, hyper):
        def features(body):  # with a constant 1 for the bias column
            h = self.model.features(body, x)
            return jnp.concatenate([h, jnp.ones((h.shape[0], 1), h.dtype)], 1)

        hidden, backprop = jax.vjp(features, params["body"])
        loss, grad_hidden, output = softfam.factored_step(
            params["output"], hidden, y, functools.partial(self.loss.on_statistics, **hyper),
            opt_state.hyperparams["learning_rate"],
        )
        (grads,) = backprop(grad_hidden)
        updates, opt_state = self.optimizer(learning_rate=0.0).update(grads, opt_state, params["body"])
        return {"body": optax.apply_updates(params["body"], updates), "output": output}, opt_state, loss
