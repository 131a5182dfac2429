"""The normalizer family ``p_i = f(x_i) / sum_j f(x_j)``, written once.

A member is its log-score ``log f(x)``, computed stably in log space for any finite x; a
member may add its score ``f(x)`` and scores divided by a per-slice power of two, which are
faster (no transcendental per element). Everything else is shared (``normalized``): the
normalizer, probabilities, log-probabilities, masking, axis handling, the dtype policy, the
derivative of the log-normalizer and the negative log-likelihood ``log sum_j f(x_j) - log f(x_c)``.

Dtype policy: inputs of any floating dtype; work in at least float32; return the input dtype.
Masking uses the "double where": masked inputs are replaced by 0 before any score is computed
and the outputs are masked afterwards, so a masked input, however large, gets an exactly zero
gradient.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from softfam import _validation
from softfam._validation import Axis

DEFAULT_EPSILON = 0.01  # the spherical softmax's eps; spherical_softmax says why


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """The dtype sums are accumulated in: float32, or float64 for float64 inputs."""
    return jnp.dtype(jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32)


class ScaledScores(NamedTuple):
    """``f(x_i) / C`` over a slice, with ``log C`` gradient-free and chosen so that nothing
    overflows: ``p_i = scores_i / sum_j scores_j`` and ``log sum_j f(x_j) = log_scale + log
    sum_j scores_j``."""

    scores: jax.Array
    log_scale: jax.Array  # kept as size 1 on the class axes


class Member(NamedTuple):
    """A normalizer of the family: its log-score, and optionally two faster ways to its scores.

    Without ``score`` and ``scaled_scores`` the scores are ``exp(log f(x) - max log f)``, one
    exp per element (softmax). With them, the scores are ``f(x)`` itself, no transcendental at
    all, unless some sum overflows; then ``scaled_scores`` are used, which never overflow.
    """

    log_score: Callable[[jax.Array], jax.Array]  # log f(x), elementwise, any finite x
    score: Optional[Callable[[jax.Array], jax.Array]] = None  # f(x); may overflow
    scaled_scores: Optional[Callable[[jax.Array, tuple[int, ...]], ScaledScores]] = None


def _power_of_two(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gradient-free ``(k, 2^-k)``: the integer ``k >= 0`` with ``|x| 2^-k < 1`` where
    ``1 <= |x| < 2^126`` (float32; ``2^1022`` float64), ``|x| 2^-k < 4`` above, ``k = 0`` below.

    Read off the float's exponent bits: no log, and ``x 2^-k`` is exact.
    """
    int_dtype, mantissa_bits, bias = (
        (jnp.int64, 52, 1023) if x.dtype == jnp.float64 else (jnp.int32, 23, 127)
    )
    bits = lax.bitcast_convert_type(lax.stop_gradient(x), int_dtype)
    exponent = ((bits >> mantissa_bits) & (2 * bias + 1)) - (bias - 1)  # frexp's exponent
    k = jnp.clip(exponent, 0, bias - 1)
    return k.astype(x.dtype), lax.bitcast_convert_type((bias - k) << mantissa_bits, x.dtype)


def _taylor_polynomial_scaled(y: jax.Array, b: jax.Array, order: int) -> jax.Array:
    """``T_n(x) b^n`` for ``x = y / b``: ``sum_j y^j b^(n-j) / j!`` by Horner's rule,
    ``b^n + y (b^(n-1) + y/2 (b^(n-2) + ... (b + y/n)))``; with ``|y| <= 4`` and ``b <= 1``
    nothing overflows."""
    scaled, b_power = jnp.ones_like(y), b
    for j in range(order, 0, -1):
        scaled = b_power + y * scaled / j
        b_power = b_power * b
    return scaled


