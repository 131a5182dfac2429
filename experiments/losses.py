"""The losses an experiment can train with, by name, and the probabilities each is judged by.

Every entry pairs a training loss (softfam, one value per example) with the normalizer that
turns the model's outputs into class probabilities for evaluation (NLL, ECE, Brier score):
the loss's own normalizer; the plain one for the soft-margin losses (the margin is applied in
training only); softmax for the Z-loss, whose paper scores the outputs without a normalizer
of its own (the Z-loss ignores the logits' scale, so only its temperature-scaled probabilities
mean anything), and for the upper bound of the log-softmax. Squared error defines no distribution: it is judged on its error rate only.

A loss's keyword hyperparameters (``epsilon``, ``margin``, the Z-loss's ``a`` and ``b``) are
named in ``hyperparameters`` and tuned over the grids of the experiment's config; they may be
traced values, so one compiled training step serves every setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import jax

import softfam


@dataclass(frozen=True)
class Loss:
    """A training loss ``loss(logits, labels, **hyper) -> per-example loss`` and its evaluation
    normalizer ``log_probabilities(logits, **shared hyper)`` (None when the loss defines no
    distribution)."""

    loss: Callable[..., jax.Array]
    log_probabilities: Optional[Callable[..., jax.Array]]
    hyperparameters: tuple[str, ...] = ()  # the keyword arguments tuned per comparison
    shared: tuple[str, ...] = ()  # those the normalizer takes too (not margin, a or b)
    # The same loss on the statistics (o_c, s, q, D), for the factored output layer; None
    # outside the spherical family.
    on_statistics: Optional[Callable[..., jax.Array]] = None
    # The same loss on (hidden, weights, labels, bias) without the logits (softfam's linear
    # losses), for output_layer="linear"; None for the soft-margin losses and the bound.
    linear: Optional[Callable[..., jax.Array]] = None
    # The loss is unchanged by shifting and scaling the logits, so the scale of its
    # evaluation probabilities is arbitrary: they are judged after temperature scaling only.
    scale_free: bool = False

    def stopping_metric(self, summary: dict) -> float:
        """What early stopping and tuning minimise in a validation ``summary``: the NLL of the
        loss's own distribution, or the error where it has none (squared error) or its scale
        is arbitrary (``scale_free``: the Z-loss)."""
        judged_by_nll = self.log_probabilities is not None and not self.scale_free
        return summary["nll"] if judged_by_nll else summary["error"]

    def evaluation_log_probabilities(self, logits: jax.Array, hyper: dict) -> jax.Array:
        """The log-probabilities the model is judged by (``log_probabilities`` must exist)."""
        return self.log_probabilities(logits, **{name: hyper[name] for name in self.shared})


def _with(fn: Callable, **fixed) -> Callable:
    return lambda *args, **kwargs: fn(*args, **fixed, **kwargs)


LOSSES: dict[str, Loss] = {
    "log-softmax": Loss(softfam.softmax_cross_entropy_with_integer_labels, softfam.log_softmax,
                        linear=softfam.linear_softmax_cross_entropy_with_integer_labels),
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
        softfam.spherical_softmax_cross_entropy_with_integer_labels,
        softfam.log_spherical_softmax,
        ("epsilon",),
        ("epsilon",),
        on_statistics=softfam.spherical_softmax_cross_entropy_from_statistics,
        linear=softfam.linear_spherical_softmax_cross_entropy_with_integer_labels,
    ),
    "squared-error": Loss(softfam.squared_error_with_integer_labels, None,
                          on_statistics=softfam.squared_error_from_statistics,
                          linear=softfam.linear_squared_error_with_integer_labels),
    "z-loss": Loss(softfam.z_loss_with_integer_labels, softfam.log_softmax,
                   ("a", "b"), on_statistics=softfam.z_loss_from_statistics,
                   linear=softfam.linear_z_loss_with_integer_labels, scale_free=True),
    "soft-margin-softmax": Loss(
        softfam.soft_margin_softmax_cross_entropy_with_integer_labels,
        softfam.log_softmax,
        ("margin",),
    ),
    "soft-margin-taylor-2": Loss(
        _with(softfam.soft_margin_taylor_softmax_cross_entropy_with_integer_labels, order=2),
        _with(softfam.log_taylor_softmax, order=2),
        ("margin",),
    ),
    # Not in the papers' tables (it trained badly, paper-notes.md section 2); here by name.
    "softmax-upper-bound": Loss(
        softfam.softmax_cross_entropy_upper_bound_with_integer_labels, softfam.log_softmax,
        on_statistics=softfam.softmax_cross_entropy_upper_bound_from_statistics,
    ),
}

COMPARED = (  # the losses of the image-classification comparisons
    "log-softmax", "log-taylor-2", "log-taylor-4", "log-spherical", "squared-error", "z-loss",
    "soft-margin-softmax", "soft-margin-taylor-2",
)


def get(name: str) -> Loss:
    """The loss called ``name``; a ValueError lists the known names."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}")
    return LOSSES[name]
