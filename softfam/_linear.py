"""Linear losses: a loss of the logits ``o = h W + b`` that never builds the (N, V) logits,
on one device or with the examples and the classes sharded over a mesh.

For a Dense output layer (``hidden`` (..., d), ``weights`` (d, V), optional ``bias`` (V,)):

- The spherical family (log-Taylor of order 2, log-spherical, squared error, the Z-loss)
  needs only the target's logit ``o_c = h . W[:, c] + b_c``, ``s = h . (W 1) + sum b`` and
  ``q = |W^T h + b|^2 = h^T (W W^T) h + 2 h . (W b) + b . b``. ``_linear_statistics`` forms
  ``s`` and ``q`` in O((N + V) d^2) with the memory of ``W`` and a d x d Gram matrix, and its
  custom VJP returns the exact gradients in the same order of work: with ``g_s, g_q`` the
  loss's gradients for the statistics,

      dh_n = g_s W 1 + 2 g_q (W W^T h_n + W b),
      dW   = 2 (H^T diag(g_q) H) W + (H^T g_s) 1^T + 2 (H^T g_q) b^T,
      db   = (sum g_s) 1 + 2 (W^T H^T g_q + (sum g_q) b).

  The loss itself is the ``*_from_statistics`` function of the dense path and the factored
  layer, unchanged.
- Log-softmax and Taylor orders above 2 need every logit: ``_log_partition`` runs over blocks
  of ``block_size`` classes, keeping a running log-sum of the scores ``log f(o)``, and its
  custom VJP computes each block's logits again to form ``dh``, ``dW`` and ``db``, so that no
  more than (N, block_size) logits exist at once. The loss is ``log Z - log f(o_c)``.

Keywords, as the LLM stacks name them (each refused, naming it, where the math forbids it):

- ``logit_soft_cap=c > 0``: every logit becomes ``c tanh(o / c)`` before the normalizer.
  Blocked losses only: capped logits are not quadratic in ``h``, so ``s`` and ``q`` have no
  O(d^2) form.
- ``class_where``: a (V,) boolean mask of the classes that exist (vocabulary padding). An
  excluded class has probability 0, also after capping, and gets a zero gradient; in the
  statistics it counts neither in ``s``, ``q`` nor ``D``. A label naming an excluded class
  gives +inf, as in the dense losses.
- ``log_normalizer_penalty=w``: adds ``w (log Z)^2`` per example (PaLM's auxiliary loss, which
  the LLM stacks call "z-loss": not softfam's Z-loss). For the losses that have a normalizer:
  the blocked ones, log-Taylor of order 2 (``log Z = log(D + s + q/2)``) and log-spherical
  (``log Z = log(q + D eps)``); squared error and the Z-loss have none.
- ``return_log_normalizer=True``: returns ``(loss, log_z)``, both per example; same losses.
- ``label_smoothing=alpha`` in [0, 1): ``(1 - alpha) (log Z - log f(o_c)) + alpha (log Z -
  mean_j log f(o_j))``, the mean over the included classes: the cross-entropy against
  ``(1 - alpha) onehot(c) + alpha / D``. Blocked losses only: ``mean_j log f(o_j)`` is no
  function of ``s`` and ``q``.

Sharding. Each device runs the single-device algorithm on its own examples and its own
classes, and the devices exchange per-example numbers only: the partial log-partitions
(combined as ``M + log sum_shards exp(log Z_shard - M)`` with ``M`` their maximum), the partial
statistics ``s`` and ``q``, and the target's logit from the device that holds its column.
Two ways to shard:

- GSPMD: call the loss under ``jax.jit`` with sharded inputs. On a mesh of explicit axes
  (``jax.make_mesh``'s default) the loss reads the shardings from the inputs' types: the
  classes are sharded over the axes that shard ``weights``' second axis (or over
  ``axis_name``, if given) and the examples keep ``hidden``'s sharding. On a mesh of ``Auto``
  axes the types carry no sharding: pass ``axis_name``, and the classes are sharded over it
  and the first example axis over the mesh's other axes. Either way the loss runs itself
  under ``jax.shard_map`` over the inputs' mesh. (On an ``Auto`` mesh without ``axis_name``
  it runs as one program, which the partitioner may gather.)
- ``shard_map``: call the loss on each device's shards with ``axis_name``, the mesh axis (or
  tuple of axes) over which the vocabulary is sharded; ``labels`` hold global class indices
  and ``class_where`` is the device's own ``(v,)`` part.

Communication per step (one ``jax.value_and_grad`` for hidden, weights and bias), per device,
with ``n`` examples on the device, ``v`` classes on the device, ``B`` bytes per element of
the compute dtype (4 for float32, bfloat16 and float16 inputs; 8 for float64): payloads of
all-reduces (a ring all-reduce over ``k`` devices sends ``2 (k - 1) / k`` times its payload).

- Over the vocabulary axes, forward: ``3 n B`` bytes (the blocked losses: the partial
  log-partitions' maximum and sum, and the target's logit; the statistics losses: ``s``,
  ``q`` and the target's logit, ``2 n B`` for the spherical softmax and the squared error,
  which do not use ``s``); ``n B`` more with ``label_smoothing`` (the sum of the log-scores),
  and ``4 n`` bytes more with ``class_where`` (whether the target is included).
- Over the vocabulary axes, backward: ``n d`` elements of ``hidden``'s gradient, in its dtype.
- Over the example axes, backward: the kernel's and the bias's gradients, ``(d + 1) v``
  elements in their dtype: the reduction that data parallelism always needs.

No device holds more of the kernel than its own ``(d, v)`` shard; the kernel's gradient comes
back sharded like the kernel. For example, 8192 examples over 2 devices (``n = 4096``), a
vocabulary of 256,000 over 4 (``v = 64,000``), ``d = 4096``, bfloat16 hidden and kernel: 48 KiB
forward and 32 MiB for ``hidden``'s gradient over the vocabulary axis, 500 MiB for the
kernel's gradient over the example axis; gathering the whole kernel instead would move and
hold 2 GiB per device.

Sums and products accumulate in float32 for bfloat16 and float16 inputs (float64 stays
float64); the loss comes back in ``hidden``'s dtype and each gradient in its input's dtype.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from softfam import _family, _spherical, _validation

DEFAULT_BLOCK_SIZE = 1024  # (N, 1024) float32 logits per block: 16 MiB at N = 4096

AxisName = Union[str, tuple[str, ...], None]


def _dot(a, b):
    """``a @ b`` accumulated in the compute dtype of the inputs (the narrower one cast up)."""
    dtype = _family.compute_dtype(a.dtype if a.dtype == jnp.float64 else b.dtype)
    if a.dtype != b.dtype:
        a, b = a.astype(dtype), b.astype(dtype)
    return jnp.matmul(a, b, preferred_element_type=dtype)


# --- Collectives over the vocabulary axes (none on one device). ---------------------------------


def _sum_over(x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    return lax.psum(x, axes) if axes else x


def _varying(x) -> frozenset:
    """The manual mesh axes over which ``x`` varies (inside ``shard_map``; empty elsewhere)."""
    return getattr(getattr(jax.typeof(x), "manual_axis_type", None), "varying", frozenset())


def _vary_alike(*arrays):
    """The arrays cast to vary over the same manual axes, so that a custom VJP returns
    cotangents of its inputs' types; autodiff then adds the reductions (a cast's transpose is
    a ``psum``): ``hidden``'s gradient over the vocabulary axes, the kernel's over the
    example axes."""
    varying = frozenset().union(*(_varying(a) for a in arrays))
    return tuple(a if _varying(a) == varying
                 else lax.pcast(a, tuple(sorted(varying - _varying(a))), to="varying")
                 for a in arrays)


def _log_sum_over(log_z: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    """``log sum_shards exp(log_z)``: ``M + log sum exp(log_z - M)`` with ``M`` the largest
    (held constant: the result does not depend on it)."""
    top = lax.stop_gradient(log_z)
    top = lax.pmax(top, axes) if axes else top
    top = jnp.where(jnp.isfinite(top), top, 0)
    return top + jnp.log(_sum_over(jnp.exp(log_z - top), axes))


# --- The inputs of one device. -------------------------------------------------------------------


class _Shard(NamedTuple):
    """One device's flattened inputs: its examples and its classes."""

    hidden: jax.Array  # (n, d)
    weights: jax.Array  # (d, v)
    bias: jax.Array  # (v,)
    class_where: Optional[jax.Array]  # (v,) or None: every class exists
    labels: jax.Array  # (n,) global indices, 0 where invalid or masked
    label_is_valid: jax.Array  # (n,)
    where: jax.Array  # (n,)
    shape: tuple[int, ...]  # the examples' shape on this device