def _row_power_of_two(x: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """``(k, 2^-k)`` of ``max |x|`` over the class axes (kept as size 1)."""
    return _power_of_two(jnp.max(jnp.abs(x), axes, keepdims=True))


# --- The members. ----------------------------------------------------------------------------


SOFTMAX = Member(log_score=lambda x: x)


def taylor(order: int) -> Member:
    """Taylor softmax, ``f = T_n(x) = sum_{j=0..n} x^j / j!`` for even ``n >= 2`` (``T_n > 0``).

    Log-score: with ``(k, b = 2^-k)`` from ``_power_of_two(x)``,
    ``log T_n(x) = n k log 2 + log(T_n(x) b^n)``: one log per element and no ``x^n`` formed.
    Scaled scores: the same with one ``b`` per slice (from ``max |x|``), and no log at all.
    """
    order = _validation.taylor_order(order)

    def log_score(x):
        k, b = _power_of_two(x)
        return (order * math.log(2)) * k + jnp.log(_taylor_polynomial_scaled(x * b, b, order))

    def score(x):
        return _taylor_polynomial_scaled(x, jnp.ones_like(x), order)

    def scaled_scores(x, axes):
        k, b = _row_power_of_two(x, axes)
        return ScaledScores(_taylor_polynomial_scaled(x * b, b, order), (order * math.log(2)) * k)

    return Member(log_score, score, scaled_scores)


def spherical(epsilon: jax.typing.ArrayLike) -> Member:
    """Spherical softmax, ``f = x^2 + eps`` with ``eps > 0``.

    With ``(k, b = 2^-k)`` from ``_power_of_two``, ``x^2 + eps = 4^k ((x b)^2 + eps b^2)``:
    per element for the log-score, per slice for the scaled scores, so ``x^2`` never overflows.
    """
    _validation.positive("epsilon", epsilon)

    def scaled(x, k, b):
        y = x * b
        return y * y + jnp.asarray(epsilon, x.dtype) * (b * b), (2 * math.log(2)) * k

    def log_score(x):
        scores, log_scale = scaled(x, *_power_of_two(x))
        return log_scale + jnp.log(scores)

    def score(x):
        return x * x + jnp.asarray(epsilon, x.dtype)

    def scaled_scores(x, axes):
        return ScaledScores(*scaled(x, *_row_power_of_two(x, axes)))

    return Member(log_score, score, scaled_scores)


# --- The shared path. ------------------------------------------------------------------------


def _masked_log_scores(member: Member, x: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
    """``log f(x)``, -inf where masked (so that ``exp`` of it is 0, even in the gradient)."""
    log_scores = member.log_score(x)
    return log_scores if mask is None else jnp.where(mask, log_scores, -jnp.inf)


def _max_log_score(
    member: Member, x: jax.Array, axes: tuple[int, ...], mask: Optional[jax.Array]
) -> jax.Array:
    """The slice's largest unmasked log-score, gradient-free; 0 for a fully masked slice."""
    log_scores = _masked_log_scores(member, x, mask)
    if mask is None:
        return lax.stop_gradient(jnp.max(log_scores, axes, keepdims=True))
    shift = jnp.max(log_scores, axes, keepdims=True, initial=-jnp.inf)
    return lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0))


class Normalization(NamedTuple):
    """A member's normalization over the class axes (all kept as size 1 but the scores)."""

    scores: jax.Array  # f(x_i) / C; exactly 0 where masked
    log_scores: jax.Array  # log f(x_i) - log C; -inf where masked (unused ones cost nothing)
    slopes: Optional[jax.Array]  # f'(x_i) / C where asked for; exactly 0 where masked
    log_scale: jax.Array  # log C, gradient-free
    total: jax.Array  # sum_j f(x_j) / C; 1 for a fully masked slice (finite gradients)


def normalized(
    member: Member,
    x: jax.Array,
    axes: tuple[int, ...],
    mask: Optional[jax.Array],
    finish: Callable[[Normalization], Any],
    with_slopes: bool = False,
) -> Any:
    """``finish`` applied to the normalization of ``x`` (in the compute dtype) over ``axes``.

    For a member with a direct ``score``, ``sum_j f(x_j)`` is computed first; if it is finite
    for every slice, ``finish`` sees the unscaled scores (two passes over x, no transcendental),
    otherwise the scaled ones. ``finish`` runs inside both branches of the ``lax.cond`` so
    that the scores are recomputed there rather than stored.
    """
    if mask is not None:
        x = jnp.where(mask, x, 0)

    def normalization(scores_of, log_scores, x, log_scale, total=None):
        if with_slopes:
            scores, slopes = jax.jvp(scores_of, (x,), (jnp.ones_like(x),))
        else:
            scores, slopes = scores_of(x), None
        if mask is not None:
            scores = jnp.where(mask, scores, 0)
            log_scores = jnp.where(mask, log_scores, -jnp.inf)
            slopes = None if slopes is None else jnp.where(mask, slopes, 0)
        if total is None:
            total = jnp.sum(scores, axes, keepdims=True)
        if mask is not None:
            total = jnp.where(total > 0, total, 1)
        return finish(Normalization(scores, log_scores, slopes, log_scale, total))

    if member.score is None:
        shift = _max_log_score(member, x, axes, mask)
        return normalization(
            lambda x: jnp.exp(_masked_log_scores(member, x, mask) - shift),
            member.log_score(x) - shift, x, shift,
        )
    scores = member.score(x)
    total = jnp.sum(scores if mask is None else jnp.where(mask, scores, 0), axes, keepdims=True)

    def unscaled(x, total):  # f(x) >= its positive minimum: its log is safe
        return normalization(
            member.score, jnp.log(member.score(x)), x, jnp.zeros_like(total), total
        )

    def scaled(x, total):
        log_scale = member.scaled_scores(x, axes).log_scale
        return normalization(
            lambda x: member.scaled_scores(x, axes).scores,
            member.log_score(x) - log_scale, x, log_scale,
        )

    return lax.cond(jnp.all(jnp.isfinite(total)), unscaled, scaled, x, total)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _log_normalizer(member: Member, axes: tuple[int, ...], x: jax.Array, mask) -> jax.Array:
    return normalized(member, x, axes, mask, lambda n: n.log_scale + jnp.log(n.total))


