"""Linear losses: a loss of the logits ``o = h W + b`` that never builds the (N, V) logits.

For a Dense output layer (``hidden`` (..., d), ``weights`` (d, V), optional ``bias`` (V,)):

- The spherical family (log-Taylor of order 2, log-spherical, squared error, the Z-loss)
  needs only ``o_c = h . W[:, c] + b_c``, ``s = h . (W 1) + sum b`` and
  ``q = |W^T h + b|^2 = h^T (W W^T) h + 2 h . (W b) + b . b``. ``_linear_statistics`` forms
  them in O((N + V) d^2) with the memory of ``W`` and a d x d Gram matrix, and its custom VJP
  returns the exact gradients in the same order of work: with ``g_o, g_s, g_q`` the loss's
  gradients for the statistics,

      dh_n = g_o W[:, c_n] + g_s W 1 + 2 g_q (W W^T h_n + W b),
      dW   = 2 (H^T diag(g_q) H) W + (H^T g_s) 1^T + 2 (H^T g_q) b^T + sum_n g_o h_n e_{c_n}^T,
      db   = (sum g_s) 1 + 2 (W^T H^T g_q + (sum g_q) b) + sum_n g_o e_{c_n}.

  The loss itself is the ``*_from_statistics`` function of the dense path and the factored
  layer, unchanged.
- Log-softmax and Taylor orders above 2 need every logit: ``_log_partition`` runs over blocks
  of ``block_size`` classes, keeping a running log-sum of the scores ``log f(o)``, and its
  custom VJP computes each block's logits again to form ``dh``, ``dW`` and ``db``, so that no
  more than (N, block_size) logits exist at once. The loss is ``log Z - log f(o_c)``.

Sums and products accumulate in float32 for bfloat16 and float16 inputs (float64 stays
float64); the loss comes back in ``hidden``'s dtype and each gradient in its input's dtype.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from softfam import _family, _spherical, _validation

DEFAULT_BLOCK_SIZE = 1024  # (N, 1024) float32 logits per block: 16 MiB at N = 4096


class _Batch(NamedTuple):
    """The flattened, checked inputs of a linear loss."""

    hidden: jax.Array  # (N, d)
    weights: jax.Array  # (d, V)
    bias: jax.Array  # (V,), zeros when none was given
    labels: jax.Array  # (N,), 0 where the label is invalid or masked
    label_is_valid: jax.Array  # (N,)
    where: jax.Array  # (N,)
    shape: tuple[int, ...]  # the examples' shape (...)


def _batch(hidden, weights, labels, bias, where) -> _Batch:
    hidden = _validation.floating_array("hidden", hidden)
    weights = _validation.floating_array("weights", weights)
    labels = _validation.integer_array("labels", labels)
    if weights.ndim != 2 or hidden.ndim < 1 or hidden.shape[-1] != weights.shape[0]:
        raise ValueError(f"weights must have shape (d, V) with d = hidden.shape[-1]; got hidden "
                         f"{hidden.shape} and weights {weights.shape}")
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(f"labels must have hidden's shape without its last axis, "
                         f"{hidden.shape[:-1]}; got {labels.shape}")
    num_classes = weights.shape[1]
    if bias is None:
        bias = jnp.zeros(num_classes, weights.dtype)
    bias = _validation.floating_array("bias", bias)
    if bias.shape != (num_classes,):
        raise ValueError(f"bias must have shape ({num_classes},), got {bias.shape}")
    where = jnp.ones(labels.shape, bool) if where is None else _validation.boolean_mask(where, labels.shape)
    shape = labels.shape
    labels, where = labels.reshape(-1), where.reshape(-1)
    label_is_valid = (labels >= 0) & (labels < num_classes)
    return _Batch(hidden.reshape(-1, hidden.shape[-1]), weights, bias,
                  jnp.where(label_is_valid & where, labels, 0), label_is_valid, where, shape)


def _finish(loss: jax.Array, batch: _Batch, dtype) -> jax.Array:
    """NaN for an invalid label, 0 where masked, in the examples' shape and ``dtype``."""
    loss = jnp.where(batch.label_is_valid, loss, jnp.nan)
    return jnp.where(batch.where, loss, 0).reshape(batch.shape).astype(dtype)


def _dot(a, b):
    """``a @ b`` accumulated in the compute dtype of the inputs (the narrower one cast up)."""
    dtype = _family.compute_dtype(a.dtype if a.dtype == jnp.float64 else b.dtype)
    if a.dtype != b.dtype:
        a, b = a.astype(dtype), b.astype(dtype)
    return jnp.matmul(a, b, preferred_element_type=dtype)


