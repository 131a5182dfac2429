"""The normalizer family ``p_i = f(x_i) / sum_j f(x_j)``, written once.

A member (``Member``) is its log-score ``log f`` and its score ``f > 0``, each a function of
the logits and of the member's hyperparameters (traced arrays, so that ``jit``, ``vmap`` and
``grad`` see them like any other argument). Everything else is shared and written here once:
the log-partition ``log Z = log sum_j f(x_j)``, the probabilities ``f(x_i) / Z``, the
log-probabilities ``log f(x_i) - log Z``, their derivatives, masking, excluded classes, axis
handling, the dtype policy and the negative log-likelihood ``log Z - log f(x_c)``.

Two ways to the same numbers. The log-space way, ``log Z = m + log sum_j exp(log f(x_j) - m)``
with ``m = max_j log f(x_j)``, is exact for any finite logits; for softmax, whose log-score is
``x`` itself, it is the usual algorithm, and softmax takes it always. For a member with a
score that is cheaper than ``exp(log f)`` and bounded below (the polynomials) the direct way
sums the scores, ``S = sum_j f(x_j)``, and divides by it, or subtracts ``log S`` from
``log f(x_i)``: two passes over the logits and no transcendental function for the
probabilities. It is exact when ``0 < S < max float`` in every slice: no score overflowed.
Otherwise (huge logits, a -inf whose score is +inf, a NaN, a fully excluded slice: all rare)
the whole batch takes the log-space way. One scalar ``lax.cond`` picks (``_normalized``).

Excluded classes: ``where=False`` and a logit of -inf both exclude a class, with probability
exactly 0 and an exactly zero gradient. The direct way masks only ``where``: a polynomial's
score at -inf is +inf, so ``S = inf`` sends the batch the log-space way, which masks both.
Softmax's ``log f(-inf) = -inf`` needs no mask. Derivatives are taken at logits with 0 in
place of excluded entries (the "double where"). A NaN or +inf among a slice's included logits
makes that slice's outputs NaN.

Dtype policy: inputs of any floating dtype; work in at least float32; return the input dtype.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from softfam import _validation
from softfam._validation import Axis

DEFAULT_EPSILON = 0.01  # the spherical softmax's eps; spherical_softmax says why


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """The dtype sums are accumulated in: float32, or float64 for float64 inputs."""
    return jnp.dtype(jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32)


class Member(NamedTuple):
    """A normalizer of the family, ``p_i = f(x_i) / sum_j f(x_j)``.

    ``log_score(x, *hyperparameters)`` is ``log f(x)`` elementwise, accurate for every finite
    ``x`` (never the log of a score that already overflowed or underflowed).
    ``score(x, *hyperparameters)`` is ``f(x)`` itself, for a member whose ``f`` is cheaper
    than ``exp(log f)`` and bounded below by a positive normal float (the polynomials): then
    ``log(f(x))`` is exact wherever ``f(x)`` does not overflow, and the direct way uses it.
    It may overflow to +inf for huge ``|x|``; at ``x = -inf`` it is +inf. A member whose
    ``f`` is ``exp`` of its log-score gains nothing from the direct way and gives no score
    (softmax); its ``log f(-inf)`` must then be -inf.
    """

    log_score: Callable[..., jax.Array]
    score: Optional[Callable[..., jax.Array]] = None


# --- The members. ----------------------------------------------------------------------------

SOFTMAX = Member(log_score=lambda x: x)  # f = exp(x): the log-space way is softmax's own


def _taylor_score(x: jax.Array, order: int) -> jax.Array:
    """``T_n(x) = sum_{j=0..n} x^j / j!`` as ``(1/n!) sum_j (n!/j!) x^j``, by Horner's rule on
    the integer coefficients, ``((x + n) x + n(n-1)) x + ...``: one multiply and one add per
    order, the fewest operations (each is a pass over the logits to XLA:CPU's fused kernels)."""
    total = x + order
    for j in range(order - 2, -1, -1):
        total = total * x + math.factorial(order) // math.factorial(j)
    return total * (1 / math.factorial(order))


def _log_taylor_score(x: jax.Array, order: int) -> jax.Array:
    """``log T_n(x) = n log m + log(sum_j (x/m)^j m^(j-n) / j!)`` with ``m = max(|x|, 1)``.

    In the sum ``|x/m| <= 1`` and ``1/m <= 1``, so nothing overflows, and it is at least
    ``min T_n / m^n`` (about ``1/n!`` for huge ``|x|``), so nothing underflows; Horner's rule
    in ``y = x/m`` with the powers of ``b = 1/m``: ``(((y/n! + b/(n-1)!) y + b^2/(n-2)!) y ...``.
    """
    m = jnp.maximum(jnp.abs(x), 1)
    b = 1 / m
    y = x * b
    scaled, b_power = y * (1 / math.factorial(order)), b
    for j in range(order - 1, 0, -1):
        scaled = (scaled + b_power * (1 / math.factorial(j))) * y
        b_power = b_power * b
    return order * jnp.log(m) + jnp.log(scaled + b_power)


@functools.lru_cache(maxsize=None)
def taylor(order: int) -> Member:
    """Taylor softmax, ``f = T_n(x) = sum_{j=0..n} x^j / j!`` for even ``n >= 2`` (``T_n > 0``)."""
    order = _validation.taylor_order(order)
    return Member(
        log_score=functools.partial(_log_taylor_score, order=order),
        score=functools.partial(_taylor_score, order=order),
    )


def _spherical_score(x: jax.Array, epsilon: jax.Array) -> jax.Array:
    """``x^2 + eps``."""
    return x * x + epsilon


def _log_spherical_score(x: jax.Array, epsilon: jax.Array) -> jax.Array:
    """``log(x^2 + eps) = 2 log m + log((x/m)^2 + eps/m^2)`` with ``m = max(|x|, 1)``: no
    ``x^2`` that overflows."""
    m = jnp.maximum(jnp.abs(x), 1)
    y = x / m
    return 2 * jnp.log(m) + jnp.log(y * y + epsilon / (m * m))


SPHERICAL = Member(log_score=_log_spherical_score, score=_spherical_score)


# --- The shared path. ------------------------------------------------------------------------

Hyperparameters = Sequence[jax.Array]


def included(x: jax.Array, where: Optional[jax.Array]) -> jax.Array:
    """The classes not excluded by ``where=False`` or a logit of -inf (a NaN is included, so
    that it poisons its slice)."""
    kept = x != -jnp.inf
    return kept if where is None else kept & where


def _masked(values: jax.Array, mask: Optional[jax.Array], fill=0) -> jax.Array:
    return values if mask is None else jnp.where(mask, values, fill)


def _sum(values: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """``sum(values, axes, keepdims=True)``; on CPU as the product with a vector of ones.

    XLA:CPU hands a sum whose operand is computed by arithmetic (the scores, ``p d log f``)
    to a YNNPACK fusion that is slow for it: at (256, 100000) in float32, 55 ms for the sum of
    ``x + 2`` against 3.8 ms for that of ``x * x``, which it sums plainly, and 125 ms for the
    sum of ``T_4(x)``. As a matrix-vector product the operand is computed by XLA's own loop
    fusion and the sum of ``T_4(x)`` takes 34 ms (2026-12-07, 2 cores, jax 0.10.2). Other
    platforms sum, and so does the log-space way, whose ``exp`` that fusion runs as fast as
    ``jax.nn``'s.
    """
    def product(values):
        ones = jnp.ones([values.shape[a] for a in axes], values.dtype)
        total = jnp.tensordot(values, ones, (axes, tuple(range(len(axes)))),
                              precision=lax.Precision.HIGHEST)
        return jnp.expand_dims(total, axes)

    return lax.platform_dependent(values, cpu=product,
                                  default=lambda values: jnp.sum(values, axes, keepdims=True))


class _Normalized(NamedTuple):
    """A batch normalized: ``log Z`` (size 1 on the class axes), ``p_i`` and ``log p_i`` (0
    and -inf where excluded) and, when asked for, the elementwise derivatives of ``log f``:
    ``d log f_i / dx_i`` and ``d log f_i / d theta`` for each (scalar) hyperparameter. Every
    output's derivative is formed from ``p`` and these, outside the branch that made them:
    ``d log Z = sum_j p_j d log f_j``, ``dp_i = p_i (d log f_i - d log Z)``,
    ``d log p_i = d log f_i - d log Z``."""

    log_partition: jax.Array
    probabilities: jax.Array
    log_probabilities: jax.Array
    dlog_f_dx: Optional[jax.Array] = None
    dlog_f_dparams: tuple = ()


def _derivatives(fn, x, params):
    """``fn(x, *params)`` and its elementwise derivatives in ``x`` and in each scalar
    hyperparameter, by forward mode."""
    value, d_dx = jax.jvp(lambda x: fn(x, *params), (x,), (jnp.ones_like(x),))
    d_dparams = tuple(
        jax.jvp(lambda t, k=k: fn(x, *params[:k], t, *params[k + 1:]), (p,), (jnp.ones_like(p),))[1]
        for k, p in enumerate(params)
    )
    return value, d_dx, d_dparams


def _log_space_mask(member, x, where):
    """What the log-space way masks: ``where`` and, for a member with a score, the -inf
    logits (a member without one has ``log f(-inf) = -inf`` itself)."""
    return where if member.score is None else included(x, where)


def _log_space(member, x, where, params, axes, derivatives: bool) -> _Normalized:
    """The log-space way, exact for any finite logits.

    ``log f`` is evaluated at 0 where masked (``_log_space_mask``) and is -inf there. The shift
    ``m = max log f`` is gradient-free and at least the lowest finite float, and ``Z / e^m`` at
    least the smallest normal one, so that a fully excluded slice gets probabilities 0 (and
    ``log Z = 0``, the only slice with ``Z / e^m < 1``); a NaN or +inf makes ``m`` NaN or
    +inf, and its slice NaN. Only ``max``, no select, guards them, so that for softmax the way
    fuses into as few kernels as ``jax.nn.softmax``.
    """
    keep = _log_space_mask(member, x, where)
    safe = _masked(x, keep)
    if derivatives:
        log_f, dlog_f_dx, dlog_f_dparams = _derivatives(member.log_score, safe, params)
    else:
        log_f, dlog_f_dx, dlog_f_dparams = member.log_score(safe, *params), None, ()
    log_f = _masked(log_f, keep, -jnp.inf)
    finfo = jnp.finfo(log_f.dtype)
    top = jnp.maximum(lax.stop_gradient(jnp.max(log_f, axes, keepdims=True)), finfo.min)
    shifted = log_f - top
    total = jnp.maximum(jnp.sum(jnp.exp(shifted), axes, keepdims=True), finfo.tiny)
    log_z = jnp.where(total < 1, 0, top + jnp.log(total))
    return _Normalized(log_z, jnp.exp(shifted) / total, shifted - jnp.log(total), dlog_f_dx,
                       dlog_f_dparams)


def _direct(member, total, x, where, params, derivatives: bool) -> _Normalized:
    """The direct way: ``p = f / S``, ``log p = log f - log S``, ``d log f = df / f``."""
    safe = _masked(x, where)
    if derivatives:
        f, df_dx, df_dparams = _derivatives(member.score, safe, params)
        dlog_f_dx, dlog_f_dparams = df_dx / f, tuple(d / f for d in df_dparams)
    else:
        f, dlog_f_dx, dlog_f_dparams = member.score(safe, *params), None, ()
    log_total = jnp.log(total)
    return _Normalized(log_total, _masked(f, where) * (1 / total),
                       _masked(jnp.log(f), where, -jnp.inf) - log_total,
                       dlog_f_dx, dlog_f_dparams)


def _normalized(member, axes, x, where, params, fields: Callable, derivatives: bool = False):
    """``fields(the batch normalized)``: by the direct way if the member has a score and
    ``0 < S < max float`` in every slice, else by the log-space way.

    The predicate counts the slices whose ``S`` is not in ``(0, max float)`` (a NaN is not),
    by ``_sum`` (on CPU about 30 µs a call cheaper than a min reduction at (4096, 10)), and
    ``S`` is formed outside the branch. Each way runs only inside its branch, and only the
    arrays that ``fields`` picks leave it, as values (not as functions of the tangents): the
    fewer arrays a branch returns, the less XLA writes out and reads back. This is the
    family's one data-dependent branch.
    """
    if member.score is None:
        return fields(_log_space(member, x, where, params, axes, derivatives))
    total = _sum(_masked(member.score(x, *params), where), axes)
    out_of_range = ~((total > 0) & (total < jnp.finfo(total.dtype).max))
    return lax.cond(
        _sum(out_of_range.astype(total.dtype), tuple(range(total.ndim))).squeeze() == 0,
        lambda total, x, where, params: fields(
            _direct(member, total, x, where, params, derivatives)),
        lambda _, x, where, params: fields(
            _log_space(member, x, where, params, axes, derivatives)),
        total, x, where, params,
    )


def _score_tangent(weights, dx, dparams):
    """``sum_k w_k . d_k``: a tangent from the elementwise derivatives ``weights`` (for ``x``,
    then each hyperparameter) and the tangents ``dx`` and ``dparams``."""
    d_dx, d_dparams = weights
    total = d_dx * dx
    for d_dparam, dparam in zip(d_dparams, dparams):
        total = total + d_dparam * dparam
    return total


def _output(value: Callable, extras: Callable, tangent: Callable):
    """One output of the family, ``value(normalized)``, with its derivative written out
    (``custom_jvp``) from ``p_i d log f_i`` (``dscore``), ``d log Z`` and
    ``extras(normalized)``: ``tangent(value, extras, dscore, d log Z, primals, tangents)``."""

    @functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
    def output(member: Member, axes, x, where, params) -> jax.Array:
        return _normalized(member, axes, x, where, params, value)

    @output.defjvp
    def output_jvp(member, axes, primals, tangents):
        (x, where, params), (dx, _, dparams) = primals, tangents

        def fields(n):  # p_i d log f_i / d theta is df_i / d theta / Z
            weights = (n.probabilities * n.dlog_f_dx,
                       tuple(n.probabilities * d for d in n.dlog_f_dparams))
            return value(n), weights, extras(n)

        primal, weights, extra = _normalized(member, axes, x, where, params, fields,
                                             derivatives=True)
        dscore = _score_tangent(weights, dx, dparams)
        dlog_z = _sum(dscore, axes)
        return primal, tangent(primal, extra, dscore, dlog_z, primals, tangents)

    return output


# d log Z = sum_i p_i d log f_i; dp_i = p_i d log f_i - p_i d log Z; d log p_i = d log f_i -
# d log Z, 0 where excluded.
_log_partition = _output(lambda n: n.log_partition, lambda n: (),
                         lambda value, extra, dscore, dlog_z, *_: dlog_z)
_probabilities = _output(lambda n: n.probabilities, lambda n: (),
                         lambda p, extra, dscore, dlog_z, *_: dscore - p * dlog_z)


def _log_probabilities_tangent(value, dlog_f_weights, dscore, dlog_z, primals, tangents):
    (x, where, _), (dx, _, dparams) = primals, tangents
    return _masked(_score_tangent(dlog_f_weights, dx, dparams) - dlog_z, included(x, where))


_log_probabilities = _output(lambda n: n.log_probabilities,
                             lambda n: (n.dlog_f_dx, n.dlog_f_dparams),
                             _log_probabilities_tangent)


def log_partition(
    member: Member, x: jax.Array, where: Optional[jax.Array], axes: tuple[int, ...],
    params: Hyperparameters = (),
) -> jax.Array:
    """``log Z = log sum_j f(x_j)`` over ``axes`` (kept as size 1); 0 for a fully excluded slice.

    ``x`` is in the compute dtype. Its derivative ``df_i / Z`` is written out (``custom_jvp``),
    so that reverse mode stores nothing of the size of ``x`` but ``x`` itself.
    """
    return _log_partition(member, axes, x, where, tuple(params))


def _in_dtype(params: Hyperparameters, dtype) -> tuple[jax.Array, ...]:
    """The hyperparameters as arrays of the compute dtype (traced values stay traced)."""
    return tuple(jnp.asarray(p, dtype) for p in params)


def _normalizer_arguments(x: jax.typing.ArrayLike, axis: Axis, where, params):
    """Checks a normalizer's arguments: the logits and the hyperparameters in the compute
    dtype, where, the axes and the output dtype."""
    x = _validation.floating_array("x", x)
    axes = _validation.canonical_axes(axis, x.ndim)
    where = None if where is None else _validation.boolean_mask(where, x.shape)
    dtype = compute_dtype(x.dtype)
    return x.astype(dtype), where, _in_dtype(params, dtype), axes, x.dtype


def probabilities(
    member: Member, x: jax.typing.ArrayLike, axis: Axis, where, params: Hyperparameters = ()
) -> jax.Array:
    """``p_i = f(x_i) / sum_j f(x_j)``; exactly 0 where excluded."""
    x, where, params, axes, dtype = _normalizer_arguments(x, axis, where, params)
    return _probabilities(member, axes, x, where, params).astype(dtype)


def log_probabilities(
    member: Member, x: jax.typing.ArrayLike, axis: Axis, where, params: Hyperparameters = ()
) -> jax.Array:
    """``log p_i = log f(x_i) - log sum_j f(x_j)``; -inf where excluded."""
    x, where, params, axes, dtype = _normalizer_arguments(x, axis, where, params)
    return _log_probabilities(member, axes, x, where, params).astype(dtype)


def cross_entropy(
    member: Member,
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: Axis,
    where,
    params: Hyperparameters = (),
) -> jax.Array:
    """``-sum_i y_i log p_i`` over the included classes, for probability (or one-hot) labels.

    ``0 log 0 = 0``: a zero label at an excluded class adds 0; positive mass on a class
    excluded by a -inf logit gives +inf. Entries with ``where=False`` are left out of the sum,
    labels included (as optax).
    """
    logits = _validation.floating_array("logits", logits)
    labels = _validation.floating_array("labels (probabilities)", labels)
    if labels.shape != logits.shape:
        raise ValueError(
            f"labels of shape {labels.shape} must have the logits' shape {logits.shape}"
        )
    axes = _validation.canonical_axes(axis, logits.ndim)
    where = class_mask(where, logits.shape, axes)
    dtype = compute_dtype(logits.dtype)
    x = logits.astype(dtype)
    labels = _masked(labels.astype(dtype), where)
    log_probs = _log_probabilities(member, axes, x, where, _in_dtype(params, dtype))
    log_probs = jnp.where((log_probs == -jnp.inf) & (labels == 0), 0, log_probs)  # 0 log 0 = 0
    return -jnp.sum(labels * log_probs, axes).astype(logits.dtype)


def class_mask(
    where: Optional[jax.typing.ArrayLike], shape: tuple[int, ...], axes: tuple[int, ...]
) -> Optional[jax.Array]:
    """The boolean mask over the logits: ``where`` of the logits' shape, or per example."""
    if where is None:
        return None
    if jnp.ndim(where) == len(shape) - len(axes):
        where = jnp.expand_dims(where, axes)
    return _validation.boolean_mask(where, shape)


# --- Integer labels. -------------------------------------------------------------------------


class IntegerLabelBatch(NamedTuple):
    """Logits with their class axes flattened last, and what is known about the labels."""

    logits: jax.Array  # (..., D), in the compute dtype
    where: Optional[jax.Array]  # (..., D) or None
    labels: jax.Array  # (...), a valid class index everywhere (0 where the label is invalid)
    label_is_valid: jax.Array  # (...): label in [0, D) and its class not masked by ``where``
    target_is_excluded: jax.Array  # (...): the target's logit is -inf (probability 0)
    is_empty: jax.Array  # (...): every class excluded
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
    where = class_mask(where, logits.shape, axes)

    def classes_last(array):
        return array.transpose(batch_axes + axes).reshape(batch_shape + (num_classes,))

    x = classes_last(logits).astype(compute_dtype(logits.dtype))
    label_is_valid = (labels >= 0) & (labels < num_classes)
    safe_labels = jnp.where(label_is_valid, labels, 0)
    if where is not None:
        where = classes_last(where)
        label_is_valid &= take_target(where, safe_labels)
    target_is_excluded = take_target(x, safe_labels) == -jnp.inf  # where=False: not valid
    # A max, not any(included): no boolean array of the logits' size is formed.
    is_empty = jnp.max(x, -1, where=where, initial=-jnp.inf) == -jnp.inf
    return IntegerLabelBatch(
        x, where, safe_labels, label_is_valid, target_is_excluded, is_empty, logits.dtype
    )


def take_target(values: jax.Array, labels: jax.Array) -> jax.Array:
    """``values[..., labels]`` by ``take_along_axis`` on the last axis (no one-hot array)."""
    return jnp.take_along_axis(values, labels[..., None], axis=-1)[..., 0]


def target_logit(batch: IntegerLabelBatch) -> jax.Array:
    """The target's logit, 0 where its class is excluded (the loss says +inf or NaN there)."""
    target = take_target(batch.logits, batch.labels)
    return jnp.where(batch.label_is_valid & ~batch.target_is_excluded, target, 0)


def finish_integer_label_loss(loss: jax.Array, batch: IntegerLabelBatch) -> jax.Array:
    """+inf where the target is excluded by a -inf logit, NaN for an invalid label, exactly 0
    for a fully excluded example; in the input dtype."""
    loss = jnp.where(batch.target_is_excluded, jnp.inf, loss)
    loss = jnp.where(batch.label_is_valid, loss, jnp.nan)
    loss = jnp.where(batch.is_empty, 0, loss)
    return loss.astype(batch.out_dtype)


def soft_capped(x: jax.Array, cap: jax.typing.ArrayLike) -> jax.Array:
    """``cap tanh(x / cap)`` with the cap held constant (no gradient to it); an infinite logit
    stays as it is, so that a class excluded by -inf stays excluded after capping."""
    cap = jax.lax.stop_gradient(jnp.asarray(cap, x.dtype))
    return jnp.where(jnp.isinf(x), x, cap * jnp.tanh(x / cap))


def integer_label_nll(
    member: Member,
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: Axis,
    where,
    params: Hyperparameters = (),
    margin: Optional[jax.typing.ArrayLike] = None,
    *,
    logit_soft_cap: Optional[jax.typing.ArrayLike] = None,
    log_normalizer_penalty: Optional[jax.typing.ArrayLike] = None,
    return_log_normalizer: bool = False,
):
    """``log sum_j f(x_j) - log f(x_c)``, with ``x_c - margin`` in place of ``x_c`` if given;
    the logits soft-capped first (``soft_capped``) and ``w (log Z)^2`` added for a penalty
    ``w``; with ``return_log_normalizer``, ``(loss, log Z)``, ``log Z`` 0 for an empty
    example."""
    batch = integer_label_batch(logits, labels, axis, where)
    if logit_soft_cap is not None:
        batch = batch._replace(logits=soft_capped(batch.logits, logit_soft_cap))
    x = batch.logits
    params = _in_dtype(params, x.dtype)
    log_z = log_partition(member, x, batch.where, (x.ndim - 1,), params)[..., 0]
    target = target_logit(batch)
    target_log_score = member.log_score(target, *params)
    if margin is not None:
        # f(x_c - m) in place of f(x_c): the normalizer becomes Z (1 - p_c + p_cm).
        margin_log_score = member.log_score(target - jnp.asarray(margin, x.dtype), *params)
        # Where the target is excluded (f = 0) or its label invalid, Z stays as it is.
        others = jnp.maximum(1 - jnp.exp(target_log_score - log_z), 0)
        log_z = jnp.where(batch.label_is_valid & ~batch.target_is_excluded,
                          log_z + jnp.log(others + jnp.exp(margin_log_score - log_z)), log_z)
        target_log_score = margin_log_score
    loss = log_z - target_log_score
    if log_normalizer_penalty is not None:
        loss = loss + jnp.asarray(log_normalizer_penalty, x.dtype) * log_z**2
    loss = finish_integer_label_loss(loss, batch)
    if not return_log_normalizer:
        return loss
    return loss, jnp.where(batch.is_empty, 0, log_z).astype(batch.out_dtype)
