"""The losses an experiment can train with, by name, and the probabilities each is judged by.

Every entry pairs a training loss (softfam, one value per example) with the normalizer that
turns the model's outputs into class probabilities for evaluation (NLL, ECE, Brier score):
the loss's own normalizer; the plain one for the soft-margin losses (the margin is applied in
training only); softmax for the Z-loss, whose paper scores the outputs without a normalizer
of its own, and for the upper bound of the log-softmax. Squared error defines no distribution: it is judged on its error rate only.

A loss's keyword hyperparameter (``epsilon``, ``margin``) is tuned from its ``grid``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Optional

import jax

import softfam


@dataclass(frozen=True)
class Loss:
    """A training loss ``loss(logits, labels, **hyper) -> per-example loss`` and its evaluation
    normalizer ``log_probabilities(logits, **hyper)`` (None when the loss defines no
    distribution)."""

    loss: Callable[..., jax.Array]
    log_probabilities: Optional[Callable[..., jax.Array]]
    grid: dict[str, tuple[float, ...]] = field(default_factory=dict)  # tuned hyperparameters
    # The same loss on the statistics (o_c, s, q, D), for the factored output layer; None
    # outside the spherical family.
    on_statistics: Optional[Callable[..., jax.Array]] = None

    def bind(self, hyper: dict[str, float]) -> tuple[Callable, Optional[Callable]]:
        """``(loss, log_probabilities)`` with the hyperparameters fixed; the log-probabilities
        ignore the training-only ``margin``."""
        shared = {k: v for k, v in hyper.items() if k != "margin"}
        log_probabilities = None if self.log_probabilities is None else (
            lambda logits: self.log_probabilities(logits, **shared)
        )
        return (lambda logits, labels: self.loss(logits, labels, **hyper)), log_probabilities

    def bind_statistics(self, hyper: dict[str, float]) -> Callable[..., jax.Array]:
        """The loss on the statistics with the hyperparameters fixed (``factored_step``'s form)."""
        return functools.partial(self.on_statistics, **hyper)


def _with(fn: Callable, **fixed) -> Callable:
    return lambda *args, **kwargs: fn(*args, **fixed, **kwargs)


MARGINS = (0.3, 0.6, 1.0)  # around Banerjee et al.'s default 0.6

LOSSES: dict[str, Loss] = {
    "log-softmax": Loss(softfam.softmax_cross_entropy_with_integer_labels, softfam.log_softmax),
    "log-taylor-2": Loss(
        _with(softfam.taylor_softmax_cross_entropy_with_integer_labels, order=2),
        _with(softfam.log_taylor_softmax, order=2),
        on_statistics=softfam.taylor_softmax_cross_entropy_from_statistics,
    ),
    "log-taylor-4": Loss(
        _with(softfam.taylor_softmax_cross_entropy_with_integer_labels, order=4),
        _with(softfam.log_taylor_softmax, order=4),
    ),
    "log-spherical": Loss(
        softfam.spherical_softmax_cross_entropy_with_integer_labels,
        softfam.log_spherical_softmax,
        {"epsilon": (1e-3, 1e-2, 1e-1)},
        on_statistics=softfam.spherical_softmax_cross_entropy_from_statistics,
    ),
    "squared-error": Loss(softfam.squared_error_with_integer_labels, None,
                          on_statistics=softfam.squared_error_from_statistics),
    "z-loss": Loss(softfam.z_loss_with_integer_labels, softfam.log_softmax,
                   on_statistics=softfam.z_loss_from_statistics),
    "soft-margin-softmax": Loss(
        softfam.soft_margin_softmax_cross_entropy_with_integer_labels,
        softfam.log_softmax,
        {"margin": MARGINS},
    ),
    "soft-margin-taylor-2": Loss(
        _with(softfam.soft_margin_taylor_softmax_cross_entropy_with_integer_labels, order=2),
        _with(softfam.log_taylor_softmax, order=2),
        {"margin": MARGINS},
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
