"""The normalizer family ``p_i = f(x_i) / sum_j f(x_j)``, written once.

A member (``Member``) is its score ``f``: its log ``log f(x)``, stable for any finite x, and
``f(x) / C``, ``f'(x) / C`` for a per-slice scale ``C`` chosen so that nothing overflows.
Everything else is shared: the log-partition ``log Z = log sum_j f(x_j)`` and its derivative
``f'(x_i) / Z``, probabilities, log-probabilities, masking, excluded classes, axis handling,
the dtype policy, and the negative log-likelihood ``log Z - log f(x_c)``.

Excluded classes: ``where=False`` and a logit of -inf both exclude a class, with probability
exactly 0 and an exactly zero gradient. Every member's score is 0 at -inf (softmax's by
``exp(-inf) = 0``, the polynomial members' by their own mask), so the shared path masks only
``where``; functions differentiated by autodiff take logits with 0 in place of excluded
entries (the "double where"). A NaN or +inf among a slice's included logits makes that
slice's outputs NaN.

Dtype policy: inputs of any floating dtype; work in at least float32; return the input dtype.
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

DEFAULT_EPSILON = 0.01  # the spherical softmax's eps; spherical_softmax says why


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """The dtype sums are accumulated in: float32, or float64 for float64 inputs."""
    return jnp.dtype(jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32)


class Scaled(NamedTuple):
    """``f(x) / C``, ``f'(x) / C`` and ``log(f(x) / C)`` for a per-slice scale ``C``; ``log C``
    is gradient-free."""

    scores: jax.Array
    slopes: jax.Array
    log_scores: jax.Array  # exact even where f(x) / C underflows
    log_scale: jax.Array  # log C, kept as size 1 on the class axes


class Member(NamedTuple):
    """A normalizer of the family.

    ``scaled(x, log_c)`` gives the scores for a scale ``C`` near ``e^log_c`` (members may
    round it, and report the ``log C`` they used; given that back, they use it unchanged).
    ``log_scale(logits, axes, where)`` is the scale tried first (it may be 0: ``C = 1``);
    unless it bounds every score, ``fallback_log_scale(safe_logits, axes)`` does, and is used
    for the slices whose sum of scores is not finite with the first.
    """

    log_score: Callable[[jax.Array], jax.Array]  # log f(x) elementwise; -inf at x = -inf
    scaled: Callable[[jax.Array, jax.Array], Scaled]
    log_scale: Callable[[jax.Array, tuple[int, ...], Optional[jax.Array]], jax.Array]
    fallback_log_scale: Optional[Callable[[jax.Array, tuple[int, ...]], jax.Array]] = None


def _power_of_two(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gradient-free ``(k, 2^-k)``: the integer ``k >= 0`` with ``|x| 2^-k < 1`` where
    ``1 <= |x| < 2^126`` (float32; ``2^1022`` float64), ``|x| 2^-k < 4`` above, ``k = 0`` below.

    Read off the float's exponent bits: no log, and ``x 2^-k`` is exact.
    """
    int_dtype, mantissa_bits, bias = _float_layout(x.dtype)
    bits = lax.bitcast_convert_type(lax.stop_gradient(x), int_dtype)
    exponent = ((bits >> mantissa_bits) & (2 * bias + 1)) - (bias - 1)  # frexp's exponent
    k = jnp.clip(exponent, 0, bias - 1)
    return k.astype(x.dtype), _inverse_power_of_two(k, x.dtype)


def _float_layout(dtype) -> tuple[jnp.dtype, int, int]:
    """(integer dtype of the same width, mantissa bits, exponent bias) of float32 or float64."""
    return (jnp.int64, 52, 1023) if dtype == jnp.float64 else (jnp.int32, 23, 127)