def _shard(arrays: dict, num_classes: int) -> _Shard:
    """The flattened inputs, the floating ones cast to vary over the same manual axes: each
    enters the computation through one cast, so that its gradient is reduced once."""
    hidden, labels, where = arrays["hidden"], arrays["labels"], arrays["where"]
    shape = labels.shape
    labels, where = labels.reshape(-1), where.reshape(-1)
    label_is_valid = (labels >= 0) & (labels < num_classes)
    hidden, weights, bias = _vary_alike(hidden.reshape(-1, hidden.shape[-1]), arrays["weights"],
                                        arrays["bias"])
    return _Shard(hidden, weights, bias, arrays.get("class_where"),
                  jnp.where(label_is_valid & where, labels, 0), label_is_valid, where, shape)


def _target_logit(shard: _Shard, axes: tuple[str, ...]) -> tuple[jax.Array, jax.Array]:
    """``o_c`` (n,) in the compute dtype, from the device whose classes hold ``c``, and whether
    ``c`` is an included class (n,)."""
    dtype = _family.compute_dtype(shard.hidden.dtype)
    local_classes = shard.weights.shape[1]
    local = shard.labels - (lax.axis_index(axes) * local_classes if axes else 0)
    here = (local >= 0) & (local < local_classes)
    local = jnp.where(here, local, 0)
    columns = jnp.take(shard.weights, local, axis=1).T.astype(dtype)
    logit = jnp.sum(shard.hidden.astype(dtype) * columns, -1) + shard.bias[local].astype(dtype)
    logit = _sum_over(jnp.where(here, logit, 0), axes)
    if shard.class_where is None:  # a valid label is on exactly one device
        return logit, jnp.ones(logit.shape, bool)
    return logit, _sum_over((here & shard.class_where[local]).astype(jnp.int32), axes) > 0


def _finish(loss: jax.Array, shard: _Shard, target_included: jax.Array, dtype) -> jax.Array:
    """+inf for an excluded target, NaN for an invalid label, 0 where masked, in the examples'
    shape and ``dtype``."""
    loss = jnp.where(target_included, loss, jnp.inf)
    loss = jnp.where(shard.label_is_valid, loss, jnp.nan)
    return jnp.where(shard.where, loss, 0).reshape(shard.shape).astype(dtype)


# --- The spherical family: exact statistics in O((N + V) d^2). -------------------------------


@jax.custom_vjp
def _linear_statistics(hidden, weights, bias):
    """``(s, q)`` (N,) of the logits ``hidden @ weights + bias`` in the compute dtype."""
    return _statistics_forward(hidden, weights, bias)[0]


def _statistics_forward(hidden, weights, bias):
    dtype = _family.compute_dtype(hidden.dtype)
    h, b = hidden.astype(dtype), bias.astype(dtype)
    column_sums = jnp.sum(weights, 1, dtype=dtype)  # W 1
    gram = _dot(weights, weights.T)  # W W^T
    weights_bias = _dot(weights, b)  # W b
    h_gram = h @ gram
    statistics = (h @ column_sums + jnp.sum(b),
                  jnp.sum(h_gram * h, -1) + 2 * (h @ weights_bias) + b @ b)
    return statistics, (hidden, weights, bias, column_sums, h_gram, weights_bias)


