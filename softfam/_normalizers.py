"""The public normalizers, shaped like ``jax.nn.softmax``: each is one member of the family.

A logit of -inf is an excluded class in every member, as in softmax, where ``exp(-inf) = 0``:
for Taylor and spherical softmax it is explicit, since ``T_n(-inf) = +inf``.
"""

from __future__ import annotations

import jax

from softfam import _family, _validation
from softfam._family import DEFAULT_EPSILON
from softfam._validation import Axis


def softmax(
    x: jax.typing.ArrayLike, axis: Axis = -1, where: jax.typing.ArrayLike | None = None
) -> jax.Array:
    """Softmax: ``p_i = exp(x_i) / sum_j exp(x_j)``.

    Computed as ``exp(log_softmax(x))``; the same numbers as ``jax.nn.softmax`` to rounding.

    Args:
      x: input array of any floating dtype.
      axis: the axis or axes to normalize over (an int, a tuple of ints, or None for all).
      where: optional boolean mask broadcastable to ``x``; masked entries, and entries of
        -inf, get probability 0 and a zero gradient. A NaN or +inf makes its slice NaN.

    Returns:
      An array of x's shape and dtype.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> print(softfam.softmax(jnp.array([1.0, 2.0, 3.0])))
      [0.09003057 0.24472848 0.66524094]
    """
    return _family.probabilities(_family.SOFTMAX, x, axis, where)


def log_softmax(
    x: jax.typing.ArrayLike, axis: Axis = -1, where: jax.typing.ArrayLike | None = None
) -> jax.Array:
    """Log-softmax: ``log p_i = x_i - log sum_j exp(x_j)``.

    Args:
      x: input array of any floating dtype.
      axis: the axis or axes to normalize over (an int, a tuple of ints, or None for all).
      where: optional boolean mask broadcastable to ``x``; masked entries, and entries of
        -inf, get -inf and a zero gradient. A NaN or +inf makes its slice NaN.

    Returns:
      An array of x's shape and dtype.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> print(softfam.log_softmax(jnp.array([0.0, 0.0])))
      [-0.6931472 -0.6931472]
    """
    return _family.log_probabilities(_family.SOFTMAX, x, axis, where)


def taylor_softmax(
    x: jax.typing.ArrayLike,
    axis: Axis = -1,
    where: jax.typing.ArrayLike | None = None,
    *,
    order: int = 2,
) -> jax.Array:
    """Taylor softmax: ``p_i = T_n(x_i) / sum_j T_n(x_j)``, ``T_n(x) = sum_{k=0..n} x^k / k!``.

    ``T_n > 0`` for even n (its minimum is 1/2 for n = 2), so this is a proper distribution.
    Unlike softmax it is not shift invariant. ``T_n`` is evaluated by Horner's rule in log
    space, so no ``x^n`` is formed and large inputs do not overflow.

    Args:
      x: input array of any floating dtype.
      axis: the axis or axes to normalize over (an int, a tuple of ints, or None for all).
      where: optional boolean mask broadcastable to ``x``; masked entries, and entries of
        -inf, get probability 0 and a zero gradient. A NaN or +inf makes its slice NaN.
      order: the even order n >= 2 of the Taylor polynomial.

    Returns:
      An array of x's shape and dtype.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> # T_2(0) = 1, T_2(1) = 2.5
      >>> print(softfam.taylor_softmax(jnp.array([0.0, 1.0])))
      [0.2857143  0.71428573]

    References:
      de Brebisson & Vincent 2016, arXiv 1511.05042; Banerjee et al. 2020, arXiv 2011.11538.
    """
    return _family.probabilities(_family.taylor(order), x, axis, where)


def log_taylor_softmax(
    x: jax.typing.ArrayLike,
    axis: Axis = -1,
    where: jax.typing.ArrayLike | None = None,
    *,
    order: int = 2,
) -> jax.Array:
    """Log-Taylor softmax: ``log p_i = log T_n(x_i) - log sum_j T_n(x_j)``, in log space.

    Args:
      x: input array of any floating dtype.
      axis: the axis or axes to normalize over (an int, a tuple of ints, or None for all).
      where: optional boolean mask broadcastable to ``x``; masked entries, and entries of
        -inf, get -inf and a zero gradient. A NaN or +inf makes its slice NaN.
      order: the even order n >= 2 of the Taylor polynomial.

    Returns:
      An array of x's shape and dtype.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> # T_2(-1) = 1/2 and T_2(1) = 5/2
      >>> print(softfam.log_taylor_softmax(jnp.array([-1.0, 1.0])))
      [-1.7917595  -0.18232155]

    References:
      de Brebisson & Vincent 2016, arXiv 1511.05042.
    """
    return _family.log_probabilities(_family.taylor(order), x, axis, where)


def spherical_softmax(
    x: jax.typing.ArrayLike,
    axis: Axis = -1,
    where: jax.typing.ArrayLike | None = None,
    *,
    epsilon: jax.typing.ArrayLike = DEFAULT_EPSILON,
) -> jax.Array:
    """Spherical softmax: ``p_i = (x_i^2 + eps) / sum_j (x_j^2 + eps)``.

    Even in x (signs are ignored) and scale invariant as ``eps -> 0``. The default
    ``eps = 0.01`` is small beside logits of order 1, so the output is close to that limit,
    while it bounds ``|d/dx log(x^2 + eps)|`` by ``1 / sqrt(eps) = 10``.

    Args:
      x: input array of any floating dtype.
      axis: the axis or axes to normalize over (an int, a tuple of ints, or None for all).
      where: optional boolean mask broadcastable to ``x``; masked entries, and entries of
        -inf, get probability 0 and a zero gradient. A NaN or +inf makes its slice NaN.
      epsilon: ``eps > 0``.

    Returns:
      An array of x's shape and dtype.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> print(softfam.spherical_softmax(jnp.array([3.0, -4.0]), epsilon=1e-6))
      [0.35999998 0.64      ]

    References:
      Vincent, de Brebisson & Bouthillier 2015, arXiv 1412.7091; de Brebisson & Vincent
      2016, arXiv 1511.05042.
    """
    _validation.positive("epsilon", epsilon)
    return _family.probabilities(_family.SPHERICAL, x, axis, where, (epsilon,))


def log_spherical_softmax(
    x: jax.typing.ArrayLike,
    axis: Axis = -1,
    where: jax.typing.ArrayLike | None = None,
    *,
    epsilon: jax.typing.ArrayLike = DEFAULT_EPSILON,
) -> jax.Array:
    """Log-spherical softmax: ``log p_i = log(x_i^2 + eps) - log sum_j (x_j^2 + eps)``.

    Args:
      x: input array of any floating dtype.
      axis: the axis or axes to normalize over (an int, a tuple of ints, or None for all).
      where: optional boolean mask broadcastable to ``x``; masked entries, and entries of
        -inf, get -inf and a zero gradient. A NaN or +inf makes its slice NaN.
      epsilon: ``eps > 0``; see ``spherical_softmax`` for the default.

    Returns:
      An array of x's shape and dtype.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> print(softfam.log_spherical_softmax(jnp.array([1.0, 1.0]), epsilon=1.0))
      [-0.6931472 -0.6931472]

    References:
      de Brebisson & Vincent 2016, arXiv 1511.05042.
    """
    _validation.positive("epsilon", epsilon)
    return _family.log_probabilities(_family.SPHERICAL, x, axis, where, (epsilon,))