def _inverse_power_of_two(k: jax.Array, dtype) -> jax.Array:
    """``2^-k`` for integers ``0 <= k < bias``, written straight into the exponent bits."""
    int_dtype, mantissa_bits, bias = _float_layout(dtype)
    return lax.bitcast_convert_type((bias - k.astype(int_dtype)) << mantissa_bits, dtype)


def _scaled_taylor_polynomial(y: jax.Array, b: jax.Array, order: int) -> jax.Array:
    """``T_n(x) b^n = sum_j y^j b^(n-j) / j!`` for ``x = y / b``, by Horner's rule in ``y``:
    ``(((y/n! + b/(n-1)!) y + b^2/(n-2)!) y + ...) y + b^n``; with ``|y| <= 4`` and ``b <= 1``
    nothing overflows."""
    scaled, b_power = y * (1 / math.factorial(order)), b
    for j in range(order - 1, 0, -1):
        scaled = (scaled + b_power * (1 / math.factorial(j))) * y
        b_power = b_power * b
    return scaled + b_power


def _slice_max(x: jax.Array, axes: tuple[int, ...], mask: Optional[jax.Array]) -> jax.Array:
    """The slice's largest included value, gradient-free; the lowest finite float for a fully
    excluded slice (so that ``x - max`` is -inf, not NaN, at its -inf entries)."""
    lowest = jnp.finfo(x.dtype).min
    return jnp.max(lax.stop_gradient(x), axes, keepdims=True, where=mask, initial=lowest)


def _zero_log_scale(x, axes, mask):
    return jnp.zeros(tuple(1 if a in axes else n for a, n in enumerate(x.shape)), x.dtype)


def is_excluded(x: jax.Array) -> jax.Array:
    """Where a logit of -inf excludes its class."""
    return x == -jnp.inf


def _power_of_two_member(degree, log_score, scaled_scores) -> Member:
    """A member whose ``f`` grows like ``|x|^degree``, scaled by ``C = 2^(degree k)``:
    ``scaled_scores(x b, b)`` is ``f(x) b^degree`` and its derivative in ``x b`` is
    ``f'(x) b^(degree - 1)``, with ``b = 2^-k``. ``log_score`` is given for finite x. At -inf
    (an excluded class, though ``f(-inf) = +inf``) the member's score and slope are 0 and its
    log-score is -inf, with a zero gradient, as softmax's are by ``exp(-inf) = 0``."""

    def excluding_log_score(x):
        excluded = is_excluded(x)
        return jnp.where(excluded, -jnp.inf, log_score(jnp.where(excluded, 0, x)))

    def scaled(x, log_c):  # score and slope 0 at -inf (double where)
        k = jnp.clip(jnp.round(log_c / (degree * math.log(2))), 0, jnp.finfo(x.dtype).maxexp - 2)
        b = lax.stop_gradient(_inverse_power_of_two(k, x.dtype))
        log_scale = (degree * math.log(2)) * k
        excluded = is_excluded(x)
        y = jnp.where(excluded, 0, x * b)
        scores, slopes = jax.jvp(lambda y: scaled_scores(y, b), (y,), (jnp.ones_like(y),))
        scores = jnp.where(excluded, 0, scores)
        # With C = 1 (k = 0, a constant on the first pass) f(x) >= min f > 0 cannot underflow,
        # and log f(x) is one log; otherwise the exact log-score.
        log_scores = jnp.where(k == 0, jnp.log(scores), excluding_log_score(x) - log_scale)
        return Scaled(scores, jnp.where(excluded, 0, slopes * b), log_scores, log_scale)

    def fallback_log_scale(x, axes):  # |x| b < 2 for every included x
        largest = jnp.max(jnp.abs(lax.stop_gradient(x)), axes, keepdims=True)
        return degree * jnp.log(jnp.maximum(largest, 1))

    return Member(excluding_log_score, scaled, _zero_log_scale, fallback_log_scale)


# --- The members. ----------------------------------------------------------------------------


