"""The spherical family: losses that see the logits only through ``(o_c, s, q)``.

``o_c`` is the target's logit, ``s = sum_k o_k`` and ``q = sum_k o_k^2``. Each loss here is
written once, on the statistics, and the dense losses of ``softfam`` apply it to the
statistics of the logits; an output layer that computes the statistics without the logits
(Vincent et al. 2015, arXiv 1412.7091) reuses the same functions unchanged. The losses with a
normalizer (log-Taylor of order 2, log-spherical) also form ``log Z = log sum_k f(o_k)`` from
``(s, q, D)``: they add the penalty ``w (log Z)^2`` and return ``log Z`` when asked.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from softfam import _family, _validation
from softfam._validation import Axis


class SphericalStatistics(NamedTuple):
    """The statistics of one example's logits that a spherical-family loss depends on.

    Attributes:
      target_logit: ``o_c``, the logit of the target class.
      logit_sum: ``s = sum_k o_k`` over the unmasked classes.
      logit_square_sum: ``q = sum_k o_k^2`` over the unmasked classes.
      num_classes: ``D``, the number of unmasked classes (a float array).
    """

    target_logit: jax.Array
    logit_sum: jax.Array
    logit_square_sum: jax.Array
    num_classes: jax.Array


def _sums_over(x: jax.Array, where: Optional[jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(s, q, D)`` over the included classes (classes last)."""
    keep = _family.included(x, where)
    x = jnp.where(keep, x, 0)
    return jnp.sum(x, -1), jnp.sum(x * x, -1), jnp.sum(keep, -1).astype(x.dtype)


