"""The public losses, shaped like ``optax.losses``: one value per example, never reduced.

Shared conventions (optax's): every loss is ``loss(logits, labels, axis=-1, where=None, *,
<hyperparameters>)``, so ``axis`` and ``where`` may be given by position.
  * ``logits`` of any floating dtype; the loss comes back in that dtype.
  * ``axis`` names the class axis or axes (a tuple flattens them in the order given; an
    integer label is then a flat index into them); ``where`` is a boolean mask of the logits'
    shape, or of the batch shape (one flag per example). A fully masked example has loss 0.
  * A logit of -inf excludes its class exactly like ``where=False``: probability 0, zero
    gradient, a finite loss. A target class at -inf has probability 0: the loss is +inf for
    that example alone; with probability labels, a zero label there adds 0 (``0 log 0 = 0``,
    optax's ``safe_softmax_cross_entropy``). A NaN or +inf logit makes its example's loss NaN.
  * Integer labels are gathered with ``take_along_axis`` (no one-hot array). A label that
    cannot be checked under ``jit`` -- outside ``[0, num_classes)``, or naming a class with
    ``where=False`` -- gives a NaN loss (and a zero gradient), so that it cannot go unnoticed.
"""

from __future__ import annotations

import jax

from softfam import _family, _spherical, _validation
from softfam._family import DEFAULT_EPSILON
from softfam._validation import Axis

ArrayLike = jax.typing.ArrayLike


def _normalizer_keywords(logit_soft_cap, log_normalizer_penalty, return_log_normalizer) -> dict:
    """The keywords of the LLM training stacks, for the normalizer family's losses; a concrete
    cap is checked to be > 0."""
    if logit_soft_cap is not None:
        _validation.positive("logit_soft_cap", logit_soft_cap)
    return dict(logit_soft_cap=logit_soft_cap, log_normalizer_penalty=log_normalizer_penalty,
                return_log_normalizer=return_log_normalizer)


def softmax_cross_entropy(
    logits: ArrayLike, labels: ArrayLike, axis: Axis = -1, where: ArrayLike | None = None
) -> jax.Array:
    """Softmax cross-entropy with probability labels: ``-sum_i y_i log softmax(x)_i``.

    Agrees with ``optax.losses.softmax_cross_entropy``.

    Args:
      logits: shape ``[..., num_classes]``.
      labels: probabilities (e.g. one-hot), the logits' shape.
      axis: the class axis or axes.
      where: optional boolean mask of the logits' or the batch shape.

    Returns:
      The loss, shape ``[...]``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> logits = jnp.array([[0.0, 0.0], [2.0, 0.0]])
      >>> print(softfam.softmax_cross_entropy(logits, jnp.array([[1.0, 0.0], [1.0, 0.0]])))
      [0.6931472  0.12692805]
    """
    return _family.cross_entropy(_family.SOFTMAX, logits, labels, axis, where)