def _target_logits(h, weights, b, labels):
    """``o_c = h . W[:, c] + b_c`` (N,) and the target columns ``W[:, c]`` (N, d), in h's dtype."""
    target_columns = jnp.take(weights, labels, axis=1).T.astype(h.dtype)
    return jnp.sum(h * target_columns, -1) + b[labels], target_columns


# --- The spherical family: exact statistics in O((N + V) d^2). -------------------------------


@jax.custom_vjp
def _linear_statistics(hidden, weights, bias, labels):
    """``(o_c, s, q)`` (N,) of the logits ``hidden @ weights + bias`` in the compute dtype."""
    return _statistics_forward(hidden, weights, bias, labels)[0]


def _statistics_forward(hidden, weights, bias, labels):
    dtype = _family.compute_dtype(hidden.dtype)
    h, b = hidden.astype(dtype), bias.astype(dtype)
    target_logits, target_columns = _target_logits(h, weights, b, labels)
    column_sums = jnp.sum(weights, 1, dtype=dtype)  # W 1
    gram = _dot(weights, weights.T)  # W W^T
    weights_bias = _dot(weights, b)  # W b
    h_gram = h @ gram
    statistics = (target_logits,
                  h @ column_sums + jnp.sum(b),
                  jnp.sum(h_gram * h, -1) + 2 * (h @ weights_bias) + b @ b)
    residuals = (hidden, weights, bias, labels, target_columns, column_sums, h_gram, weights_bias)
    return statistics, residuals


def _statistics_backward(residuals, cotangents):
    hidden, weights, bias, labels, target_columns, column_sums, h_gram, weights_bias = residuals
    g_o, g_s, g_q = cotangents
    dtype = g_o.dtype
    h, b = hidden.astype(dtype), bias.astype(dtype)
    d_hidden = (g_o[:, None] * target_columns + g_s[:, None] * column_sums[None, :]
                + 2 * g_q[:, None] * (h_gram + weights_bias[None, :]))
    h_g_q, h_g_s = h.T @ g_q, h.T @ g_s
    curvature = (h * g_q[:, None]).T @ h  # H^T diag(g_q) H
    d_weights = 2 * _dot(curvature, weights) + h_g_s[:, None] + 2 * h_g_q[:, None] * b[None, :]
    d_weights = d_weights.at[:, labels].add((g_o[:, None] * h).T)
    d_bias = jnp.sum(g_s) + 2 * (_dot(h_g_q, weights) + jnp.sum(g_q) * b)
    d_bias = d_bias.at[labels].add(g_o)
    return (d_hidden.astype(hidden.dtype), d_weights.astype(weights.dtype),
            d_bias.astype(bias.dtype), None)


_linear_statistics.defvjp(_statistics_forward, _statistics_backward)


def _statistics_loss(loss_from_statistics: Callable, hidden, weights, labels, bias, where,
                     **hyperparameters) -> jax.Array:
    """``loss_from_statistics`` applied to the exact statistics of ``hidden @ weights + bias``."""
    batch = _batch(hidden, weights, labels, bias, where)
    o_c, s, q = _linear_statistics(batch.hidden, batch.weights, batch.bias, batch.labels)
    loss = loss_from_statistics(o_c, s, q, batch.weights.shape[1], **hyperparameters)
    return _finish(loss, batch, batch.hidden.dtype)


# --- Log-softmax and higher Taylor orders: the log-partition over blocks of classes. ----------


def _blocks(num_classes: int, block_size: int) -> tuple[int, int]:
    """The number of full blocks and the size of the last, partial one (possibly 0)."""
    return num_classes // block_size, num_classes % block_size