def _softmax_scaled(x, log_c):
    scores = jnp.exp(x - log_c)
    return Scaled(scores, scores, x - log_c, log_c)


SOFTMAX = Member(lambda x: x, _softmax_scaled, _slice_max)  # C = e^max x: every score <= 1


def taylor(order: int) -> Member:
    """Taylor softmax, ``f = T_n(x) = sum_{j=0..n} x^j / j!`` for even ``n >= 2`` (``T_n > 0``).

    Log-score: with ``(k, b = 2^-k)`` from ``_power_of_two(x)``,
    ``log T_n(x) = n k log 2 + log(T_n(x) b^n)``: one log per element and no ``x^n`` formed.
    """
    order = _validation.taylor_order(order)

    def log_score(x):
        k, b = _power_of_two(x)
        return (order * math.log(2)) * k + jnp.log(_scaled_taylor_polynomial(x * b, b, order))

    return _power_of_two_member(
        order, log_score, lambda y, b: _scaled_taylor_polynomial(y, b, order)
    )


def spherical(epsilon: jax.typing.ArrayLike) -> Member:
    """Spherical softmax, ``f = x^2 + eps`` with ``eps > 0``: ``f(x) b^2 = (x b)^2 + eps b^2``."""
    _validation.positive("epsilon", epsilon)

    def scaled_scores(y, b):
        return y * y + jnp.asarray(epsilon, y.dtype) * (b * b)

    def log_score(x):
        k, b = _power_of_two(x)
        return (2 * math.log(2)) * k + jnp.log(scaled_scores(x * b, b))

    return _power_of_two_member(2, log_score, scaled_scores)


# --- The shared path. ------------------------------------------------------------------------


class Classes(NamedTuple):
    """Logits and which of their entries are included (``where=True`` and not -inf).

    Scores of excluded entries are computed and then set to 0; the derivatives of ``log Z``
    and of the probabilities are written out (``custom_jvp``) with exactly 0 there, and
    functions differentiated by autodiff take ``safe_logits`` (0 in place of excluded
    entries: the "double where"). So an excluded entry, however large, gets a zero gradient.
    """

    logits: jax.Array  # in the compute dtype, as given
    included: jax.Array  # boolean; a NaN logit is included, so that it poisons its slice
    where: Optional[jax.Array]  # the caller's mask alone (None when not given)

    @property
    def safe_logits(self) -> jax.Array:
        """The logits with 0 in place of excluded entries."""
        return jnp.where(self.included, self.logits, 0)


def classes(x: jax.Array, where: Optional[jax.Array]) -> Classes:
    """Excludes the classes with ``where=False`` or a logit of -inf."""
    included = ~is_excluded(x)
    return Classes(x, included if where is None else where & included, where)