def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
    *,
    logit_soft_cap: ArrayLike | None = None,
    log_normalizer_penalty: ArrayLike | None = None,
    return_log_normalizer: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Softmax cross-entropy with integer labels: ``logsumexp(x) - x_c``.

    Agrees with ``optax.losses.softmax_cross_entropy_with_integer_labels``. The keywords of the
    LLM training stacks give the same numbers as the linear loss
    ``linear_softmax_cross_entropy_with_integer_labels`` of the same logits: the logits
    soft-capped to ``c tanh(x / c)`` (an excluded class stays excluded), and the penalty
    ``w (log Z)^2`` that those stacks call z-loss (not this library's Z-loss).

    Args:
      logits: shape ``[..., num_classes]``.
      labels: integer class indices, shape ``[...]``.
      axis: the class axis or axes.
      where: optional boolean mask of the logits' or the batch shape.
      logit_soft_cap: optional ``c > 0``; held constant (no gradient to it).
      log_normalizer_penalty: optional ``w``: adds ``w (log Z)^2`` per example.
      return_log_normalizer: also return ``log Z`` per example (0 for an empty example).

    Returns:
      The loss, shape ``[...]``; with ``return_log_normalizer``, ``(loss, log_z)``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> logits = jnp.array([[0.0, 0.0], [2.0, 0.0]])
      >>> print(softfam.softmax_cross_entropy_with_integer_labels(logits, jnp.array([1, 0])))
      [0.6931472  0.12692809]
    """
    return _family.integer_label_nll(
        _family.SOFTMAX, logits, labels, axis, where,
        **_normalizer_keywords(logit_soft_cap, log_normalizer_penalty, return_log_normalizer))


def soft_margin_softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
    *,
    margin: ArrayLike = 0.0,
    logit_soft_cap: ArrayLike | None = None,
    log_normalizer_penalty: ArrayLike | None = None,
    return_log_normalizer: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Soft-margin softmax cross-entropy: the target's logit is lowered by ``margin``.

    ``p_c = e^(x_c - m) / Z`` with ``Z = e^(x_c - m) + sum_{j != c} e^(x_j)``, loss
    ``-log p_c``. Meant for training only; evaluate with the plain softmax. The keywords are
    those of ``softmax_cross_entropy_with_integer_labels``: the logits are soft-capped to
    ``c tanh(x / c)`` before the margin is subtracted, and ``log Z`` (penalized and returned) is
    the log of this margin-adjusted normalizer, the one the loss divides by.

    Args:
      logits: shape ``[..., num_classes]``.
      labels: integer class indices, shape ``[...]``.
      axis: the class axis or axes.
      where: optional boolean mask of the logits' or the batch shape.
      margin: ``m``; 0 gives the plain softmax cross-entropy.
      logit_soft_cap: optional ``c > 0``; held constant (no gradient to it).
      log_normalizer_penalty: optional ``w``: adds ``w (log Z)^2`` per example.
      return_log_normalizer: also return ``log Z`` per example (0 for an empty example).

    Returns:
      The loss, shape ``[...]``; with ``return_log_normalizer``, ``(loss, log_z)``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> # logits [log 2, 0] with margin log 2: p_0 = 1/2
      >>> print(softfam.soft_margin_softmax_cross_entropy_with_integer_labels(
      ...     jnp.array([0.6931472, 0.0]), jnp.array(0), margin=0.6931472))
      0.6931472

    References:
      Banerjee et al. 2020, arXiv 2011.11538.
    """
    return _family.integer_label_nll(
        _family.SOFTMAX, logits, labels, axis, where, margin=margin,
        **_normalizer_keywords(logit_soft_cap, log_normalizer_penalty, return_log_normalizer))


def taylor_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
    *,
    order: int = 2,
) -> jax.Array:
    """Taylor softmax cross-entropy with probability labels: ``-sum_i y_i log p_i``.

    ``p_i = T_n(x_i) / sum_j T_n(x_j)``; see ``taylor_softmax``.

    Args:
      logits: shape ``[..., num_classes]``.
      labels: probabilities (e.g. one-hot), the logits' shape.
      axis: the class axis or axes.
      where: optional boolean mask of the logits' or the batch shape.
      order: the even order n >= 2.

    Returns:
      The loss, shape ``[...]``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> # T_2 = [1, 2.5]: p_1 = 2.5 / 3.5
      >>> print(softfam.taylor_softmax_cross_entropy(jnp.array([0.0, 1.0]), jnp.array([0.0, 1.0])))
      0.33647227

    References:
      de Brebisson & Vincent 2016, arXiv 1511.05042.
    """
    return _family.cross_entropy(_family.taylor(order), logits, labels, axis, where)