def _statistics_backward(residuals, cotangents):
    hidden, weights, bias, column_sums, h_gram, weights_bias = residuals
    g_s, g_q = cotangents
    dtype = g_s.dtype
    h, b = hidden.astype(dtype), bias.astype(dtype)
    d_hidden = (g_s[:, None] * column_sums[None, :]
                + 2 * g_q[:, None] * (h_gram + weights_bias[None, :]))
    h_g_q, h_g_s = h.T @ g_q, h.T @ g_s
    curvature = (h * g_q[:, None]).T @ h  # H^T diag(g_q) H
    d_weights = 2 * _dot(curvature, weights) + h_g_s[:, None] + 2 * h_g_q[:, None] * b[None, :]
    d_bias = jnp.sum(g_s) + 2 * (_dot(h_g_q, weights) + jnp.sum(g_q) * b)
    return (d_hidden.astype(hidden.dtype), d_weights.astype(weights.dtype),
            d_bias.astype(bias.dtype))


_linear_statistics.defvjp(_statistics_forward, _statistics_backward)


class _StatisticsLoss(NamedTuple):
    """A spherical-family loss: its function of ``(o_c, s, q, D)`` and, where it has one, its
    log-normalizer as a function of ``(s, q, D)``."""

    from_statistics: Callable
    log_normalizer: Optional[Callable]


def _statistics_core(loss: _StatisticsLoss, axes, num_classes, arrays, hyperparameters):
    shard = _shard(arrays, num_classes)
    dtype = _family.compute_dtype(shard.hidden.dtype)
    weights, bias = shard.weights, shard.bias
    if shard.class_where is not None:
        weights = jnp.where(shard.class_where[None, :], weights, 0)
        bias = jnp.where(shard.class_where, bias, 0)
        included = jnp.sum(shard.class_where, dtype=dtype)
    else:
        included = jnp.asarray(weights.shape[1], dtype)
    s, q = _linear_statistics(shard.hidden, weights, bias)
    s, q, classes = _sum_over(s, axes), _sum_over(q, axes), _sum_over(included, axes)
    target_logit, target_included = _target_logit(shard, axes)
    member = hyperparameters["member"]
    value = loss.from_statistics(target_logit, s, q, classes, **member)
    log_z = None
    if loss.log_normalizer is not None:
        log_z = loss.log_normalizer(s, q, classes, **member)
    return _with_log_normalizer(value, log_z, shard, target_included, hyperparameters)


def _spherical_log_normalizer(s, q, classes, *, epsilon):
    """``log(q + D eps)``, with the statistics losses' arguments."""
    return _spherical.spherical_log_normalizer(q, classes, jnp.asarray(epsilon, q.dtype))


# --- Log-softmax and higher Taylor orders: the log-partition over blocks of classes. ----------


def _blocks(num_classes: int, block_size: int) -> tuple[int, int]:
    """The number of full blocks and the size of the last, partial one (possibly 0)."""
    return num_classes // block_size, num_classes % block_size


def _block_logits(hidden, weights, bias, start, size):
    """The logits of classes ``[start, start + size)`` (N, size) in the compute dtype."""
    w = lax.dynamic_slice_in_dim(weights, start, size, axis=1)
    b = lax.dynamic_slice_in_dim(bias, start, size)
    return _dot(hidden, w) + b.astype(_family.compute_dtype(hidden.dtype))[None, :]


def _block_log_scores(logits, class_where, cap, start, log_score):
    """``log f(cap(o))`` of one block, -inf at the excluded classes."""
    if cap is not None:
        cap = jnp.asarray(cap, logits.dtype)
        logits = cap * jnp.tanh(logits / cap)
    log_f = log_score(logits)
    if class_where is None:
        return log_f
    included = lax.dynamic_slice_in_dim(class_where, start, logits.shape[1])
    return jnp.where(included[None, :], log_f, -jnp.inf)