@_log_normalizer.defjvp
def _log_normalizer_jvp(member, axes, primals, tangents):
    x, mask = primals
    value, weights = normalized(
        member, x, axes, mask,
        lambda n: (n.log_scale + jnp.log(n.total), n.slopes / n.total),
        with_slopes=True,
    )
    return value, jnp.sum(weights * tangents[0], axes, keepdims=True)


def log_normalizer(
    member: Member, x: jax.Array, axes: tuple[int, ...], mask: Optional[jax.Array]
) -> jax.Array:
    """``log sum_j f(x_j)`` over ``axes`` (kept as size 1); 0 for a fully masked slice.

    Its derivative ``f'(x_i) / sum_j f(x_j)`` is given directly (``custom_jvp``), computed
    with the scores in one ``normalized`` call: reverse mode then stores that one array, not
    the residuals of both branches of the ``lax.cond``.
    """
    return _log_normalizer(member, axes, x, mask)


def log_probabilities(
    member: Member, x: jax.Array, axes: tuple[int, ...], mask: Optional[jax.Array]
) -> jax.Array:
    """``log p_i = log f(x_i) - log sum_j f(x_j)``; -inf where masked. For losses: its
    gradient is cheap (see ``log_normalizer``)."""
    x_safe = x if mask is None else jnp.where(mask, x, 0)
    log_probs = member.log_score(x_safe) - log_normalizer(member, x, axes, mask)
    return log_probs if mask is None else jnp.where(mask, log_probs, -jnp.inf)


def class_mask(
    where: Optional[jax.typing.ArrayLike], shape: tuple[int, ...], axes: tuple[int, ...]
) -> Optional[jax.Array]:
    """The boolean mask over the logits: ``where`` of the logits' shape, or per example."""
    if where is None:
        return None
    if jnp.ndim(where) == len(shape) - len(axes):
        where = jnp.expand_dims(where, axes)
    return _validation.boolean_mask(where, shape)


def _normalizer_arguments(x: jax.typing.ArrayLike, axis: Axis, where):
    """Checks a normalizer's arguments: ``x`` in the compute dtype, the axes, the mask."""
    x = _validation.floating_array("x", x)
    axes = _validation.canonical_axes(axis, x.ndim)
    mask = None if where is None else _validation.boolean_mask(where, x.shape)
    return x.astype(compute_dtype(x.dtype)), axes, mask, x.dtype


def normalize(member: Member, x: jax.typing.ArrayLike, axis: Axis, where) -> jax.Array:
    """``p_i = f(x_i) / sum_j f(x_j)``; exactly 0 where masked."""
    x, axes, mask, dtype = _normalizer_arguments(x, axis, where)
    probs = normalized(member, x, axes, mask, lambda n: n.scores * (1 / n.total))
    return probs.astype(dtype)


def log_normalize(member: Member, x: jax.typing.ArrayLike, axis: Axis, where) -> jax.Array:
    """``log p_i = log f(x_i) - log sum_j f(x_j)``; -inf where masked. Inside ``normalized``:
    the fastest forward pass (``log f`` of the unscaled scores where they are used)."""
    x, axes, mask, dtype = _normalizer_arguments(x, axis, where)
    log_probs = normalized(member, x, axes, mask, lambda n: n.log_scores - jnp.log(n.total))
    return log_probs.astype(dtype)


def cross_entropy(
    member: Member,
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
    log_probs = log_probabilities(member, logits.astype(dtype), axes, mask)
    if mask is not None:
        log_probs = jnp.where(mask, log_probs, 0)
    return -jnp.sum(labels.astype(dtype) * log_probs, axes).astype(logits.dtype)


# --- Integer labels. -------------------------------------------------------------------------


class IntegerLabelBatch(NamedTuple):
    """Logits with their class axes flattened last, and what is known about the labels."""

    logits: jax.Array  # (..., D), in the compute dtype; 0 where masked (double where)
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
        flat_logits = jnp.where(mask, flat_logits, 0)
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
    member: Member,
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: Axis,
    where,
    margin: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
    """``log sum_j f(x_j) - log f(x_c)``, with ``x_c - margin`` in place of ``x_c`` if given."""
    batch = integer_label_batch(logits, labels, axis, where)
    x = batch.logits
    log_z = log_normalizer(member, x, (x.ndim - 1,), batch.mask)[..., 0]
    target = take_target(x, batch.labels)
    if margin is None:
        return finish_integer_label_loss(log_z - member.log_score(target), batch)
    # f(x_c - m) in place of f(x_c): the normalizer becomes Z (1 - p_c + p_cm).
    margin_log_score = member.log_score(target - jnp.asarray(margin, x.dtype))
    others = jnp.maximum(1 - jnp.exp(member.log_score(target) - log_z), 0)
    log_z = log_z + jnp.log(others + jnp.exp(margin_log_score - log_z))
    return finish_integer_label_loss(log_z - margin_log_score, batch)