@jax.custom_jvp
def _sums(x: jax.Array, where: Optional[jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``_sums_over(x, where)``, first as if no logit were -inf (plain sums, the fastest); the
    examples are summed again with the exclusions if any sum is not finite."""
    sums = (jnp.sum(x if where is None else jnp.where(where, x, 0), -1),
            jnp.sum(x * x if where is None else jnp.where(where, x * x, 0), -1),
            jnp.sum(where, -1).astype(x.dtype) if where is not None
            else jnp.full(x.shape[:-1], x.shape[-1], x.dtype))
    is_finite = jnp.all(jnp.isfinite(sums[0] + sums[1]))
    return lax.cond(is_finite, lambda *_: sums, _sums_over, x, where)


@_sums.defjvp
def _sums_jvp(primals, tangents):
    (x, where), (dx, _) = primals, tangents
    dx = jnp.where(_family.included(x, where), dx, 0)
    tangent_sums = (jnp.sum(dx, -1), jnp.sum(2 * x * dx, -1), jnp.zeros(x.shape[:-1], x.dtype))
    return _sums(x, where), tangent_sums


def _statistics(batch: _family.IntegerLabelBatch) -> SphericalStatistics:
    """The statistics over the included classes."""
    return SphericalStatistics(_family.target_logit(batch), *_sums(batch.logits, batch.where))


def spherical_statistics(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: Axis = -1,
    where: jax.typing.ArrayLike | None = None,
) -> SphericalStatistics:
    """The spherical-family statistics ``(o_c, s, q, D)`` of logits and integer labels.

    Args:
      logits: logits of shape ``[..., num_classes]`` (any floating dtype).
      labels: integer class indices of shape ``[...]``.
      axis: the class axis or axes; with a tuple, a label is a flat index into them.
      where: optional boolean mask of the logits' shape (or of the labels' shape, per
        example); masked classes, and classes whose logit is -inf, count neither in ``s``,
        ``q`` nor ``D``.

    Returns:
      A ``SphericalStatistics`` of arrays of shape ``[...]`` in at least float32 (so that
      ``q`` cannot overflow a float16). ``target_logit`` is NaN where the label is outside
      ``[0, num_classes)`` or names a masked class, and -inf where the target's logit is.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> stats = softfam.spherical_statistics(jnp.array([[1.0, -2.0, 3.0]]), jnp.array([2]))
      >>> [float(v[0]) for v in stats]
      [3.0, 2.0, 14.0, 3.0]

    References:
      Vincent, de Brebisson & Bouthillier 2015, arXiv 1412.7091.
    """
    batch = _family.integer_label_batch(logits, labels, axis, where)
    stats = _statistics(batch)
    target_logit = jnp.where(batch.target_is_excluded, -jnp.inf, stats.target_logit)
    return stats._replace(target_logit=jnp.where(batch.label_is_valid, target_logit, jnp.nan))


_SAFE_STATISTICS = SphericalStatistics(0.0, 0.0, 0.0, 1.0)


def spherical_loss(
    loss_from_statistics: Callable[..., jax.Array],
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: Axis,
    where,
    *,
    logit_soft_cap: jax.typing.ArrayLike | None = None,
    **hyperparameters,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """A dense integer-label loss: ``loss_from_statistics`` applied to the logits' statistics.

    With ``logit_soft_cap`` the statistics are those of the capped logits
    (``_family.soft_capped``: an excluded class stays excluded). ``hyperparameters`` go to
    ``loss_from_statistics`` as they are; with ``return_log_normalizer=True`` among them it
    returns ``(loss, log_z)``, and so does this, ``log_z`` NaN where the loss is NaN for a
    non-finite logit and 0 for an empty example.

    Examples whose statistics are not finite (a NaN or +inf logit) get NaN, and so do invalid
    labels; an excluded target gives +inf (``finish_integer_label_loss``). Non-finite and empty
    examples get safe statistics inside (double where), so that they never put a NaN into the
    gradient; the target's logit is already 0 where it is excluded or its label invalid.
    """
    batch = _family.integer_label_batch(logits, labels, axis, where)
    if logit_soft_cap is not None:
        batch = batch._replace(logits=_family.soft_capped(batch.logits, logit_soft_cap))
    stats = _statistics(batch)
    is_finite = jnp.isfinite(stats.logit_sum + stats.logit_square_sum)
    usable = is_finite & ~batch.is_empty
    stats = SphericalStatistics(
        *(jnp.where(usable, value, safe) for value, safe in zip(stats, _SAFE_STATISTICS))
    )
    result = loss_from_statistics(*stats, **hyperparameters)
    if not hyperparameters.get("return_log_normalizer", False):
        return _family.finish_integer_label_loss(jnp.where(is_finite, result, jnp.nan), batch)
    loss, log_z = (jnp.where(is_finite, value, jnp.nan) for value in result)
    log_z = jnp.where(batch.is_empty, 0, log_z).astype(batch.out_dtype)
    return _family.finish_integer_label_loss(loss, batch), log_z


def _as_statistics(target_logit, logit_sum, logit_square_sum, num_classes):
    """The statistics as arrays of one floating dtype (at least float32), and the output dtype."""
    target_logit = _validation.floating_array("target_logit", target_logit)
    dtype = _family.compute_dtype(target_logit.dtype)
    values = (target_logit, logit_sum, logit_square_sum, num_classes)
    return SphericalStatistics(*(jnp.asarray(v).astype(dtype) for v in values)), target_logit.dtype


def _cross_entropy(log_z, target_log_score, dtype, log_normalizer_penalty,
                   return_log_normalizer: bool):
    """``log Z - log f(o_c)``, plus ``w (log Z)^2`` for a penalty ``w``, in ``dtype``; with
    ``return_log_normalizer``, ``(loss, log Z)``."""
    loss = log_z - target_log_score
    if log_normalizer_penalty is not None:
        loss = loss + jnp.asarray(log_normalizer_penalty, log_z.dtype) * log_z * log_z
    if not return_log_normalizer:
        return loss.astype(dtype)
    return loss.astype(dtype), log_z.astype(dtype)


def taylor_log_normalizer(logit_sum: jax.Array, logit_square_sum: jax.Array,
                          num_classes: jax.Array) -> jax.Array:
    """``log sum_k T_2(o_k) = log(D + s + q/2)``."""
    return jnp.log(num_classes + logit_sum + logit_square_sum / 2)


def spherical_log_normalizer(logit_square_sum: jax.Array, num_classes: jax.Array,
                             epsilon: jax.Array) -> jax.Array:
    """``log sum_k (o_k^2 + eps) = log(q + D eps)``."""
    return jnp.log(logit_square_sum + num_classes * epsilon)


def taylor_softmax_cross_entropy_from_statistics(
    target_logit: jax.typing.ArrayLike,
    logit_sum: jax.typing.ArrayLike,
    logit_square_sum: jax.typing.ArrayLike,
    num_classes: jax.typing.ArrayLike,
    *,
    log_normalizer_penalty: jax.typing.ArrayLike | None = None,
    return_log_normalizer: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Log-Taylor softmax loss (order 2) on the statistics.

    ``L = log Z - log(1 + o_c + o_c^2/2)`` with ``log Z = log sum_k T_2(o_k) = log(D + s + q/2)``.

    Args:
      target_logit: ``o_c``, shape ``[...]``.
      logit_sum: ``s``, shape ``[...]``.
      logit_square_sum: ``q``, shape ``[...]``.
      num_classes: ``D``, a number or an array of shape ``[...]``.
      log_normalizer_penalty: optional ``w``: adds ``w (log Z)^2`` per example.
      return_log_normalizer: also return ``log Z`` per example.

    Returns:
      The loss, shape ``[...]``, in target_logit's dtype; with ``return_log_normalizer``,
      ``(loss, log_z)``.

    Example:
      >>> import softfam
      >>> # logits [0, 0]: each class has probability 1/2
      >>> round(float(softfam.taylor_softmax_cross_entropy_from_statistics(0.0, 0.0, 0.0, 2)), 6)
      0.693147

    References:
      de Brebisson & Vincent 2016, arXiv 1511.05042.
    """
    (o_c, s, q, d), dtype = _as_statistics(target_logit, logit_sum, logit_square_sum, num_classes)
    return _cross_entropy(taylor_log_normalizer(s, q, d), _family.taylor(2).log_score(o_c), dtype,
                          log_normalizer_penalty, return_log_normalizer)


def spherical_softmax_cross_entropy_from_statistics(
    target_logit: jax.typing.ArrayLike,
    logit_sum: jax.typing.ArrayLike,
    logit_square_sum: jax.typing.ArrayLike,
    num_classes: jax.typing.ArrayLike,
    *,
    epsilon: jax.typing.ArrayLike = _family.DEFAULT_EPSILON,
    log_normalizer_penalty: jax.typing.ArrayLike | None = None,
    return_log_normalizer: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Log-spherical softmax loss on the statistics.

    ``L = log Z - log(o_c^2 + eps)`` with ``log Z = log sum_k (o_k^2 + eps) = log(q + D eps)``
    (``s`` is not used).

    Args:
      target_logit: ``o_c``, shape ``[...]``.
      logit_sum: ``s``, shape ``[...]`` (unused, kept for a uniform signature).
      logit_square_sum: ``q``, shape ``[...]``.
      num_classes: ``D``, a number or an array of shape ``[...]``.
      epsilon: ``eps > 0``; see ``spherical_softmax`` for the default.
      log_normalizer_penalty: optional ``w``: adds ``w (log Z)^2`` per example.
      return_log_normalizer: also return ``log Z`` per example.

    Returns:
      The loss, shape ``[...]``, in target_logit's dtype; with ``return_log_normalizer``,
      ``(loss, log_z)``.

    Example:
      >>> import softfam
      >>> # logits [3, 4], target 1: p = (16 + eps) / (25 + 2 eps)
      >>> round(float(softfam.spherical_softmax_cross_entropy_from_statistics(
      ...     4.0, 7.0, 25.0, 2, epsilon=1e-6)), 5)
      0.44629

    References:
      de Brebisson & Vincent 2016, arXiv 1511.05042.
    """
    (o_c, _, q, d), dtype = _as_statistics(target_logit, logit_sum, logit_square_sum, num_classes)
    _validation.positive("epsilon", epsilon)
    epsilon = jnp.asarray(epsilon, o_c.dtype)
    return _cross_entropy(spherical_log_normalizer(q, d, epsilon),
                          _family.SPHERICAL.log_score(o_c, epsilon), dtype,
                          log_normalizer_penalty, return_log_normalizer)


def squared_error_from_statistics(
    target_logit: jax.typing.ArrayLike,
    logit_sum: jax.typing.ArrayLike,
    logit_square_sum: jax.typing.ArrayLike,
    num_classes: jax.typing.ArrayLike,
) -> jax.Array:
    """Squared error against the one-hot target on the statistics.

    ``L = sum_k (o_k - y_k)^2 = q - 2 o_c + 1``.

    Args:
      target_logit: ``o_c``, shape ``[...]``.
      logit_sum: ``s`` (unused, kept for a uniform signature).
      logit_square_sum: ``q``, shape ``[...]``.
      num_classes: ``D`` (unused, kept for a uniform signature).

    Returns:
      The loss, shape ``[...]``, in target_logit's dtype.

    Example:
      >>> import softfam
      >>> # logits [0.5, 2], target 0: (0.5 - 1)^2 + 2^2
      >>> float(softfam.squared_error_from_statistics(0.5, 2.5, 4.25, 2))
      4.25

    References:
      Vincent, de Brebisson & Bouthillier 2015, arXiv 1412.7091.
    """
    (o_c, _, q, _), dtype = _as_statistics(target_logit, logit_sum, logit_square_sum, num_classes)
    return (q - 2 * o_c + 1).astype(dtype)


def z_loss_from_statistics(
    target_logit: jax.typing.ArrayLike,
    logit_sum: jax.typing.ArrayLike,
    logit_square_sum: jax.typing.ArrayLike,
    num_classes: jax.typing.ArrayLike,
    *,
    a: jax.typing.ArrayLike = 1.0,
    b: jax.typing.ArrayLike = 2.0,
) -> jax.Array:
    """The Z-loss on the statistics: a softplus of the target's standardized logit.

    ``L = softplus(a (b - z_c)) / a`` with ``z_c = (o_c - mu) / sigma``, ``mu = s / D`` and
    ``sigma^2 = q / D - mu^2``. Where ``sigma^2 <= 0`` (all logits equal, or rounding),
    ``z_c = 0``. Shift and scale invariant; ``q / D - mu^2`` loses precision when the
    logits' mean is much larger than their spread. The defaults ``a = 1, b = 2`` are ours,
    not the paper's (it tunes them): ``z_c`` can reach ``sqrt(D - 1)``, so ``b`` asks the
    target to stand two standard deviations above the mean.

    Args:
      target_logit: ``o_c``, shape ``[...]``.
      logit_sum: ``s``, shape ``[...]``.
      logit_square_sum: ``q``, shape ``[...]``.
      num_classes: ``D``, a number or an array of shape ``[...]``.
      a: sharpness ``a > 0`` of the softplus.
      b: the standardized score ``z_c`` beyond which the loss fades.

    Returns:
      The loss, shape ``[...]``, in target_logit's dtype.

    Example:
      >>> import softfam
      >>> # logits [-1, 1], target 1: z_c = 1, softplus(2 - 1) = log(1 + e)
      >>> round(float(softfam.z_loss_from_statistics(1.0, 0.0, 2.0, 2)), 6)
      1.313262

    References:
      de Brebisson & Vincent 2016, "The Z-loss", arXiv 1604.08859.
    """
    _validation.positive("a", a)
    (o_c, s, q, d), dtype = _as_statistics(target_logit, logit_sum, logit_square_sum, num_classes)
    a = jnp.asarray(a, o_c.dtype)
    mean = s / d
    variance = q / d - mean * mean
    has_spread = variance > 0
    z = jnp.where(has_spread, (o_c - mean) * jax.lax.rsqrt(jnp.where(has_spread, variance, 1)), 0)
    return (jax.nn.softplus(a * (jnp.asarray(b, o_c.dtype) - z)) / a).astype(dtype)


def softmax_cross_entropy_upper_bound_from_statistics(
    target_logit: jax.typing.ArrayLike,
    logit_sum: jax.typing.ArrayLike,
    logit_square_sum: jax.typing.ArrayLike,
    num_classes: jax.typing.ArrayLike,
    *,
    xi: jax.typing.ArrayLike = 1.0,
) -> jax.Array:
    """A spherical upper bound of the softmax cross-entropy ``logsumexp(o) - o_c``.

    From Bouchard's bound ``log sum_k e^o_k <= alpha + sum_k log(1 + e^(o_k - alpha))``,
    each ``log(1 + e^x)`` bounded by its quadratic (Jaakkola-Jordan) upper bound touching at
    ``x = +-xi`` and ``alpha`` chosen optimally::

      L = s/D - (D-2)^2 / (16 D lam) + lam (q - s^2/D) - D lam xi^2 - D xi / 2
          + D log(1 + e^xi) - o_c,      lam = (sigmoid(xi) - 1/2) / (2 xi).

    Args:
      target_logit: ``o_c``, shape ``[...]``.
      logit_sum: ``s``, shape ``[...]``.
      logit_square_sum: ``q``, shape ``[...]``.
      num_classes: ``D``, a number or an array of shape ``[...]``.
      xi: the bound's variational parameter, ``xi > 0``.

    Returns:
      The bound, shape ``[...]``, in target_logit's dtype; it is ``>= logsumexp(o) - o_c``.

    Example:
      >>> import softfam
      >>> # logits [0, 0], target 0: the loss is log 2; the bound at xi -> 0 is 2 log 2
      >>> round(float(softfam.softmax_cross_entropy_upper_bound_from_statistics(
      ...     0.0, 0.0, 0.0, 2, xi=1e-3)), 6)
      1.386294

    References:
      Bouchard 2007, "Efficient bounds for the softmax function"; de Brebisson & Vincent
      2016, arXiv 1511.05042.
    """
    _validation.positive("xi", xi)
    (o_c, s, q, d), dtype = _as_statistics(target_logit, logit_sum, logit_square_sum, num_classes)
    xi = jnp.asarray(xi, o_c.dtype)
    lam = (jax.nn.sigmoid(xi) - 0.5) / (2 * xi)
    bound = (
        s / d
        - (d - 2) ** 2 / (16 * d * lam)
        + lam * (q - s * s / d)
        - d * lam * xi * xi
        - d * xi / 2
        + d * jax.nn.softplus(xi)
        - o_c
    )
    return bound.astype(dtype)