def taylor_softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
    *,
    order: int = 2,
    logit_soft_cap: ArrayLike | None = None,
    log_normalizer_penalty: ArrayLike | None = None,
    return_log_normalizer: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Log-Taylor softmax loss with integer labels: ``log Z - log T_n(x_c)``, where
    ``Z = sum_j T_n(x_j)``.

    Order 2 is a spherical-family loss and is computed on the statistics by
    ``taylor_softmax_cross_entropy_from_statistics`` (the statistics of the capped logits,
    if capped); higher orders are not spherical. The keywords are those of
    ``softmax_cross_entropy_with_integer_labels``, with ``T_n`` of the capped logits, and give
    the numbers of ``linear_taylor_softmax_cross_entropy_with_integer_labels`` of the same
    logits (which refuses the cap at order 2).

    Args:
      logits: shape ``[..., num_classes]``.
      labels: integer class indices, shape ``[...]``.
      axis: the class axis or axes.
      where: optional boolean mask of the logits' or the batch shape.
      order: the even order n >= 2.
      logit_soft_cap: optional ``c > 0``; held constant (no gradient to it).
      log_normalizer_penalty: optional ``w``: adds ``w (log Z)^2`` per example.
      return_log_normalizer: also return ``log Z`` per example (0 for an empty example).

    Returns:
      The loss, shape ``[...]``; with ``return_log_normalizer``, ``(loss, log_z)``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> print(softfam.taylor_softmax_cross_entropy_with_integer_labels(
      ...     jnp.array([0.0, 1.0]), jnp.array(1)))
      0.33647227

    References:
      de Brebisson & Vincent 2016, arXiv 1511.05042.
    """
    keywords = _normalizer_keywords(logit_soft_cap, log_normalizer_penalty, return_log_normalizer)
    if _validation.taylor_order(order) == 2:
        return _spherical.spherical_loss(
            _spherical.taylor_softmax_cross_entropy_from_statistics, logits, labels, axis, where,
            **keywords)
    return _family.integer_label_nll(_family.taylor(order), logits, labels, axis, where,
                                     **keywords)


def soft_margin_taylor_softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
    *,
    order: int = 2,
    margin: ArrayLike = 0.0,
    logit_soft_cap: ArrayLike | None = None,
    log_normalizer_penalty: ArrayLike | None = None,
    return_log_normalizer: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Soft-margin Taylor softmax cross-entropy: ``T_n(x_c - m)`` in place of ``T_n(x_c)``.

    ``p_c = T_n(x_c - m) / Z`` with ``Z = T_n(x_c - m) + sum_{j != c} T_n(x_j)``, loss
    ``-log p_c``. The keywords are those of ``softmax_cross_entropy_with_integer_labels``: the
    logits are soft-capped to ``c tanh(x / c)`` before the margin is subtracted, and ``log Z``
    (penalized and returned) is the log of this margin-adjusted normalizer, the one the loss
    divides by.

    Args:
      logits: shape ``[..., num_classes]``.
      labels: integer class indices, shape ``[...]``.
      axis: the class axis or axes.
      where: optional boolean mask of the logits' or the batch shape.
      order: the even order n >= 2.
      margin: ``m``; 0 gives the plain Taylor softmax loss.
      logit_soft_cap: optional ``c > 0``; held constant (no gradient to it).
      log_normalizer_penalty: optional ``w``: adds ``w (log Z)^2`` per example.
      return_log_normalizer: also return ``log Z`` per example (0 for an empty example).

    Returns:
      The loss, shape ``[...]``; with ``return_log_normalizer``, ``(loss, log_z)``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> # T_2(1 - 1) = 1 beside T_2(0) = 1: p_1 = 1/2
      >>> print(softfam.soft_margin_taylor_softmax_cross_entropy_with_integer_labels(
      ...     jnp.array([0.0, 1.0]), jnp.array(1), margin=1.0))
      0.6931473

    References:
      Banerjee et al. 2020, arXiv 2011.11538.
    """
    return _family.integer_label_nll(
        _family.taylor(order), logits, labels, axis, where, margin=margin,
        **_normalizer_keywords(logit_soft_cap, log_normalizer_penalty, return_log_normalizer))


def spherical_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
    *,
    epsilon: ArrayLike = DEFAULT_EPSILON,
) -> jax.Array:
    """Spherical softmax cross-entropy with probability labels: ``-sum_i y_i log p_i``.

    ``p_i = (x_i^2 + eps) / sum_j (x_j^2 + eps)``; see ``spherical_softmax``.

    Args:
      logits: shape ``[..., num_classes]``.
      labels: probabilities (e.g. one-hot), the logits' shape.
      axis: the class axis or axes.
      where: optional boolean mask of the logits' or the batch shape.
      epsilon: ``eps > 0``.

    Returns:
      The loss, shape ``[...]``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> # p = [1/5, 4/5] for logits [1, 2] with eps -> 0
      >>> print(softfam.spherical_softmax_cross_entropy(
      ...     jnp.array([1.0, 2.0]), jnp.array([0.0, 1.0]), epsilon=1e-6))
      0.2231437

    References:
      de Brebisson & Vincent 2016, arXiv 1511.05042.
    """
    _validation.positive("epsilon", epsilon)
    return _family.cross_entropy(_family.SPHERICAL, logits, labels, axis, where, (epsilon,))


