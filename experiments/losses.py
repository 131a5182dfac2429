"""The losses an experiment can train with, by name, and the probabilities each is judged by.

Every entry pairs a training loss (softfam, one value per example) with the normalizer that
turns the model's outputs into class probabilities for evaluation (NLL, ECE, Brier score):
the loss's own normalizer; the plain one for the soft-margin losses (the margin is applied in
training only); softmax for the Z-loss, whose paper scores the outputs without a normalizer
of its own (the Z-loss ignores the logits' scale, so only its temperature-scaled probabilities
mean anything), and for the upper bound of the log-softmax. Squared error defines no
distribution: it is judged on its error rate only.

Both functions take the loss's hyperparameters as keyword arguments: those that
``experiments.config.HYPERPARAMETERS`` says the loss takes, other than the optimizer's and the
model's. They may be traced values, so one compiled training step serves every setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import jax
import jax.numpy as jnp

import softfam


@dataclass(frozen=True)
class Loss:
    """A training loss ``loss(logits, labels, **hyper) -> per-example loss`` and its evaluation
    normalizer ``log_probabilities(logits, **hyper)`` (None when the loss defines no
    distribution)."""

    loss: Callable[..., jax.Array]
    log_probabilities: Optional[Callable[..., jax.Array]]
    # The same loss on the statistics (o_c, s, q, D), for the factored output layer; None
    # outside the spherical family.
    on_statistics: Optional[Callable[..., jax.Array]] = None
    # The same loss on (hidden, weights, labels, bias) without the logits (softfam's linear
    # losses), for output_layer="linear"; None for the soft-margin losses and the bound.
    linear: Optional[Callable[..., jax.Array]] = None
    # The loss is unchanged by shifting and scaling the logits, so the scale of its
    # evaluation probabilities is arbitrary: they are judged after temperature scaling only.
    scale_free: bool = False

    @property
    def judged_by_nll(self) -> bool:
        """Whether early stopping and tuning minimise the validation NLL of the loss's own
        distribution; else its error (squared error has none, the Z-loss's has no scale)."""
        return self.log_probabilities is not None and not self.scale_free

    def stopping_metric(self, summary: dict) -> float:
        """What early stopping and tuning minimise in a validation ``summary``."""
        return summary["nll"] if self.judged_by_nll else summary["error"]


def _with(fn: Callable, **fixed) -> Callable:
    return lambda *args, **kwargs: fn(*args, **fixed, **kwargs)


def _ignoring(fn: Callable, *names: str) -> Callable:
    """``fn`` with keyword arguments ``names`` accepted and not passed on."""
    return lambda *args, **kwargs: fn(*args, **{k: v for k, v in kwargs.items() if k not in names})


def smoothed_softmax_cross_entropy(logits, labels, label_smoothing):
    """``(1 - alpha) NLL + alpha mean_j(-log p_j)``: log-softmax against the labels smoothed
    towards uniform (``optax.smooth_labels``), written so that ``alpha = 0`` gives the
    integer-label loss's exact value and gradient."""
    nll = softfam.softmax_cross_entropy_with_integer_labels(logits, labels)
    uniform = -jnp.mean(softfam.log_softmax(logits), axis=-1)
    return nll + label_smoothing * (uniform - nll)


LOSSES: dict[str, Loss] = {
    "log-softmax": Loss(softfam.softmax_cross_entropy_with_integer_labels, softfam.log_softmax,
                        linear=softfam.linear_softmax_cross_entropy_with_integer_labels),
    # log-softmax against labels smoothed towards uniform: a loss of its own, so that a
    # comparison can hold it beside plain log-softmax as a control for smoothing
    "label-smoothed-log-softmax": Loss(
        smoothed_softmax_cross_entropy, _ignoring(softfam.log_softmax, "label_smoothing"),
        linear=softfam.linear_softmax_cross_entropy_with_integer_labels,
    ),
    "log-taylor-2": Loss(
        _with(softfam.taylor_softmax_cross_entropy_with_integer_labels, order=2),
        _with(softfam.log_taylor_softmax, order=2),
        on_statistics=softfam.taylor_softmax_cross_entropy_from_statistics,
        linear=_with(softfam.linear_taylor_softmax_cross_entropy_with_integer_labels, order=2),
    ),
    "log-taylor-4": Loss(
        _with(softfam.taylor_softmax_cross_entropy_with_integer_labels, order=4),
        _with(softfam.log_taylor_softmax, order=4),
        linear=_with(softfam.linear_taylor_softmax_cross_entropy_with_integer_labels, order=4),
    ),
    "log-spherical": Loss(
        softfam.spherical_softmax_cross_entropy_with_integer_labels, softfam.log_spherical_softmax,
        on_statistics=softfam.spherical_softmax_cross_entropy_from_statistics,
        linear=softfam.linear_spherical_softmax_cross_entropy_with_integer_labels,
    ),
    "squared-error": Loss(softfam.squared_error_with_integer_labels, None,
                          on_statistics=softfam.squared_error_from_statistics,
                          linear=softfam.linear_squared_error_with_integer_labels),
    "z-loss": Loss(softfam.z_loss_with_integer_labels, _ignoring(softfam.log_softmax, "a", "b"),
                   on_statistics=softfam.z_loss_from_statistics,
                   linear=softfam.linear_z_loss_with_integer_labels, scale_free=True),
    "soft-margin-softmax": Loss(
        softfam.soft_margin_softmax_cross_entropy_with_integer_labels,
        _ignoring(softfam.log_softmax, "margin"),
    ),
    "soft-margin-taylor-2": Loss(
        _with(softfam.soft_margin_taylor_softmax_cross_entropy_with_integer_labels, order=2),
        _ignoring(_with(softfam.log_taylor_softmax, order=2), "margin"),
    ),
    # Not in the papers' tables (the bound trained badly there); here by name.
    "softmax-upper-bound": Loss(
        softfam.softmax_cross_entropy_upper_bound_with_integer_labels, softfam.log_softmax,
        on_statistics=softfam.softmax_cross_entropy_upper_bound_from_statistics,
    ),
}

COMPARED = (  # the losses of the image-classification comparisons
    "log-softmax", "log-taylor-2", "log-taylor-4", "log-spherical", "squared-error", "z-loss",
    "soft-margin-softmax", "soft-margin-taylor-2",
)
# The losses of the many-class comparisons: log-softmax and the spherical family.
MANY_CLASS = ("log-softmax", "log-taylor-2", "log-spherical", "z-loss", "squared-error")


def get(name: str) -> Loss:
    """The loss called ``name``; a ValueError lists the known names."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}")
    return LOSSES[name]


def properties(name: str) -> dict:
    """What the tables need to know of a loss, saved with the records so that they are read
    without JAX: whether it has a distribution, whether its scale is arbitrary, its stopping
    metric, and whether it is of the spherical family (the factored layer trains it)."""
    loss = get(name)
    return {"distribution": loss.log_probabilities is not None, "scale_free": loss.scale_free,
            "stopping_metric": "nll" if loss.judged_by_nll else "error",
            "spherical_family": loss.on_statistics is not None}