def _included_sum(log_f):
    """The sum of the finite log-scores of a block (the excluded classes are -inf)."""
    return jnp.sum(jnp.where(log_f > -jnp.inf, log_f, 0), -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _log_partition(hidden, weights, bias, class_where, cap, log_score, block_size, sum_scores):
    """``(log sum_k f(o_k), sum_k log f(o_k))`` (N,) over the included classes of
    ``o = cap(hidden @ weights + bias)``, ``log f = log_score``; the second is 0 unless
    ``sum_scores`` (label smoothing needs it)."""
    return _log_partition_forward(hidden, weights, bias, class_where, cap, log_score, block_size,
                                  sum_scores)[0]


def _log_partition_forward(hidden, weights, bias, class_where, cap, log_score, block_size,
                           sum_scores):
    full, rest = _blocks(weights.shape[1], block_size)
    dtype = _family.compute_dtype(hidden.dtype)

    def add_block(running, start, size):  # (max, sum of exp(log f - max), sum of log f)
        top, total, log_f_sum = running
        log_f = _block_log_scores(_block_logits(hidden, weights, bias, start, size),
                                  class_where, cap, start, log_score)
        new_top = jnp.maximum(top, jnp.max(log_f, -1))
        safe_top = jnp.where(jnp.isfinite(new_top), new_top, 0)
        total = total * jnp.exp(top - safe_top) + jnp.sum(jnp.exp(log_f - safe_top[:, None]), -1)
        return new_top, total, log_f_sum + _included_sum(log_f) if sum_scores else log_f_sum

    n = hidden.shape[0]
    running = _vary_alike(hidden, jnp.full(n, -jnp.inf, dtype), jnp.zeros(n, dtype),
                          jnp.zeros(n, dtype))[1:]
    running, _ = lax.scan(lambda r, i: (add_block(r, i * block_size, block_size), None),
                          running, jnp.arange(full))
    if rest:
        running = add_block(running, full * block_size, rest)
    top, total, log_f_sum = running
    log_z = jnp.where(jnp.isfinite(top), top, 0) + jnp.log(total)
    return (log_z, log_f_sum), (hidden, weights, bias, class_where, cap, log_z)


def _log_partition_backward(log_score, block_size, sum_scores, residuals, cotangents):
    """``d log Z / d o_k = p_k (log f)'(o_k)`` with ``p_k = f(o_k) / Z`` and
    ``d sum log f / d o_k = (log f)'(o_k)``, through the cap, block by block."""
    hidden, weights, bias, class_where, cap, log_z = residuals
    g_z, g_sum = cotangents
    full, rest = _blocks(weights.shape[1], block_size)
    dtype = g_z.dtype
    h = hidden.astype(dtype)
    safe_log_z = jnp.where(jnp.isfinite(log_z), log_z, 0)[:, None]

    def block_gradients(d_hidden, start, size):
        logits = _block_logits(hidden, weights, bias, start, size)
        log_f, log_f_vjp = jax.vjp(
            lambda o: _block_log_scores(o, class_where, cap, start, log_score), logits)
        weight = jnp.exp(log_f - safe_log_z) * g_z[:, None]
        if sum_scores:
            weight = weight + jnp.where(log_f > -jnp.inf, g_sum[:, None], 0)
        (d_logits,) = log_f_vjp(weight)
        w = lax.dynamic_slice_in_dim(weights, start, size, axis=1).astype(dtype)
        return d_hidden + d_logits @ w.T, h.T @ d_logits, jnp.sum(d_logits, 0)

    def scan_block(carry, i):
        d_hidden, d_weights, d_bias = carry
        d_hidden, d_w, d_b = block_gradients(d_hidden, i * block_size, block_size)
        return (d_hidden,
                lax.dynamic_update_slice_in_dim(d_weights, d_w, i * block_size, axis=1),
                lax.dynamic_update_slice_in_dim(d_bias, d_b, i * block_size, axis=0)), None

    carry = _vary_alike(h, jnp.zeros(h.shape, dtype), jnp.zeros(weights.shape, dtype),
                        jnp.zeros(bias.shape, dtype))[1:]
    (d_hidden, d_weights, d_bias), _ = lax.scan(scan_block, carry, jnp.arange(full))
    if rest:
        start = full * block_size
        d_hidden, d_w, d_b = block_gradients(d_hidden, start, rest)
        d_weights = d_weights.at[:, start:].set(d_w)
        d_bias = d_bias.at[start:].set(d_b)
    return (d_hidden.astype(hidden.dtype), d_weights.astype(weights.dtype),
            d_bias.astype(bias.dtype), None, None)


_log_partition.defvjp(_log_partition_forward, _log_partition_backward)


def _blocked_core(log_score: Callable, block_size: int, axes, num_classes, arrays, hyperparameters):
    shard = _shard(arrays, num_classes)
    cap = hyperparameters.get("logit_soft_cap")
    cap = None if cap is None else lax.stop_gradient(jnp.asarray(cap))  # a constant, not learned
    smoothing = hyperparameters.get("label_smoothing")
    local_log_z, local_log_f_sum = _log_partition(
        shard.hidden, shard.weights, shard.bias,
        *(None if x is None else _vary_alike(shard.hidden, jnp.asarray(x))[1]
          for x in (shard.class_where, cap)),
        log_score, min(block_size, shard.weights.shape[1]), smoothing is not None)
    log_z = _log_sum_over(local_log_z, axes)
    target_logit, target_included = _target_logit(shard, axes)
    target_log_f = _block_log_scores(target_logit[:, None], None, cap, 0, log_score)[:, 0]
    value = log_z - target_log_f
    if smoothing is not None:
        classes = (jnp.asarray(shard.weights.shape[1]) if shard.class_where is None
                   else jnp.sum(shard.class_where, dtype=jnp.int32))
        mean_log_f = _sum_over(local_log_f_sum, axes) / _sum_over(classes, axes).astype(log_z.dtype)
        smoothing = jnp.asarray(smoothing, log_z.dtype)
        value = (1 - smoothing) * value + smoothing * (log_z - mean_log_f)
    return _with_log_normalizer(value, log_z, shard, target_included, hyperparameters)


def _with_log_normalizer(value, log_z, shard, target_included, hyperparameters):
    """The loss with the penalty ``w (log Z)^2`` if asked for, finished; and ``log Z``."""
    penalty = hyperparameters.get("log_normalizer_penalty")
    if penalty is not None:
        value = value + jnp.asarray(penalty, log_z.dtype) * log_z * log_z
    dtype = shard.hidden.dtype
    loss = _finish(value, shard, target_included, dtype)
    if log_z is not None:
        log_z = jnp.where(shard.where, log_z, 0).reshape(shard.shape).astype(dtype)
    return loss, log_z


# --- Checks, sharding and the public losses. ---------------------------------------------------


def _arrays(hidden, weights, labels, bias, where, class_where) -> dict:
    """The checked inputs, with a zero bias and an all-true ``where`` when none was given."""
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
    bias = (jnp.zeros(num_classes, weights.dtype) if bias is None
            else _validation.floating_array("bias", bias))
    if bias.shape != (num_classes,):
        raise ValueError(f"bias must have shape ({num_classes},), got {bias.shape}")
    where = (jnp.ones(labels.shape, bool) if where is None
             else _validation.boolean_mask(where, labels.shape))
    arrays = dict(hidden=hidden, weights=weights, labels=labels, bias=bias, where=where)
    if class_where is not None:
        class_where = jnp.asarray(class_where)
        if class_where.dtype != jnp.bool_ or class_where.shape != (num_classes,):
            raise ValueError(f"class_where must be a boolean array of shape ({num_classes},), "
                             f"one entry per class; got {class_where.dtype} {class_where.shape}")
        arrays["class_where"] = class_where
    return arrays


def _axis_names(axis_name) -> tuple[str, ...]:
    if axis_name is None:
        return ()
    return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)