def _masked(values: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
    return values if mask is None else jnp.where(mask, values, 0)


def _normalize(member: Member, c: Classes, axes, outputs: tuple[str, ...] = ()) -> tuple:
    """``(log C, Z / C)``, kept as size 1 on the class axes, then for each name in ``outputs``
    ``f(x_i) / Z`` ("scores") or ``f'(x_i) / Z`` ("slopes"), exactly 0 where excluded, or
    ``log f(x_i) - log Z`` ("log_scores"), -inf where excluded.

    The first pass uses the member's ``log_scale`` and masks only the caller's ``where`` (every
    member's score is 0 at -inf). If any slice's sum is not finite (huge logits, a NaN or +inf:
    rare), the batch is redone with the ``fallback_log_scale`` inside a ``lax.cond``. The sum
    is at least the smallest normal float, ``tiny``, which only a fully excluded slice reaches:
    its probabilities are then 0.
    """

    def finish(c, log_c, total, mask):
        scaled = member.scaled(c.logits, log_c)
        total = jnp.maximum(total, jnp.finfo(total.dtype).tiny)

        def normalized(name):
            if name == "log_scores":
                log_probs = scaled.log_scores - jnp.log(total)
                return log_probs if mask is None else jnp.where(mask, log_probs, -jnp.inf)
            return _masked(getattr(scaled, name), mask) * (1 / total)

        return (scaled.log_scale, total, *(normalized(name) for name in outputs))

    def sum_of_scores(c, log_c, mask):
        return jnp.sum(_masked(member.scaled(c.logits, log_c).scores, mask), axes, keepdims=True)

    def first_log_scale(c):
        return member.log_scale(c.logits, axes, c.where)

    total = sum_of_scores(c, first_log_scale(c), c.where)
    if member.fallback_log_scale is None:
        return finish(c, first_log_scale(c), total, c.where)

    # Only x, where and the sums go through the cond; the classes and log C are formed again
    # from x inside (log C = 0 stays a constant there).
    def first_pass(x, where, total):
        c = classes(x, where)
        return finish(c, first_log_scale(c), total, where)

    def rescaled(x, where, _):
        c = classes(x, where)
        bound = member.fallback_log_scale(c.safe_logits, axes)  # NaN or inf: a bad logit
        total = sum_of_scores(c, bound, where)
        return finish(c, bound, jnp.where(jnp.isfinite(bound), total, jnp.nan), where)

    # One scalar: the largest sum is finite only if every sum is (max propagates NaN).
    return lax.cond(
        jnp.isfinite(jnp.max(total)), first_pass, rescaled, c.logits, c.where, total
    )


def _log(log_c: jax.Array, total: jax.Array) -> jax.Array:
    """``log Z = log C + log(Z / C)``, and 0 for a fully excluded slice (``Z / C = tiny``)."""
    return jnp.where(total == jnp.finfo(total.dtype).tiny, 0, log_c + jnp.log(total))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _log_partition(member: Member, axes: tuple[int, ...], c: Classes) -> jax.Array:
    return _log(*_normalize(member, c, axes))


@_log_partition.defjvp
def _log_partition_jvp(member, axes, primals, tangents):
    (c,), (dc,) = primals, tangents
    log_c, total, slopes = _normalize(member, c, axes, ("slopes",))
    return _log(log_c, total), jnp.sum(slopes * dc.logits, axes, keepdims=True)


def log_partition(member: Member, c: Classes, axes: tuple[int, ...]) -> jax.Array:
    """``log Z = log sum_j f(x_j)`` over ``axes`` (kept as size 1); 0 for a fully excluded slice.

    Its derivative ``f'(x_i) / Z`` is given directly (``custom_jvp``) and computed from ``x``
    and ``(log C, Z / C)`` alone, so reverse mode needs nothing of the size of ``x`` stored.
    """
    return _log_partition(member, axes, c)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _probabilities(member: Member, axes: tuple[int, ...], c: Classes) -> jax.Array:
    return _normalize(member, c, axes, ("scores",))[2]


@_probabilities.defjvp
def _probabilities_jvp(member, axes, primals, tangents):
    """``dp_i = f'(x_i) dx_i / Z - p_i sum_j f'(x_j) dx_j / Z``."""
    (c,), (dc,) = primals, tangents
    _, _, probs, slopes = _normalize(member, c, axes, ("scores", "slopes"))
    dscores = slopes * dc.logits
    return probs, dscores - probs * jnp.sum(dscores, axes, keepdims=True)


def _normalizer_arguments(x: jax.typing.ArrayLike, axis: Axis, where):
    """Checks a normalizer's arguments: the classes in the compute dtype, the axes, the dtype."""
    x = _validation.floating_array("x", x)
    axes = _validation.canonical_axes(axis, x.ndim)
    where = None if where is None else _validation.boolean_mask(where, x.shape)
    return classes(x.astype(compute_dtype(x.dtype)), where), axes, x.dtype


def probabilities(member: Member, x: jax.typing.ArrayLike, axis: Axis, where) -> jax.Array:
    """``p_i = f(x_i) / sum_j f(x_j)``; exactly 0 where excluded."""
    c, axes, dtype = _normalizer_arguments(x, axis, where)
    return _probabilities(member, axes, c).astype(dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _log_probabilities(member: Member, axes: tuple[int, ...], c: Classes) -> jax.Array:
    """``log f(x_i) - log Z``, -inf where excluded, formed in the pass that forms ``Z``."""
    return _normalize(member, c, axes, ("log_scores",))[2]


@_log_probabilities.defjvp
def _log_probabilities_jvp(member, axes, primals, tangents):
    """``d log p_i = d log f(x_i) - sum_j f'(x_j) dx_j / Z``, 0 where excluded."""
    (c,), (dc,) = primals, tangents
    _, _, log_probs, slopes = _normalize(member, c, axes, ("log_scores", "slopes"))
    dlog_scores = jax.jvp(member.log_score, (c.safe_logits,), (dc.logits,))[1]
    dlog_scores = jnp.where(c.included, dlog_scores, 0)
    return log_probs, dlog_scores - jnp.sum(slopes * dc.logits, axes, keepdims=True)


def log_probabilities(member: Member, x: jax.typing.ArrayLike, axis: Axis, where) -> jax.Array:
    """``log p_i = log f(x_i) - log sum_j f(x_j)``; -inf where excluded."""
    c, axes, dtype = _normalizer_arguments(x, axis, where)
    return _log_probabilities(member, axes, c).astype(dtype)


def cross_entropy(
    member: Member,
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: Axis,
    where,
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
    c = classes(logits.astype(dtype), where)
    labels = labels.astype(dtype)
    if where is not None:
        labels = jnp.where(where, labels, 0)
    # log f(x_i) - log Z, differentiated by autodiff through log f (-inf at a -inf logit) and
    # the custom JVP of log Z: cheaper here than the log twins' pass (_log_probabilities).
    log_probs = member.log_score(_masked(c.logits, where)) - log_partition(member, c, axes)
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

    classes: Classes  # (..., D), in the compute dtype
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
        classes(x, where), safe_labels, label_is_valid, target_is_excluded, is_empty, logits.dtype
    )


def take_target(values: jax.Array, labels: jax.Array) -> jax.Array:
    """``values[..., labels]`` by ``take_along_axis`` on the last axis (no one-hot array)."""
    return jnp.take_along_axis(values, labels[..., None], axis=-1)[..., 0]


def target_logit(batch: IntegerLabelBatch) -> jax.Array:
    """The target's logit, 0 where its class is excluded (the loss says +inf or NaN there)."""
    target = take_target(batch.classes.logits, batch.labels)
    return jnp.where(take_target(batch.classes.included, batch.labels), target, 0)


def finish_integer_label_loss(loss: jax.Array, batch: IntegerLabelBatch) -> jax.Array:
    """+inf where the target is excluded by a -inf logit, NaN for an invalid label, exactly 0
    for a fully excluded example; in the input dtype."""
    loss = jnp.where(batch.target_is_excluded, jnp.inf, loss)
    loss = jnp.where(batch.label_is_valid, loss, jnp.nan)
    loss = jnp.where(batch.is_empty, 0, loss)
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
    x = batch.classes.logits
    log_z = log_partition(member, batch.classes, (x.ndim - 1,))[..., 0]
    target = target_logit(batch)
    if margin is None:
        return finish_integer_label_loss(log_z - member.log_score(target), batch)
    # f(x_c - m) in place of f(x_c): the normalizer becomes Z (1 - p_c + p_cm).
    margin_log_score = member.log_score(target - jnp.asarray(margin, x.dtype))
    others = jnp.maximum(1 - jnp.exp(member.log_score(target) - log_z), 0)
    log_z = log_z + jnp.log(others + jnp.exp(margin_log_score - log_z))
    return finish_integer_label_loss(log_z - margin_log_score, batch)
