"""The normalizer family ``p_i = f(x_i) / sum_j f(x_j)``, written once.

A member is its log-score ``log f(x)``, computed stably in log space. Everything else is
shared: the normalizer ``sum_j f(x_j)`` (summed after shifting the log-scores by their max),
probabilities, log-probabilities, masking, axis handling, the dtype policy and the negative
log-likelihood ``log sum_j f(x_j) - log f(x_c)``.

Dtype policy: inputs of any floating dtype; work in at least float32; return the input dtype.
Masking uses the "double where": masked inputs are replaced by 0 before the log-score and the
outputs are masked afterwards, so a masked input, however large, gets an exactly zero gradient.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from softfam import _validation
from softfam._validation import Axis

LogScore = Callable[[jax.Array], jax.Array]

DEFAULT_EPSILON = 0.01  # the spherical softmax's eps; spherical_softmax says why


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """The dtype sums are accumulated in: float32, or float64 for float64 inputs."""
    return jnp.dtype(jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32)


# --- The members: one log-score each. -------------------------------------------------------


def exp_log_score(x: jax.Array) -> jax.Array:
    """Softmax: ``log exp(x) = x``."""
    return x


def taylor_log_score(x: jax.Array, *, order: int) -> jax.Array:
    """Taylor softmax: ``log T_n(x)`` with ``T_n(x) = sum_{k=0..n} x^k / k!`` (n even, T_n > 0).

    For ``|x| <= 1``, Horner's rule ``T_n(x) = 1 + x (1 + x/2 (1 + ... (1 + x/n)))``.
    For ``|x| > 1``, ``log T_n(x) = n log|x| - log n! + log R(1/x)`` with
    ``R(y) = sum_{j=0..n} n!/(n-j)! y^j = 1 + n y (1 + (n-1) y (1 + ... (1 + y)))``,
    so that no ``x^n`` is ever formed and nothing overflows for any finite x.
    """
    is_small = jnp.abs(x) <= 1
    x_small = jnp.where(is_small, x, 0)  # both branches see safe inputs (double where)
    x_large = jnp.where(is_small, 2, x)
    taylor = jnp.ones_like(x)
    for k in range(order, 0, -1):
        taylor = 1 + x_small * taylor / k
    y = 1 / x_large
    remainder = jnp.ones_like(x)
    for k in range(1, order + 1):
        remainder = 1 + k * y * remainder
    log_large = order * jnp.log(jnp.abs(x_large)) - math.lgamma(order + 1) + jnp.log(remainder)
    return jnp.where(is_small, jnp.log(taylor), log_large)


def spherical_log_score(x: jax.Array, *, epsilon: jax.typing.ArrayLike) -> jax.Array:
    """Spherical softmax: ``log(x^2 + eps) = 2 log hypot(x, sqrt(eps))`` (no overflow of x^2)."""
    return 2 * jnp.log(jnp.hypot(x, jnp.sqrt(jnp.asarray(epsilon, x.dtype))))


def taylor(order: int) -> LogScore:
    """The Taylor member of even order n >= 2."""
    return functools.partial(taylor_log_score, order=_validation.taylor_order(order))


def spherical(epsilon: jax.typing.ArrayLike) -> LogScore:
    """The spherical member with ``eps > 0``."""
    _validation.positive("epsilon", epsilon)
    return functools.partial(spherical_log_score, epsilon=epsilon)


# --- The shared path. ------------------------------------------------------------------------


def masked_log_scores(
    log_score: LogScore, x: jax.Array, mask: Optional[jax.Array]
) -> jax.Array:
    """``log f(x)``, with -inf where ``mask`` is False."""
    if mask is None:
        return log_score(x)
    return jnp.where(mask, log_score(jnp.where(mask, x, 0)), -jnp.inf)


class ShiftedScores(NamedTuple):
    """The normalization of a family member, with the scores divided by ``e^c``.

    ``c`` is the (gradient-free) maximal log-score, so ``exp`` never overflows and, for
    softmax, ``x - c`` is exact: ``log p_i = log_scores_i - log(total)`` and
    ``p_i = exp(log_scores_i) / total``.
    """

    log_scores: jax.Array  # log f(x_i) - c; -inf where masked
    total: jax.Array  # sum_j f(x_j) / e^c over the class axes (kept as size 1)


def shifted_scores(
    log_score: LogScore, x: jax.Array, axes: tuple[int, ...], mask: Optional[jax.Array]
) -> ShiftedScores:
    """Scores and their sum over ``axes``; a fully masked slice gets ``total = 1`` rather
    than 0, so that its (masked) outputs have finite gradients."""
    log_scores = masked_log_scores(log_score, x, mask)
    shift = jnp.max(log_scores, axes, keepdims=True, where=mask, initial=-jnp.inf)
    log_scores = log_scores - lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0))
    total = jnp.sum(jnp.exp(log_scores), axes, keepdims=True)
    return ShiftedScores(log_scores, jnp.where(total > 0, total, 1))


def class_mask(
    where: Optional[jax.typing.ArrayLike], shape: tuple[int, ...], axes: tuple[int, ...]
) -> Optional[jax.Array]:
    """The boolean mask over the logits: ``where`` of the logits' shape, or per example."""
    if where is None:
        return None
    if jnp.ndim(where) == len(shape) - len(axes):
        where = jnp.expand_dims(where, axes)
    return _validation.boolean_mask(where, shape)


