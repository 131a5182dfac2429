"""softfam as a drop-in for optax and jax.nn: optax's own test cases with softfam's functions in
their place, optax's positional ``(logits, labels, axis, where)`` for every loss, and -inf
logits as excluded classes in every member (NumPy float64 references, jit, vmap, grad, dtypes).
"""

import functools
import importlib
import io
import types
import unittest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softfam
from tests import reference as ref
from tests.test_losses import INTEGER_LABEL_LOSSES, PROBABILITY_LABEL_LOSSES
from tests.test_normalizers import NORMALIZERS

DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64]
TOLERANCE = {jnp.float16: 5e-3, jnp.bfloat16: 4e-2, jnp.float32: 2e-5, jnp.float64: 1e-12}
ROUNDING = {jnp.float16: 2e-3, jnp.bfloat16: 2e-2, jnp.float32: 5e-7, jnp.float64: 1e-15}


# --- optax's own tests, with softfam in optax's place. ---------------------------------------


def test_optax_softmax_cross_entropy_tests_pass_with_softfam(monkeypatch):
    """optax's test classes for its three softmax cross-entropies, run on softfam's functions.

    ``safe_softmax_cross_entropy`` is softfam's ``softmax_cross_entropy``: -inf logits are
    excluded classes there, so one function has both behaviours."""
    try:
        optax_tests = importlib.import_module("optax.losses._classification_test")
    except ImportError:  # pragma: no cover - the wheel ships its tests today
        pytest.skip("this optax release does not ship its loss tests")
    softfam_in_optax_place = types.SimpleNamespace(
        softmax_cross_entropy=softfam.softmax_cross_entropy,
        safe_softmax_cross_entropy=softfam.softmax_cross_entropy,
        softmax_cross_entropy_with_integer_labels=softfam.softmax_cross_entropy_with_integer_labels,
    )
    monkeypatch.setattr(optax_tests, "_classification", softfam_in_optax_place)
    classes = (optax_tests.SoftmaxCrossEntropyTest, optax_tests.SafeSoftmaxCrossEntropyTest,
               optax_tests.SoftmaxCrossEntropyWithIntegerLabelsTest)
    suite = unittest.TestSuite(
        unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in classes
    )
    # optax's tests mix NumPy float64 with JAX float32 (outside softfam): standard promotion.
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
    failures = [f"{test.id()}: {trace.splitlines()[-1]}" for test, trace in
                result.failures + result.errors]
    assert result.testsRun >= 28
    assert not failures, "\n".join(failures)


# --- optax's positional axis and where, for every loss. ---------------------------------------


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_integer_label_losses_take_axis_and_where_positionally(name):
    loss, kwargs, _ = INTEGER_LABEL_LOSSES[name]
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 6, 5)).astype(np.float32)  # classes on axis 1
    labels = rng.integers(0, 6, (4, 5)).astype(np.int32)
    moved = np.moveaxis(logits, 1, -1)
    expected = loss(moved, labels, **kwargs)
    np.testing.assert_allclose(loss(logits, labels, 1, **kwargs), expected, rtol=1e-6)
    per_example = rng.random((4, 5)) < 0.7
    per_logit = rng.random((4, 6, 5)) < 0.8
    per_logit[:, 0] = True
    labels_kept = np.zeros_like(labels)  # class 0 is never masked: a valid label everywhere
    for where in (per_example, per_logit):
        positional = loss(logits, labels_kept, 1, where, **kwargs)
        keyword = loss(logits, labels_kept, axis=1, where=where, **kwargs)
        moved_where = where if where.ndim == 2 else np.moveaxis(where, 1, -1)
        np.testing.assert_array_equal(positional, keyword)
        np.testing.assert_allclose(positional, loss(moved, labels_kept, -1, moved_where, **kwargs),
                                   rtol=1e-6)


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
@pytest.mark.parametrize("axis", [(1, 3), (3, 1), (-3, -1), (0, 1, 3)])
def test_integer_label_losses_take_tuple_axes_as_flat_indices(name, axis):
    """A label is a flat index into the class axes taken in the order given (optax's rule)."""
    loss, kwargs, _ = INTEGER_LABEL_LOSSES[name]
    shape = (2, 3, 4, 5)
    class_axes = tuple(a % 4 for a in axis)  # flattened in the order given, as optax does
    batch_axes = tuple(a for a in range(4) if a not in class_axes)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=shape).astype(np.float32)
    num_classes = int(np.prod([shape[a] for a in class_axes]))
    labels = rng.integers(0, num_classes, [shape[a] for a in batch_axes]).astype(np.int32)
    flat = logits.transpose(batch_axes + class_axes).reshape(labels.shape + (num_classes,))
    np.testing.assert_allclose(loss(logits, labels, axis, **kwargs), loss(flat, labels, **kwargs),
                               rtol=1e-6)