def _block_logits(hidden, weights, bias, start, size):
    """The logits of classes ``[start, start + size)`` (N, size) in the compute dtype."""
    w = jax.lax.dynamic_slice_in_dim(weights, start, size, axis=1)
    b = jax.lax.dynamic_slice_in_dim(bias, start, size)
    return _dot(hidden, w) + b.astype(_family.compute_dtype(hidden.dtype))[None, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _log_partition(hidden, weights, bias, log_score, block_size):
    """``log sum_k f(o_k)`` (N,) for ``o = hidden @ weights + bias``, ``log f = log_score``."""
    return _log_partition_forward(hidden, weights, bias, log_score, block_size)[0]


def _log_partition_forward(hidden, weights, bias, log_score, block_size):
    full, rest = _blocks(weights.shape[1], block_size)
    dtype = _family.compute_dtype(hidden.dtype)

    def add_block(running, start, size):  # running (max, sum of exp(log f - max))
        top, total = running
        log_f = log_score(_block_logits(hidden, weights, bias, start, size))
        new_top = jnp.maximum(top, jnp.max(log_f, -1))
        safe_top = jnp.where(jnp.isfinite(new_top), new_top, 0)
        total = total * jnp.exp(top - safe_top) + jnp.sum(jnp.exp(log_f - safe_top[:, None]), -1)
        return new_top, total

    n = hidden.shape[0]
    running = (jnp.full(n, -jnp.inf, dtype), jnp.zeros(n, dtype))
    running, _ = jax.lax.scan(lambda r, i: (add_block(r, i * block_size, block_size), None),
                              running, jnp.arange(full))
    if rest:
        running = add_block(running, full * block_size, rest)
    top, total = running
    log_z = jnp.where(jnp.isfinite(top), top, 0) + jnp.log(total)
    return log_z, (hidden, weights, bias, log_z)


def _log_partition_backward(log_score, block_size, residuals, g):
    """``d log Z / d o_k = p_k (log f)'(o_k)`` with ``p_k = f(o_k) / Z``, block by block."""
    hidden, weights, bias, log_z = residuals
    full, rest = _blocks(weights.shape[1], block_size)
    dtype = g.dtype
    h = hidden.astype(dtype)

    def block_gradients(d_hidden, start, size):
        logits = _block_logits(hidden, weights, bias, start, size)
        log_f, log_f_vjp = jax.vjp(log_score, logits)
        (d_logits,) = log_f_vjp(jnp.exp(log_f - log_z[:, None]) * g[:, None])
        w = jax.lax.dynamic_slice_in_dim(weights, start, size, axis=1).astype(dtype)
        return d_hidden + d_logits @ w.T, h.T @ d_logits, jnp.sum(d_logits, 0)

    def scan_block(carry, i):
        d_hidden, d_weights, d_bias = carry
        d_hidden, d_w, d_b = block_gradients(d_hidden, i * block_size, block_size)
        return (d_hidden,
                jax.lax.dynamic_update_slice_in_dim(d_weights, d_w, i * block_size, axis=1),
                jax.lax.dynamic_update_slice_in_dim(d_bias, d_b, i * block_size, axis=0)), None

    carry = (jnp.zeros(h.shape, dtype), jnp.zeros(weights.shape, dtype),
             jnp.zeros(bias.shape, dtype))
    (d_hidden, d_weights, d_bias), _ = jax.lax.scan(scan_block, carry, jnp.arange(full))
    if rest:
        start = full * block_size
        d_hidden, d_w, d_b = block_gradients(d_hidden, start, rest)
        d_weights = d_weights.at[:, start:].set(d_w)
        d_bias = d_bias.at[start:].set(d_b)
    return d_hidden.astype(hidden.dtype), d_weights.astype(weights.dtype), d_bias.astype(bias.dtype)


_log_partition.defvjp(_log_partition_forward, _log_partition_backward)


def _blocked_loss(log_score: Callable, hidden, weights, labels, bias, where, block_size) -> jax.Array:
    """``log sum_k f(o_k) - log f(o_c)`` over blocks of ``block_size`` classes."""
    batch = _batch(hidden, weights, labels, bias, where)
    dtype = _family.compute_dtype(batch.hidden.dtype)
    target_logit, _ = _target_logits(batch.hidden.astype(dtype), batch.weights,
                                     batch.bias.astype(dtype), batch.labels)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive Python int, got {block_size!r}")
    block_size = min(block_size, batch.weights.shape[1])
    log_z = _log_partition(batch.hidden, batch.weights, batch.bias, log_score, block_size)
    return _finish(log_z - log_score(target_logit), batch, batch.hidden.dtype)


def _identity(x):
    return x


# --- The public losses. -------------------------------------------------------------------------


def linear_softmax_cross_entropy_with_integer_labels(
    hidden: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    bias: Optional[jax.typing.ArrayLike] = None,
    where: Optional[jax.typing.ArrayLike] = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> jax.Array:
    """``softmax_cross_entropy_with_integer_labels(hidden @ weights + bias, labels)`` without
    the logits: ``logsumexp(o) - o_c``, the log-sum taken over blocks of ``block_size`` classes.

    Args:
      hidden: the output layer's inputs, shape ``(..., d)``.
      weights: its kernel, shape ``(d, V)`` (a ``Dense`` kernel).
      labels: integer classes, shape ``(...)``; one outside ``[0, V)`` gives NaN.
      bias: optional, shape ``(V,)``.
      where: optional boolean, shape ``(...)``: examples where False get loss 0 and no gradient.
      block_size: classes per block; at most (N, block_size) logits exist at once.

    Returns:
      The loss per example, shape ``(...)``, in ``hidden``'s dtype.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> h, w = jnp.array([[1.0, 2.0]]), jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
      >>> loss = softfam.linear_softmax_cross_entropy_with_integer_labels(h, w, jnp.array([1]))
      >>> loss.round(6).tolist()  # o = [1, 2, 0]: log(e + e^2 + 1) - 2
      [0.407606]
    """
    return _blocked_loss(_identity, hidden, weights, labels, bias, where, block_size)


def linear_taylor_softmax_cross_entropy_with_integer_labels(
    hidden: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    bias: Optional[jax.typing.ArrayLike] = None,
    where: Optional[jax.typing.ArrayLike] = None,
    *,
    order: int = 2,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> jax.Array:
    """``taylor_softmax_cross_entropy_with_integer_labels(hidden @ weights + bias, labels)``
    without the logits. Order 2 is of the spherical family, computed exactly from the
    statistics in O((N + V) d^2); higher orders over blocks of ``block_size`` classes.

    Arguments as in ``linear_softmax_cross_entropy_with_integer_labels``; ``order`` is even
    and >= 2.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> h, w = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0], [1.0, 1.0]])
      >>> # o = [0, 1]: T_2 = [1, 2.5], p_1 = 2.5 / 3.5
      >>> softfam.linear_taylor_softmax_cross_entropy_with_integer_labels(
      ...     h, w, jnp.array([1])).round(6).tolist()
      [0.336472]
    """
    if _validation.taylor_order(order) == 2:
        return _statistics_loss(_spherical.taylor_softmax_cross_entropy_from_statistics,
                                hidden, weights, labels, bias, where)
    return _blocked_loss(_family.taylor(order).log_score, hidden, weights, labels, bias, where,
                         block_size)


def linear_spherical_softmax_cross_entropy_with_integer_labels(
    hidden: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    bias: Optional[jax.typing.ArrayLike] = None,
    where: Optional[jax.typing.ArrayLike] = None,
    *,
    epsilon: jax.typing.ArrayLike = _family.DEFAULT_EPSILON,
) -> jax.Array:
    """``spherical_softmax_cross_entropy_with_integer_labels(hidden @ weights + bias, labels)``
    exactly from the statistics, in O((N + V) d^2): ``log(q + V eps) - log(o_c^2 + eps)``.

    Arguments as in ``linear_softmax_cross_entropy_with_integer_labels``; ``epsilon > 0``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> h, w = jnp.array([[1.0]]), jnp.array([[3.0, 4.0]])
      >>> softfam.linear_spherical_softmax_cross_entropy_with_integer_labels(
      ...     h, w, jnp.array([1]), epsilon=1e-6).round(5).tolist()  # p = 16 / 25
      [0.44629]
    """
    return _statistics_loss(_spherical.spherical_softmax_cross_entropy_from_statistics,
                            hidden, weights, labels, bias, where, epsilon=epsilon)


def linear_squared_error_with_integer_labels(
    hidden: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    bias: Optional[jax.typing.ArrayLike] = None,
    where: Optional[jax.typing.ArrayLike] = None,
) -> jax.Array:
    """``squared_error_with_integer_labels(hidden @ weights + bias, labels)`` exactly from the
    statistics, in O((N + V) d^2): ``q - 2 o_c + 1``.

    Arguments as in ``linear_softmax_cross_entropy_with_integer_labels``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> h, w = jnp.array([[1.0]]), jnp.array([[0.5, 2.0]])
      >>> softfam.linear_squared_error_with_integer_labels(h, w, jnp.array([0])).tolist()
      [4.25]
    """
    return _statistics_loss(_spherical.squared_error_from_statistics,
                            hidden, weights, labels, bias, where)


def linear_z_loss_with_integer_labels(
    hidden: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    bias: Optional[jax.typing.ArrayLike] = None,
    where: Optional[jax.typing.ArrayLike] = None,
    *,
    a: jax.typing.ArrayLike = 1.0,
    b: jax.typing.ArrayLike = 2.0,
) -> jax.Array:
    """``z_loss_with_integer_labels(hidden @ weights + bias, labels)`` exactly from the
    statistics, in O((N + V) d^2).

    Arguments as in ``linear_softmax_cross_entropy_with_integer_labels``; ``a`` and ``b`` as
    in ``z_loss_from_statistics``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> h, w = jnp.array([[1.0]]), jnp.array([[-1.0, 1.0]])
      >>> softfam.linear_z_loss_with_integer_labels(h, w, jnp.array([1])).round(6).tolist()
      [1.313262]
    """
    return _statistics_loss(_spherical.z_loss_from_statistics,
                            hidden, weights, labels, bias, where, a=a, b=b)