def _spec_axes(spec, dim: int) -> tuple[str, ...]:
    return _axis_names(spec[dim]) if dim < len(spec) else ()


def _sharded(core: Callable, arrays: dict, hyperparameters: dict, axis_name: AxisName):
    """``core(axes, num_classes, arrays, hyperparameters)`` on each device's shards.

    - Inside ``shard_map``, with ``axis_name`` naming its manual axes: the arrays are this
      device's shards and the core runs on them, its collectives over ``axis_name``.
    - On a mesh of explicit axes (read from ``weights``' type): the classes are sharded over
      ``axis_name`` if given, else over the axes that shard ``weights``' classes; the examples
      keep ``hidden``'s sharding less those axes; the core runs under ``shard_map``.
    - On a mesh of ``Auto`` axes, with ``axis_name``: the classes are sharded over it and the
      first example axis over the mesh's other axes; the core runs under ``shard_map``.
    - Else the core runs once, on the whole arrays."""
    num_classes = arrays["weights"].shape[1]
    axes = _axis_names(axis_name)
    manual = jax.sharding.get_abstract_mesh().manual_axes
    if axes and all(a in manual for a in axes):
        num_classes *= int(np.prod([lax.axis_size(a) for a in axes]))
        return core(axes, num_classes, arrays, hyperparameters)
    split = _varying(arrays["weights"]) - _varying(arrays["hidden"])
    if split and not axes:
        raise ValueError(f"weights vary over the shard_map axes {tuple(sorted(split))} and hidden "
                         "does not: if the classes are sharded over them, pass them as axis_name")
    mesh = jax.typeof(arrays["weights"]).sharding.mesh
    if any(a not in mesh.axis_names for a in axes):
        raise ValueError(f"axis_name={axis_name!r} must name axes of the enclosing shard_map "
                         f"(manual axes {tuple(manual)}) or of the inputs' mesh "
                         f"(axes {tuple(mesh.axis_names)})")
    explicit = AxisType.Explicit in mesh.axis_types
    if not explicit and not axes:
        return core((), num_classes, arrays, hyperparameters)
    examples_ndim = arrays["hidden"].ndim - 1
    if explicit:
        axes = axes or _spec_axes(jax.typeof(arrays["weights"]).sharding.spec, 1)
        hidden_spec = jax.typeof(arrays["hidden"]).sharding.spec
        examples = [tuple(a for a in _spec_axes(hidden_spec, i) if a not in axes) or None
                    for i in range(examples_ndim)]
    else:
        others = tuple(a for a in mesh.axis_names if a not in axes and mesh.shape[a] > 1)
        examples = [others or None] + [None] * (examples_ndim - 1) if examples_ndim else []
    vocabulary = axes or None
    specs = dict(hidden=P(*examples, None), weights=P(None, vocabulary), labels=P(*examples),
                 bias=P(vocabulary), where=P(*examples), class_where=P(vocabulary))
    specs = {name: specs[name] for name in arrays}
    if explicit:
        arrays = {name: jax.sharding.reshard(x, NamedSharding(mesh, specs[name]))
                  for name, x in arrays.items()}
    hyperparameters = jax.tree.map(jnp.asarray, hyperparameters)
    return jax.shard_map(functools.partial(core, axes, num_classes), mesh=mesh,
                         in_specs=(specs, P()), out_specs=P(*examples))(arrays, hyperparameters)


def _soft_cap(logit_soft_cap):
    if logit_soft_cap is not None:
        _validation.positive("logit_soft_cap", logit_soft_cap)
    return logit_soft_cap


def _label_smoothing(label_smoothing):
    if label_smoothing is not None and not isinstance(label_smoothing, jax.core.Tracer):
        if not 0 <= float(label_smoothing) < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    return label_smoothing


def _refuse(loss_name: str, why: str, **keywords) -> None:
    """A ValueError naming the first keyword given that ``loss_name`` cannot honour."""
    for name, value in keywords.items():
        if value is not None and value is not False:
            raise ValueError(f"{name} is not available for {loss_name}: {why}")


def _result(loss_and_log_z, return_log_normalizer: bool):
    loss, log_z = loss_and_log_z
    return (loss, log_z) if return_log_normalizer else loss


def _blocked_loss(log_score, hidden, weights, labels, bias, where, *, class_where,
                  logit_soft_cap, log_normalizer_penalty, return_log_normalizer, label_smoothing,
                  block_size, axis_name):
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive Python int, got {block_size!r}")
    arrays = _arrays(hidden, weights, labels, bias, where, class_where)
    hyperparameters = dict(logit_soft_cap=_soft_cap(logit_soft_cap),
                           label_smoothing=_label_smoothing(label_smoothing),
                           log_normalizer_penalty=log_normalizer_penalty)
    hyperparameters = {k: v for k, v in hyperparameters.items() if v is not None}
    core = functools.partial(_blocked_core, log_score, block_size)
    return _result(_sharded(core, arrays, hyperparameters, axis_name), return_log_normalizer)


def _statistics_loss(name, loss: _StatisticsLoss, hidden, weights, labels, bias, where, *,
                     class_where, logit_soft_cap, log_normalizer_penalty, return_log_normalizer,
                     label_smoothing, axis_name, **member):
    _refuse(name, "it is computed from the statistics s and q, which capped logits and the "
            "mean log-score of label smoothing do not reduce to",
            logit_soft_cap=logit_soft_cap, label_smoothing=label_smoothing)
    if loss.log_normalizer is None:
        _refuse(name, "it has no normalizer Z", log_normalizer_penalty=log_normalizer_penalty,
                return_log_normalizer=return_log_normalizer)
    arrays = _arrays(hidden, weights, labels, bias, where, class_where)
    hyperparameters = dict(member=member)
    if log_normalizer_penalty is not None:
        hyperparameters["log_normalizer_penalty"] = log_normalizer_penalty
    core = functools.partial(_statistics_core, loss)
    return _result(_sharded(core, arrays, hyperparameters, axis_name), return_log_normalizer)