def normalizer_scores(
    log_score: LogScore, x: jax.typing.ArrayLike, axis: Axis, where
) -> tuple[ShiftedScores, jnp.dtype]:
    """Checks a normalizer's arguments; returns its shifted scores and the output dtype."""
    x = _validation.floating_array("x", x)
    axes = _validation.canonical_axes(axis, x.ndim)
    mask = None if where is None else _validation.boolean_mask(where, x.shape)
    return shifted_scores(log_score, x.astype(compute_dtype(x.dtype)), axes, mask), x.dtype


def log_normalize(log_score: LogScore, x: jax.typing.ArrayLike, axis: Axis, where) -> jax.Array:
    """``log p_i = log f(x_i) - log sum_j f(x_j)``; -inf where masked."""
    (log_scores, total), dtype = normalizer_scores(log_score, x, axis, where)
    return (log_scores - jnp.log(total)).astype(dtype)


def normalize(log_score: LogScore, x: jax.typing.ArrayLike, axis: Axis, where) -> jax.Array:
    """``p_i = f(x_i) / sum_j f(x_j)``; exactly 0 where masked."""
    (log_scores, total), dtype = normalizer_scores(log_score, x, axis, where)
    return (jnp.exp(log_scores) / total).astype(dtype)


def cross_entropy(
    log_score: LogScore,
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: Axis,
    where,
) -> jax.Array:
    """``-sum_i y_i log p_i`` over the class axes, for probability (or one-hot) labels."""
    logits = _validation.floating_array("logits", logits)
    labels = _validation.floating_array("labels (probabilities)", labels)
    if labels.shape != logits.shape:
        raise ValueError(
            f"labels of shape {labels.shape} must have the logits' shape {logits.shape}"
        )
    axes = _validation.canonical_axes(axis, logits.ndim)
    mask = class_mask(where, logits.shape, axes)
    dtype = compute_dtype(logits.dtype)
    log_scores, total = shifted_scores(log_score, logits.astype(dtype), axes, mask)
    log_probs = log_scores - jnp.log(total)
    if mask is not None:
        log_probs = jnp.where(mask, log_probs, 0)
    return -jnp.sum(labels.astype(dtype) * log_probs, axes).astype(logits.dtype)


# --- Integer labels. -------------------------------------------------------------------------


class IntegerLabelBatch(NamedTuple):
    """Logits with their class axes flattened last, and what is known about the labels."""

    logits: jax.Array  # (..., D), in the compute dtype
    labels: jax.Array  # (...), a valid class index everywhere (0 where the label is invalid)
    mask: Optional[jax.Array]  # (..., D) or None
    label_is_valid: jax.Array  # (...): label in [0, D) and its class not masked
    out_dtype: jnp.dtype


def integer_label_batch(
    logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, axis: Axis, where
) -> IntegerLabelBatch:
    """Checks the arguments of an integer-label loss and moves the class axes last."""
    logits = _validation.floating_array("logits", logits)
    labels = _validation.integer_array("labels", labels)
    axes = _validation.canonical_axes(axis, logits.ndim)
    batch_axes = tuple(a for a in range(logits.ndim) if a not in axes)
    batch_shape = tuple(logits.shape[a] for a in batch_axes)
    if labels.shape != batch_shape:
        raise ValueError(
            f"labels of shape {labels.shape} do not match logits of shape {logits.shape} "
            f"with class axis {axis!r}: expected labels of shape {batch_shape}"
        )
    num_classes = math.prod(logits.shape[a] for a in axes)
    mask = class_mask(where, logits.shape, axes)

    def classes_last(array):
        return array.transpose(batch_axes + axes).reshape(batch_shape + (num_classes,))

    flat_logits = classes_last(logits).astype(compute_dtype(logits.dtype))
    label_is_valid = (labels >= 0) & (labels < num_classes)
    safe_labels = jnp.where(label_is_valid, labels, 0)
    if mask is not None:
        mask = classes_last(mask)
        label_is_valid &= take_target(mask, safe_labels)
    return IntegerLabelBatch(flat_logits, safe_labels, mask, label_is_valid, logits.dtype)


def take_target(values: jax.Array, labels: jax.Array) -> jax.Array:
    """``values[..., labels]`` by ``take_along_axis`` on the last axis (no one-hot array)."""
    return jnp.take_along_axis(values, labels[..., None], axis=-1)[..., 0]


def finish_integer_label_loss(loss: jax.Array, batch: IntegerLabelBatch) -> jax.Array:
    """NaN for an invalid label, exactly 0 for a fully masked example, in the input dtype."""
    loss = jnp.where(batch.label_is_valid, loss, jnp.nan)
    if batch.mask is not None:
        loss = jnp.where(jnp.any(batch.mask, axis=-1), loss, 0)
    return loss.astype(batch.out_dtype)


def integer_label_nll(
    log_score: LogScore,
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: Axis,
    where,
    margin: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
    """``log sum_j f(x_j) - log f(x_c)``, with ``x_c - margin`` in place of ``x_c`` if given."""
    batch = integer_label_batch(logits, labels, axis, where)
    x = batch.logits
    if margin is not None:
        class_index = lax.broadcasted_iota(batch.labels.dtype, x.shape, x.ndim - 1)
        x = x - jnp.where(class_index == batch.labels[..., None], jnp.asarray(margin, x.dtype), 0)
    log_scores, total = shifted_scores(log_score, x, (x.ndim - 1,), batch.mask)
    loss = jnp.log(total[..., 0]) - take_target(log_scores, batch.labels)
    return finish_integer_label_loss(loss, batch)