def spherical_softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
    *,
    epsilon: ArrayLike = DEFAULT_EPSILON,
    logit_soft_cap: ArrayLike | None = None,
    log_normalizer_penalty: ArrayLike | None = None,
    return_log_normalizer: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Log-spherical softmax loss with integer labels: ``log Z - log(x_c^2 + eps)``, where
    ``Z = sum_j (x_j^2 + eps) = q + D eps``.

    Computed on the statistics by ``spherical_softmax_cross_entropy_from_statistics`` (the
    statistics of the capped logits, if capped). The keywords are those of
    ``softmax_cross_entropy_with_integer_labels`` and give the numbers of
    ``linear_spherical_softmax_cross_entropy_with_integer_labels`` of the same logits (which
    refuses the cap).

    Args:
      logits: shape ``[..., num_classes]``.
      labels: integer class indices, shape ``[...]``.
      axis: the class axis or axes.
      where: optional boolean mask of the logits' or the batch shape.
      epsilon: ``eps > 0``.
      logit_soft_cap: optional ``c > 0``; held constant (no gradient to it).
      log_normalizer_penalty: optional ``w``: adds ``w (log Z)^2`` per example.
      return_log_normalizer: also return ``log Z`` per example (0 for an empty example).

    Returns:
      The loss, shape ``[...]``; with ``return_log_normalizer``, ``(loss, log_z)``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> print(softfam.spherical_softmax_cross_entropy_with_integer_labels(
      ...     jnp.array([1.0, 2.0]), jnp.array(1), epsilon=1e-6))
      0.2231437

    References:
      de Brebisson & Vincent 2016, arXiv 1511.05042.
    """
    return _spherical.spherical_loss(
        _spherical.spherical_softmax_cross_entropy_from_statistics,
        logits, labels, axis, where, epsilon=epsilon,
        **_normalizer_keywords(logit_soft_cap, log_normalizer_penalty, return_log_normalizer))


def squared_error_with_integer_labels(
    logits: ArrayLike, labels: ArrayLike, axis: Axis = -1, where: ArrayLike | None = None
) -> jax.Array:
    """Squared error against the one-hot target, summed over classes: ``sum_k (x_k - y_k)^2``.

    Computed on the statistics by ``squared_error_from_statistics``.

    Args:
      logits: shape ``[..., num_classes]``.
      labels: integer class indices, shape ``[...]``.
      axis: the class axis or axes.
      where: optional boolean mask of the logits' or the batch shape.

    Returns:
      The loss, shape ``[...]``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> print(softfam.squared_error_with_integer_labels(jnp.array([0.5, 2.0]), jnp.array(0)))
      4.25
    """
    return _spherical.spherical_loss(
        _spherical.squared_error_from_statistics, logits, labels, axis, where
    )


def z_loss_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
    *,
    a: ArrayLike = 1.0,
    b: ArrayLike = 2.0,
) -> jax.Array:
    """The Z-loss with integer labels: ``softplus(a (b - z_c)) / a``, ``z`` the standardized logits.

    Computed on the statistics by ``z_loss_from_statistics`` (see it for the defaults).

    Args:
      logits: shape ``[..., num_classes]``.
      labels: integer class indices, shape ``[...]``.
      axis: the class axis or axes.
      where: optional boolean mask of the logits' or the batch shape.
      a: sharpness ``a > 0``.
      b: location.

    Returns:
      The loss, shape ``[...]``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> print(softfam.z_loss_with_integer_labels(jnp.array([-1.0, 1.0]), jnp.array(1)))
      1.3132617

    References:
      de Brebisson & Vincent 2016, "The Z-loss", arXiv 1604.08859.
    """
    return _spherical.spherical_loss(
        _spherical.z_loss_from_statistics, logits, labels, axis, where, a=a, b=b
    )


def softmax_cross_entropy_upper_bound_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: Axis = -1,
    where: ArrayLike | None = None,
    *,
    xi: ArrayLike = 1.0,
) -> jax.Array:
    """A spherical upper bound of ``logsumexp(x) - x_c`` (Bouchard's bound).

    Computed on the statistics by ``softmax_cross_entropy_upper_bound_from_statistics``
    (see it for the formula). de Brebisson & Vincent report that it trains badly.

    Args:
      logits: shape ``[..., num_classes]``.
      labels: integer class indices, shape ``[...]``.
      axis: the class axis or axes.
      where: optional boolean mask of the logits' or the batch shape.
      xi: the bound's variational parameter, ``xi > 0``.

    Returns:
      The loss, shape ``[...]``; never below the softmax cross-entropy.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> logits, labels = jnp.array([1.0, -1.0, 0.5]), jnp.array(0)
      >>> bound = softfam.softmax_cross_entropy_upper_bound_with_integer_labels(logits, labels)
      >>> bool(bound >= softfam.softmax_cross_entropy_with_integer_labels(logits, labels))
      True

    References:
      Bouchard 2007; de Brebisson & Vincent 2016, arXiv 1511.05042.
    """
    return _spherical.spherical_loss(
        _spherical.softmax_cross_entropy_upper_bound_from_statistics,
        logits, labels, axis, where, xi=xi,
    )