def linear_softmax_cross_entropy_with_integer_labels(
    hidden: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    bias: Optional[jax.typing.ArrayLike] = None,
    where: Optional[jax.typing.ArrayLike] = None,
    *,
    class_where: Optional[jax.typing.ArrayLike] = None,
    logit_soft_cap: Optional[jax.typing.ArrayLike] = None,
    log_normalizer_penalty: Optional[jax.typing.ArrayLike] = None,
    return_log_normalizer: bool = False,
    label_smoothing: Optional[jax.typing.ArrayLike] = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    axis_name: AxisName = None,
) -> Union[jax.Array, tuple[jax.Array, jax.Array]]:
    """``softmax_cross_entropy_with_integer_labels(hidden @ weights + bias, labels)`` without
    the logits: ``logsumexp(o) - o_c``, the log-sum taken over blocks of ``block_size`` classes.

    Communication per device and step when sharded (module notes), with ``n`` examples and
    ``v`` classes on the device and ``B`` bytes per number of the compute dtype: all-reduces
    over the vocabulary axes of ``3 n B`` bytes forward (``4 n B`` with ``label_smoothing``,
    ``4 n`` more with ``class_where``) and ``n d`` numbers of ``hidden``'s gradient; over the
    example axes, of the ``(d + 1) v`` numbers of the kernel's and the bias's gradients.

    Args:
      hidden: the output layer's inputs, shape ``(..., d)``.
      weights: its kernel, shape ``(d, V)`` (a ``Dense`` kernel; a tied ``(V, d)`` embedding
        passes as ``embedding.T``).
      labels: integer classes, shape ``(...)``; one outside ``[0, V)`` gives NaN.
      bias: optional, shape ``(V,)``.
      where: optional boolean, shape ``(...)``: examples where False get loss 0 and no gradient.
      class_where: optional boolean, shape ``(V,)``: the classes that exist (vocabulary
        padding); the others get probability 0 and no gradient; a label naming one gives +inf.
      log_normalizer_penalty: optional ``w``: adds ``w (log Z)^2`` per example.
      return_log_normalizer: if True, return ``(loss, log_z)``, ``log_z`` per example.
      logit_soft_cap: optional ``c > 0``: logits become ``c tanh(o / c)`` (``c`` gets no
        gradient).
      label_smoothing: optional ``alpha`` in [0, 1): the cross-entropy against
        ``(1 - alpha) onehot(c) + alpha / D``, ``D`` the number of included classes.
      block_size: classes per block; at most (N, block_size) logits exist at once.
      axis_name: the mesh axis or axes over which the classes are sharded: inside
        ``shard_map`` (the arrays are then this device's shards), or under ``jit`` on a mesh
        of ``Auto`` axes; on a mesh of explicit axes the inputs' types tell.

    Returns:
      The loss per example, shape ``(...)``, in ``hidden``'s dtype; with
      ``return_log_normalizer``, ``(loss, log_z)``, ``log_z`` of the same shape and dtype
      (0 where ``where`` is False).

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> h, w = jnp.array([[1.0, 2.0]]), jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
      >>> loss = softfam.linear_softmax_cross_entropy_with_integer_labels(h, w, jnp.array([1]))
      >>> print(loss.round(6))  # o = [1, 2, 0]: log(e + e^2 + 1) - 2
      [0.407606]
    """
    return _blocked_loss(
        _family.SOFTMAX.log_score, hidden, weights, labels, bias, where, class_where=class_where,
        logit_soft_cap=logit_soft_cap, log_normalizer_penalty=log_normalizer_penalty,
        return_log_normalizer=return_log_normalizer, label_smoothing=label_smoothing,
        block_size=block_size, axis_name=axis_name)


def linear_taylor_softmax_cross_entropy_with_integer_labels(
    hidden: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    bias: Optional[jax.typing.ArrayLike] = None,
    where: Optional[jax.typing.ArrayLike] = None,
    *,
    order: int = 2,
    class_where: Optional[jax.typing.ArrayLike] = None,
    logit_soft_cap: Optional[jax.typing.ArrayLike] = None,
    log_normalizer_penalty: Optional[jax.typing.ArrayLike] = None,
    return_log_normalizer: bool = False,
    label_smoothing: Optional[jax.typing.ArrayLike] = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    axis_name: AxisName = None,
) -> Union[jax.Array, tuple[jax.Array, jax.Array]]:
    """``taylor_softmax_cross_entropy_with_integer_labels(hidden @ weights + bias, labels)``
    without the logits. Order 2 is of the spherical family, computed exactly from the
    statistics in O((N + V) d^2): ``log(D + s + q/2) - log T_2(o_c)``; higher orders over
    blocks of ``block_size`` classes.

    Communication per device and step when sharded (module notes), with ``n`` examples and
    ``v`` classes on the device and ``B`` bytes per number of the compute dtype: all-reduces
    over the vocabulary axes of ``3 n B`` bytes forward (order > 2: ``4 n B`` with
    ``label_smoothing``; ``4 n`` more with ``class_where``) and ``n d`` numbers of
    ``hidden``'s gradient; over the example axes, of the ``(d + 1) v`` numbers of the
    kernel's and the bias's gradients.

    Args:
      hidden: the output layer's inputs, shape ``(..., d)``.
      weights: its kernel, shape ``(d, V)`` (a ``Dense`` kernel; a tied ``(V, d)`` embedding
        passes as ``embedding.T``).
      labels: integer classes, shape ``(...)``; one outside ``[0, V)`` gives NaN.
      bias: optional, shape ``(V,)``.
      where: optional boolean, shape ``(...)``: examples where False get loss 0 and no gradient.
      order: even, >= 2. Order 2 is computed from the statistics and refuses
        ``logit_soft_cap`` and ``label_smoothing``.
      class_where: optional boolean, shape ``(V,)``: the classes that exist (vocabulary
        padding); the others get probability 0 and no gradient; a label naming one gives +inf.
      log_normalizer_penalty: optional ``w``: adds ``w (log Z)^2`` per example.
      return_log_normalizer: if True, return ``(loss, log_z)``, ``log_z`` per example.
      logit_soft_cap: optional ``c > 0``: logits become ``c tanh(o / c)`` (``c`` gets no
        gradient).
      label_smoothing: optional ``alpha`` in [0, 1): the cross-entropy against
        ``(1 - alpha) onehot(c) + alpha / D``, ``D`` the number of included classes.
      block_size: classes per block; at most (N, block_size) logits exist at once.
      axis_name: the mesh axis or axes over which the classes are sharded: inside
        ``shard_map`` (the arrays are then this device's shards), or under ``jit`` on a mesh
        of ``Auto`` axes; on a mesh of explicit axes the inputs' types tell.

    Returns:
      The loss per example, shape ``(...)``, in ``hidden``'s dtype; with
      ``return_log_normalizer``, ``(loss, log_z)``, ``log_z`` of the same shape and dtype
      (0 where ``where`` is False).

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> h, w = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0], [1.0, 1.0]])
      >>> # o = [0, 1]: T_2 = [1, 2.5], p_1 = 2.5 / 3.5
      >>> print(softfam.linear_taylor_softmax_cross_entropy_with_integer_labels(
      ...     h, w, jnp.array([1])))
      [0.33647227]
    """
    keywords = dict(class_where=class_where, logit_soft_cap=logit_soft_cap,
                    log_normalizer_penalty=log_normalizer_penalty,
                    return_log_normalizer=return_log_normalizer, label_smoothing=label_smoothing,
                    axis_name=axis_name)
    if _validation.taylor_order(order) == 2:
        return _statistics_loss(
            "the Taylor softmax of order 2",
            _StatisticsLoss(_spherical.taylor_softmax_cross_entropy_from_statistics,
                            _spherical.taylor_log_normalizer),
            hidden, weights, labels, bias, where, **keywords)
    return _blocked_loss(_family.taylor(order).log_score, hidden, weights, labels, bias, where,
                         block_size=block_size, **keywords)