@pytest.mark.parametrize("name", PROBABILITY_LABEL_LOSSES)
def test_probability_label_losses_take_axis_and_where_positionally(name):
    loss, kwargs, _, _ = PROBABILITY_LABEL_LOSSES[name]
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 3)).astype(np.float32)  # classes on axis 0
    labels = rng.dirichlet(np.ones(6), 3).T.astype(np.float32)
    where = rng.random((6, 3)) < 0.7
    expected = loss(logits.T, labels.T, -1, where.T, **kwargs)
    np.testing.assert_allclose(loss(logits, labels, 0, where, **kwargs), expected, rtol=1e-6)


# --- -inf logits: excluded classes. -----------------------------------------------------------


def logits_with_excluded_classes(shape=(5, 7), seed=3):
    """Normal logits with -inf at about a third of the entries, never at column 0, and one
    row (row 1) excluded but for column 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * 2
    excluded = rng.random(shape) < 0.35
    excluded[:, 0] = False
    excluded[1, 1:] = True
    return np.where(excluded, -np.inf, x), ~excluded


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NORMALIZERS)
def test_minus_inf_is_an_excluded_class_in_every_normalizer(name, dtype, x64):
    normalize, log_normalize, kwargs, score = NORMALIZERS[name]
    x, included = logits_with_excluded_classes()
    x = x.astype(dtype)
    reference = ref.probabilities(score, np.where(included, x, 0), mask=included)
    probs = np.asarray(jax.jit(functools.partial(normalize, **kwargs))(x), np.float64)
    log_probs = np.asarray(jax.vmap(functools.partial(log_normalize, **kwargs))(x), np.float64)
    assert (probs[~included] == 0).all()
    assert (log_probs[~included] == -np.inf).all()
    np.testing.assert_allclose(probs, reference, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(log_probs[included], np.log(reference[included]),
                                   rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    masked = np.asarray(normalize(np.where(included, x, 0), where=included, **kwargs), np.float64)
    np.testing.assert_allclose(probs, masked, rtol=ROUNDING[dtype], atol=ROUNDING[dtype])


@pytest.mark.parametrize("name", NORMALIZERS)
def test_minus_inf_entries_get_zero_gradient_in_normalizers(name, x64):
    normalize, log_normalize, kwargs, _ = NORMALIZERS[name]
    x, included = logits_with_excluded_classes()
    weights = np.random.default_rng(4).normal(size=x.shape)
    for f in (normalize, log_normalize):
        def weighted(v, where=None):
            out = f(v, where=where, **kwargs)
            return jnp.sum(jnp.where(included, out, 0) * weights)

        grads = np.asarray(jax.jit(jax.grad(weighted))(x))
        assert np.isfinite(grads).all()
        assert (grads[~included] == 0).all()
        masked = np.asarray(jax.grad(weighted)(np.where(included, x, 0), included))
        np.testing.assert_allclose(grads, masked, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_minus_inf_is_an_excluded_class_in_every_integer_label_loss(name, dtype, x64):
    loss, kwargs, reference = INTEGER_LABEL_LOSSES[name]
    x, included = logits_with_excluded_classes()
    labels = np.zeros(len(x), np.int32)  # column 0 is never excluded
    values, grads = jax.jit(jax.value_and_grad(
        lambda v: jnp.sum(loss(v, labels, **kwargs).astype(jnp.float64)))
    )(x.astype(dtype))
    per_example = np.asarray(loss(x.astype(dtype), labels, **kwargs), np.float64)
    expected = reference(np.where(included, x, 0), labels, mask=included)
    np.testing.assert_allclose(per_example, expected, rtol=5 * TOLERANCE[dtype],
                               atol=5 * TOLERANCE[dtype])
    grads = np.asarray(grads, np.float64)
    assert np.isfinite(values) and np.isfinite(grads).all()
    assert (grads[~included] == 0).all()
    masked = jax.grad(lambda v: jnp.sum(loss(v, labels, where=included, **kwargs)))(
        np.where(included, x, 0).astype(dtype))
    np.testing.assert_allclose(grads, np.asarray(masked, np.float64), rtol=TOLERANCE[dtype],
                               atol=TOLERANCE[dtype])


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_a_target_at_minus_inf_costs_inf_for_its_example_only(name):
    loss, kwargs, _ = INTEGER_LABEL_LOSSES[name]
    x = np.array([[-np.inf, 0.5, 1.0, -2.0], [0.3, -1.0, 2.0, 0.0]], np.float32)
    values, grads = jax.value_and_grad(lambda v: loss(v, np.array([0, 2], np.int32), **kwargs)[1])(x)
    per_example = np.asarray(jax.vmap(lambda v, y: loss(v, y, **kwargs))(x, np.array([0, 2])))
    assert per_example[0] == np.inf and np.isfinite(per_example[1])
    assert np.isfinite(values) and np.isfinite(np.asarray(grads)).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_nan_and_plus_inf_make_their_example_nan_only(name, bad):
    loss, kwargs, _ = INTEGER_LABEL_LOSSES[name]
    x = np.array([[bad, 0.5, 1.0, -2.0], [0.3, -1.0, -np.inf, 0.0]], np.float32)
    per_example = np.asarray(jax.jit(lambda v: loss(v, np.array([1, 3], np.int32), **kwargs))(x))
    assert np.isnan(per_example[0]) and np.isfinite(per_example[1])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("name", NORMALIZERS)
def test_nan_and_plus_inf_make_their_slice_nan_only(name, bad):
    normalize, log_normalize, kwargs, _ = NORMALIZERS[name]
    x = np.array([[bad, 0.5, 1.0], [0.3, -np.inf, 0.0]], np.float32)
    for f in (normalize, log_normalize):
        out = np.asarray(jax.jit(functools.partial(f, **kwargs))(x))
        assert np.isnan(out[0]).all()
        assert not np.isnan(out[1]).any()


@pytest.mark.parametrize("name", PROBABILITY_LABEL_LOSSES)
def test_probability_labels_with_excluded_classes(name, x64):
    """0 log 0 = 0 where a zero label meets a -inf logit; positive mass there gives +inf for
    that example only; for softmax, optax's safe_softmax_cross_entropy's values and gradients."""
    import optax

    loss, kwargs, score, _ = PROBABILITY_LABEL_LOSSES[name]
    x = np.array([[-np.inf, 0.0, 1.5], [-np.inf, 0.0, 0.5], [2.0, -np.inf, -np.inf]])
    labels = np.array([[0.0, 0.3, 0.7], [0.4, 0.3, 0.3], [1.0, 0.0, 0.0]])
    values = np.asarray(jax.vmap(lambda v, y: loss(v, y, **kwargs))(x, labels))
    finite_rows = [0, 2]
    included = np.isfinite(x)
    with np.errstate(divide="ignore"):
        log_p = np.log(ref.probabilities(score, np.where(included, x, 0), mask=included))
    expected = -np.sum(np.where(labels > 0, labels * np.where(included, log_p, 0), 0), -1)
    np.testing.assert_allclose(values[finite_rows], expected[finite_rows], rtol=1e-12, atol=1e-15)
    assert values[1] == np.inf
    grads = np.asarray(jax.grad(lambda v: jnp.sum(loss(v, labels[finite_rows], **kwargs)))(
        x[finite_rows]))
    assert np.isfinite(grads).all() and (grads[~included[finite_rows]] == 0).all()
    if name == "softmax":
        np.testing.assert_allclose(values, optax.losses.safe_softmax_cross_entropy(x, labels),
                                   rtol=1e-12)
        safe_grads = jax.grad(lambda v: jnp.sum(
            optax.losses.safe_softmax_cross_entropy(v, labels[finite_rows])))(x[finite_rows])
        np.testing.assert_allclose(grads, safe_grads, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("order", [2, 4, 10])
def test_huge_taylor_scores_take_the_scaled_path_and_stay_exact(order, x64):
    """Logits whose T_n overflows float32 (and a -inf beside them) still give the float64
    reference: the slices whose sum of scores is not finite are summed again, scaled."""
    x = np.array([[3e18, -1e19, 2.0, -np.inf], [0.5, -1.0, 2.0, 0.0]])
    included = np.isfinite(x)
    expected = ref.probabilities(ref.taylor_score(order), np.where(included, x, 0), mask=included)
    probs = np.asarray(softfam.taylor_softmax(x.astype(np.float32), order=order), np.float64)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-30)
