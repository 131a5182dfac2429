"""Argument checks shared by every public function: each error names the argument."""

from __future__ import annotations

import operator
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

Axis = Union[int, tuple[int, ...], None]


def floating_array(name: str, value: jax.typing.ArrayLike) -> jax.Array:
    """Returns `value` as an array, raising TypeError unless its dtype is floating."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), "
            f"got {array.dtype}"
        )
    return array


def integer_array(name: str, value: jax.typing.ArrayLike) -> jax.Array:
    """Returns `value` as an array, raising TypeError unless its dtype is integer."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype (class indices), got {array.dtype}")
    return array


def boolean_mask(where: jax.typing.ArrayLike, shape: tuple[int, ...]) -> jax.Array:
    """Returns `where` as a boolean array broadcast to `shape`."""
    mask = jnp.asarray(where)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"where must be a boolean array, got dtype {mask.dtype}")
    try:
        return jnp.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(
            f"where of shape {mask.shape} does not broadcast to the logits' shape {shape}"
        ) from None


def canonical_axes(axis: Axis, ndim: int) -> tuple[int, ...]:
    """Returns `axis` (an int, a tuple of ints or None for all) as non-negative axes, in the
    order given (the order in which integer labels flatten them, as in optax)."""
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"axis must be an int, a tuple of ints or None, got {axis!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"axis={axis!r} is out of range for an array with {ndim} dimensions")
    canonical = tuple(operator.index(a) % ndim for a in axes)
    if len(set(canonical)) != len(canonical):
        raise ValueError(f"axis={axis!r} repeats an axis")
    return canonical


def taylor_order(order: int) -> int:
    """Checks that the Taylor order is an even Python integer >= 2."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise TypeError(f"order must be a Python int (an even integer >= 2), got {order!r}")
    if order < 2 or order % 2:
        raise ValueError(
            f"order must be an even integer >= 2 (odd orders make T_n negative), got {order}"
        )
    return int(order)


def positive(name: str, value: jax.typing.ArrayLike) -> None:
    """Raises ValueError when a concrete hyperparameter is not > 0 (traced values pass)."""
    if isinstance(value, jax.core.Tracer):
        return
    if not np.all(np.asarray(value) > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