def linear_spherical_softmax_cross_entropy_with_integer_labels(
    hidden: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    bias: Optional[jax.typing.ArrayLike] = None,
    where: Optional[jax.typing.ArrayLike] = None,
    *,
    epsilon: jax.typing.ArrayLike = _family.DEFAULT_EPSILON,
    class_where: Optional[jax.typing.ArrayLike] = None,
    logit_soft_cap: Optional[jax.typing.ArrayLike] = None,
    log_normalizer_penalty: Optional[jax.typing.ArrayLike] = None,
    return_log_normalizer: bool = False,
    label_smoothing: Optional[jax.typing.ArrayLike] = None,
    axis_name: AxisName = None,
) -> Union[jax.Array, tuple[jax.Array, jax.Array]]:
    """``spherical_softmax_cross_entropy_with_integer_labels(hidden @ weights + bias, labels)``
    exactly from the statistics, in O((N + V) d^2): ``log(q + D eps) - log(o_c^2 + eps)``.
    ``logit_soft_cap`` and ``label_smoothing`` are refused: see the module's notes.

    Communication per device and step when sharded (module notes), with ``n`` examples and
    ``v`` classes on the device and ``B`` bytes per number of the compute dtype: all-reduces
    over the vocabulary axes of ``2 n B`` bytes forward (``q`` and ``o_c``; ``4 n`` more with
    ``class_where``) and ``n d`` numbers of ``hidden``'s gradient; over the example axes, of
    the ``(d + 1) v`` numbers of the kernel's and the bias's gradients.

    Args:
      hidden: the output layer's inputs, shape ``(..., d)``.
      weights: its kernel, shape ``(d, V)`` (a ``Dense`` kernel; a tied ``(V, d)`` embedding
        passes as ``embedding.T``).
      labels: integer classes, shape ``(...)``; one outside ``[0, V)`` gives NaN.
      bias: optional, shape ``(V,)``.
      where: optional boolean, shape ``(...)``: examples where False get loss 0 and no gradient.
      epsilon: ``eps > 0``.
      class_where: optional boolean, shape ``(V,)``: the classes that exist (vocabulary
        padding); the others get probability 0 and no gradient; a label naming one gives +inf.
      log_normalizer_penalty: optional ``w``: adds ``w (log Z)^2`` per example.
      return_log_normalizer: if True, return ``(loss, log_z)``, ``log_z`` per example.
      axis_name: the mesh axis or axes over which the classes are sharded: inside
        ``shard_map`` (the arrays are then this device's shards), or under ``jit`` on a mesh
        of ``Auto`` axes; on a mesh of explicit axes the inputs' types tell.

    Returns:
      The loss per example, shape ``(...)``, in ``hidden``'s dtype; with
      ``return_log_normalizer``, ``(loss, log_z)``, ``log_z`` of the same shape and dtype
      (0 where ``where`` is False).

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> h, w = jnp.array([[1.0]]), jnp.array([[3.0, 4.0]])
      >>> print(softfam.linear_spherical_softmax_cross_entropy_with_integer_labels(
      ...     h, w, jnp.array([1]), epsilon=1e-6))  # p = 16 / 25
      [0.44628716]
    """
    return _statistics_loss(
        "the spherical softmax",
        _StatisticsLoss(_spherical.spherical_softmax_cross_entropy_from_statistics,
                        _spherical_log_normalizer),
        hidden, weights, labels, bias, where, class_where=class_where,
        logit_soft_cap=logit_soft_cap, log_normalizer_penalty=log_normalizer_penalty,
        return_log_normalizer=return_log_normalizer, label_smoothing=label_smoothing,
        axis_name=axis_name, epsilon=epsilon)


def linear_squared_error_with_integer_labels(
    hidden: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    bias: Optional[jax.typing.ArrayLike] = None,
    where: Optional[jax.typing.ArrayLike] = None,
    *,
    class_where: Optional[jax.typing.ArrayLike] = None,
    logit_soft_cap: Optional[jax.typing.ArrayLike] = None,
    log_normalizer_penalty: Optional[jax.typing.ArrayLike] = None,
    return_log_normalizer: bool = False,
    label_smoothing: Optional[jax.typing.ArrayLike] = None,
    axis_name: AxisName = None,
) -> jax.Array:
    """``squared_error_with_integer_labels(hidden @ weights + bias, labels)`` exactly from the
    statistics, in O((N + V) d^2): ``q - 2 o_c + 1``. It has no normalizer:
    ``log_normalizer_penalty``, ``return_log_normalizer``, ``logit_soft_cap`` and
    ``label_smoothing`` are refused.

    Communication per device and step when sharded (module notes), with ``n`` examples and
    ``v`` classes on the device and ``B`` bytes per number of the compute dtype: all-reduces
    over the vocabulary axes of ``2 n B`` bytes forward (``q`` and ``o_c``; ``4 n`` more with
    ``class_where``) and ``n d`` numbers of ``hidden``'s gradient; over the example axes, of
    the ``(d + 1) v`` numbers of the kernel's and the bias's gradients.

    Args:
      hidden: the output layer's inputs, shape ``(..., d)``.
      weights: its kernel, shape ``(d, V)`` (a ``Dense`` kernel; a tied ``(V, d)`` embedding
        passes as ``embedding.T``).
      labels: integer classes, shape ``(...)``; one outside ``[0, V)`` gives NaN.
      bias: optional, shape ``(V,)``.
      where: optional boolean, shape ``(...)``: examples where False get loss 0 and no gradient.
      class_where: optional boolean, shape ``(V,)``: the classes that exist (vocabulary
        padding); the others get probability 0 and no gradient; a label naming one gives +inf.
      axis_name: the mesh axis or axes over which the classes are sharded: inside
        ``shard_map`` (the arrays are then this device's shards), or under ``jit`` on a mesh
        of ``Auto`` axes; on a mesh of explicit axes the inputs' types tell.

    Returns:
      The loss per example, shape ``(...)``, in ``hidden``'s dtype.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> h, w = jnp.array([[1.0]]), jnp.array([[0.5, 2.0]])
      >>> print(softfam.linear_squared_error_with_integer_labels(h, w, jnp.array([0])))
      [4.25]
    """
    return _statistics_loss(
        "the squared error", _StatisticsLoss(_spherical.squared_error_from_statistics, None),
        hidden, weights, labels, bias, where, class_where=class_where,
        logit_soft_cap=logit_soft_cap, log_normalizer_penalty=log_normalizer_penalty,
        return_log_normalizer=return_log_normalizer, label_smoothing=label_smoothing,
        axis_name=axis_name)


def linear_z_loss_with_integer_labels(
    hidden: jax.typing.ArrayLike,
    weights: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    bias: Optional[jax.typing.ArrayLike] = None,
    where: Optional[jax.typing.ArrayLike] = None,
    *,
    a: jax.typing.ArrayLike = 1.0,
    b: jax.typing.ArrayLike = 2.0,
    class_where: Optional[jax.typing.ArrayLike] = None,
    logit_soft_cap: Optional[jax.typing.ArrayLike] = None,
    log_normalizer_penalty: Optional[jax.typing.ArrayLike] = None,
    return_log_normalizer: bool = False,
    label_smoothing: Optional[jax.typing.ArrayLike] = None,
    axis_name: AxisName = None,
) -> jax.Array:
    """``z_loss_with_integer_labels(hidden @ weights + bias, labels)`` exactly from the
    statistics, in O((N + V) d^2). It has no normalizer: ``log_normalizer_penalty``,
    ``return_log_normalizer``, ``logit_soft_cap`` and ``label_smoothing`` are refused.

    Communication per device and step when sharded (module notes), with ``n`` examples and
    ``v`` classes on the device and ``B`` bytes per number of the compute dtype: all-reduces
    over the vocabulary axes of ``3 n B`` bytes forward (``s``, ``q`` and ``o_c``; ``4 n``
    more with ``class_where``) and ``n d`` numbers of ``hidden``'s gradient; over the example
    axes, of the ``(d + 1) v`` numbers of the kernel's and the bias's gradients.

    Args:
      hidden: the output layer's inputs, shape ``(..., d)``.
      weights: its kernel, shape ``(d, V)`` (a ``Dense`` kernel; a tied ``(V, d)`` embedding
        passes as ``embedding.T``).
      labels: integer classes, shape ``(...)``; one outside ``[0, V)`` gives NaN.
      bias: optional, shape ``(V,)``.
      where: optional boolean, shape ``(...)``: examples where False get loss 0 and no gradient.
      a: sharpness ``a > 0`` of the softplus, as in ``z_loss_from_statistics``.
      b: the standardized score ``z_c`` beyond which the loss fades, as there.
      class_where: optional boolean, shape ``(V,)``: the classes that exist (vocabulary
        padding); the others get probability 0 and no gradient; a label naming one gives +inf.
      axis_name: the mesh axis or axes over which the classes are sharded: inside
        ``shard_map`` (the arrays are then this device's shards), or under ``jit`` on a mesh
        of ``Auto`` axes; on a mesh of explicit axes the inputs' types tell.

    Returns:
      The loss per example, shape ``(...)``, in ``hidden``'s dtype.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> h, w = jnp.array([[1.0]]), jnp.array([[-1.0, 1.0]])
      >>> print(softfam.linear_z_loss_with_integer_labels(h, w, jnp.array([1])).round(6))
      [1.313262]
    """
    return _statistics_loss(
        "the Z-loss", _StatisticsLoss(_spherical.z_loss_from_statistics, None),
        hidden, weights, labels, bias, where, class_where=class_where,
        logit_soft_cap=logit_soft_cap, log_normalizer_penalty=log_normalizer_penalty,
        return_log_normalizer=return_log_normalizer, label_smoothing=label_smoothing,
        axis_name=axis_name, a=a, b=b)
