"""The normalizers against NumPy float64 references, the seed documents' worked examples,
the facts of the normalizer family (docs/papers.md), and the errors for bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softfam
from tests import reference as ref

NORMALIZERS = {
    "softmax": (softfam.softmax, softfam.log_softmax, {}, ref.exp_score),
    "taylor2": (softfam.taylor_softmax, softfam.log_taylor_softmax, {"order": 2}, ref.taylor_score(2)),
    "taylor6": (softfam.taylor_softmax, softfam.log_taylor_softmax, {"order": 6}, ref.taylor_score(6)),
    "spherical": (
        softfam.spherical_softmax, softfam.log_spherical_softmax, {"epsilon": 0.05},
        ref.spherical_score(0.05),
    ),
}

SHAPES_AND_AXES = [
    ((7,), -1),
    ((3, 5), -1),
    ((3, 5), 0),
    ((3, 1), -1),
    ((1, 4), 0),
    ((2, 3, 4), (0, 2)),
    ((2, 3, 4), (1,)),
    ((2, 3, 4), None),
]

TOLERANCE = {  # (rtol, atol) for results rounded to the dtype
    jnp.float16: (3e-3, 3e-3),
    jnp.bfloat16: (3e-2, 3e-2),
    jnp.float32: (2e-5, 2e-6),
    jnp.float64: (1e-12, 1e-13),
}


def random_logits(shape, seed=0, scale=2.5):
    return np.random.default_rng(seed).normal(size=shape) * scale


@pytest.mark.parametrize("name", NORMALIZERS)
@pytest.mark.parametrize("shape,axis", SHAPES_AND_AXES)
def test_matches_reference_over_shapes_and_axes(name, shape, axis):
    normalize, log_normalize, kwargs, score = NORMALIZERS[name]
    x = random_logits(shape).astype(np.float32)
    np_axis = axis if not isinstance(axis, tuple) else axis
    np.testing.assert_allclose(
        normalize(x, axis, **kwargs), ref.probabilities(score, x, np_axis), rtol=2e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        log_normalize(x, axis, **kwargs), ref.log_probabilities(score, x, np_axis), rtol=2e-5, atol=2e-6
    )


@pytest.mark.parametrize("name", NORMALIZERS)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
def test_dtypes_are_kept_and_results_match(name, dtype, x64):
    normalize, log_normalize, kwargs, score = NORMALIZERS[name]
    x = jnp.asarray(random_logits((4, 9), seed=1), dtype)
    exact = np.asarray(x.astype(jnp.float64))  # the reference sees the rounded inputs
    rtol, atol = TOLERANCE[dtype]
    probs, log_probs = normalize(x, **kwargs), log_normalize(x, **kwargs)
    assert probs.dtype == dtype and log_probs.dtype == dtype
    np.testing.assert_allclose(np.asarray(probs, np.float64), ref.probabilities(score, exact), rtol, atol)
    np.testing.assert_allclose(
        np.asarray(log_probs, np.float64), ref.log_probabilities(score, exact), rtol, atol
    )


@pytest.mark.parametrize("name", NORMALIZERS)
def test_masks_give_zero_and_minus_inf_and_an_all_masked_row_is_finite(name):
    normalize, log_normalize, kwargs, score = NORMALIZERS[name]
    x = random_logits((4, 6), seed=2).astype(np.float32)
    mask = np.random.default_rng(3).random((4, 6)) < 0.6
    mask[1] = False  # an all-masked row
    mask[2] = True
    probs = np.asarray(normalize(x, where=mask, **kwargs))
    log_probs = np.asarray(log_normalize(x, where=mask, **kwargs))
    assert np.all(probs[~mask] == 0.0)
    assert np.all(log_probs[~mask] == -np.inf)
    assert not np.isnan(probs).any() and not np.isnan(log_probs).any()
    np.testing.assert_allclose(probs, ref.probabilities(score, x, mask=mask), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(
        log_probs[mask], ref.log_probabilities(score, x, mask=mask)[mask], rtol=2e-5, atol=2e-6
    )


@pytest.mark.parametrize("name", NORMALIZERS)
def test_mask_broadcasts_over_rows(name):
    normalize, _, kwargs, score = NORMALIZERS[name]
    x = random_logits((3, 5), seed=4).astype(np.float32)
    mask = np.array([True, False, True, True, False])
    np.testing.assert_allclose(
        normalize(x, where=mask, **kwargs),
        ref.probabilities(score, x, mask=np.broadcast_to(mask, x.shape)),
        rtol=2e-5, atol=1e-7,
    )


@pytest.mark.parametrize("name", NORMALIZERS)
def test_jit_and_vmap_agree_with_the_reference(name):
    normalize, log_normalize, kwargs, score = NORMALIZERS[name]
    x = random_logits((5, 8), seed=5).astype(np.float32)
    expected = ref.probabilities(score, x)
    jitted = jax.jit(lambda v: normalize(v, **kwargs))
    mapped = jax.vmap(lambda v: normalize(v, **kwargs))
    mapped_over_columns = jax.vmap(lambda v: normalize(v, axis=0, **kwargs), in_axes=1, out_axes=1)
    np.testing.assert_allclose(jitted(x), expected, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(mapped(x), expected, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(mapped_over_columns(x.T).T, expected, rtol=2e-5, atol=1e-7)


def test_softmax_matches_jax_nn():
    x = random_logits((6, 11), seed=6).astype(np.float32)
    mask = np.random.default_rng(7).random((6, 11)) < 0.7
    np.testing.assert_allclose(softfam.softmax(x), jax.nn.softmax(x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        softfam.log_softmax(x, axis=(0, 1)), jax.nn.log_softmax(x, axis=(0, 1)), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        softfam.softmax(x, where=mask), jax.nn.softmax(x, where=mask), rtol=1e-6, atol=1e-7
    )


# --- The seed documents' worked examples. ----------------------------------------------------


def test_worked_examples_of_the_seed_documents():
    np.testing.assert_allclose(
        softfam.softmax(jnp.array([1.0, 2.0, 3.0])), [0.09003057, 0.24472847, 0.66524096], rtol=1e-6
    )
    np.testing.assert_allclose(
        softfam.softmax(jnp.array([0.3, 2.9, 4.0])), [0.01821127, 0.24519181, 0.73659691], rtol=1e-6
    )


def test_large_logits_where_the_naive_formula_gives_nan():
    x = np.array([1010.0, 1000.0, 990.0], np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(x) / np.exp(x).sum()
    assert np.isnan(naive).all()
    probs = np.asarray(softfam.softmax(x))
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs, ref.probabilities(ref.exp_score, x), rtol=1e-5, atol=1e-9)


def test_two_class_softmax_is_the_sigmoid_of_the_difference():
    a, b = random_logits((2, 50), seed=8)
    probs = softfam.softmax(jnp.stack([a, b], -1).astype(np.float32))
    np.testing.assert_allclose(probs[:, 1], 1 / (1 + np.exp(a - b)), rtol=1e-5, atol=1e-7)


def test_changing_the_base_of_the_exponential_is_a_temperature():
    x = random_logits((10,), seed=9)
    base = 3.0
    expected = base**x / np.sum(base**x)
    np.testing.assert_allclose(softfam.softmax((x * math.log(base)).astype(np.float32)), expected, rtol=1e-5)


# --- Facts of the normalizer family (docs/papers.md). ----------------------------------


TAYLOR_MINIMA = {  # order: (argmin, min T_n)
    2: (-1.0, 0.5),
    4: (-1.59607, 0.270395),
    6: (-2.18061, 0.149325),
    8: (-2.759, 0.0832715),
    10: (-3.33355, 0.0466991),
}


@pytest.mark.parametrize("order", TAYLOR_MINIMA)
def test_taylor_polynomial_minimum(order, x64):
    """With the pair [x, 0], p_0 = T_n(x) / (T_n(x) + 1), so T_n(x) = p_0 / (1 - p_0)."""
    argmin, minimum = TAYLOR_MINIMA[order]
    grid = argmin + np.linspace(-0.5, 0.5, 201)
    pairs = np.stack([grid, np.zeros_like(grid)], -1)
    p0 = np.asarray(softfam.taylor_softmax(pairs, order=order))[:, 0]
    values = p0 / (1 - p0)
    assert values.min() == pytest.approx(minimum, rel=2e-6)
    assert grid[values.argmin()] == pytest.approx(argmin, abs=5e-3)
    assert np.all(values > 0)


def test_taylor_softmax_approaches_softmax_as_the_order_grows():
    x = np.random.default_rng(10).uniform(-1, 1, (8, 12)).astype(np.float32)
    softmax = ref.probabilities(ref.exp_score, x)
    errors = [np.abs(np.asarray(softfam.taylor_softmax(x, order=n)) - softmax).max() for n in (2, 4, 6, 8)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < 1e-6


def test_taylor_is_even_order_horner_without_overflow_in_float16():
    """x^4 overflows float16 for |x| > 16; T_4 must not."""
    x = jnp.array([20.0, 30.0, -25.0, 0.0], jnp.float16)
    probs = np.asarray(softfam.taylor_softmax(x, order=4), np.float64)
    exact = ref.probabilities(ref.taylor_score(4), np.asarray(x, np.float64))
    np.testing.assert_allclose(probs, exact, rtol=3e-3, atol=1e-4)


@pytest.mark.parametrize("name", NORMALIZERS)
@pytest.mark.parametrize("dtype,high", [(jnp.float32, 1e4), (jnp.float16, 65504.0), (jnp.bfloat16, 1e30)])
def test_huge_finite_inputs_give_finite_outputs(name, dtype, high):
    """Finite everywhere, but for a log-probability below the dtype's range (softmax only)."""
    normalize, log_normalize, kwargs, score = NORMALIZERS[name]
    x = jnp.asarray(np.random.default_rng(11).uniform(-high, high, (4, 16)), dtype)
    x = x.at[0, 0].set(high).at[1, 0].set(-high)
    probs = np.asarray(normalize(x, **kwargs), np.float64)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=2e-2)
    log_probs = np.asarray(log_normalize(x, **kwargs), np.float64)
    representable = ref.log_probabilities(score, np.asarray(x, np.float64)) > -jnp.finfo(dtype).max
    assert np.isfinite(log_probs[representable]).all()
    assert np.all(log_probs[~representable] == -np.inf)


@pytest.mark.parametrize("order", [2, 10])
def test_high_order_taylor_in_log_space_for_huge_inputs(order, x64):
    """log T_n(x) ~ n log|x| - log n!: the ratio of two huge scores stays exact."""
    x = np.array([1e30, 2e30])
    expected = np.log(np.array([1.0, 2.0**order]) / (1 + 2.0**order))
    np.testing.assert_allclose(softfam.log_taylor_softmax(x, order=order), expected, rtol=1e-12, atol=1e-12)


def test_spherical_softmax_ignores_the_sign():
    x = random_logits((3, 7), seed=12).astype(np.float32)
    signs = np.where(np.random.default_rng(13).random(x.shape) < 0.5, -1.0, 1.0).astype(np.float32)
    np.testing.assert_array_equal(softfam.spherical_softmax(x * signs), softfam.spherical_softmax(x))


# --- Bad input. ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NORMALIZERS)
def test_integer_input_is_rejected(name):
    normalize, _, kwargs, _ = NORMALIZERS[name]
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        normalize(jnp.arange(3), **kwargs)


@pytest.mark.parametrize("name", NORMALIZERS)
@pytest.mark.parametrize("axis", [2, -3, (0, 5)])
def test_axis_out_of_range_is_rejected(name, axis):
    normalize, _, kwargs, _ = NORMALIZERS[name]
    with pytest.raises(ValueError, match=r"axis=.* is out of range for an array with 2 dimensions"):
        normalize(jnp.ones((2, 3)), axis, **kwargs)


def test_axis_of_a_wrong_type_or_repeated_is_rejected():
    with pytest.raises(TypeError, match="axis must be an int, a tuple of ints or None"):
        softfam.softmax(jnp.ones((2, 3)), axis=1.0)
    with pytest.raises(ValueError, match="repeats an axis"):
        softfam.softmax(jnp.ones((2, 3)), axis=(1, -1))


@pytest.mark.parametrize("order", [0, 3, -2, 1])
def test_taylor_order_must_be_even_and_at_least_two(order):
    with pytest.raises(ValueError, match="order must be an even integer >= 2"):
        softfam.taylor_softmax(jnp.ones(3), order=order)


@pytest.mark.parametrize("order", [2.0, True, "2"])
def test_taylor_order_must_be_an_int(order):
    with pytest.raises(TypeError, match="order must be a Python int"):
        softfam.log_taylor_softmax(jnp.ones(3), order=order)


@pytest.mark.parametrize("epsilon", [0.0, -1e-3])
def test_spherical_epsilon_must_be_positive(epsilon):
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        softfam.spherical_softmax(jnp.ones(3), epsilon=epsilon)


def test_where_must_be_boolean_and_broadcast():
    with pytest.raises(TypeError, match="where must be a boolean array"):
        softfam.softmax(jnp.ones(3), where=jnp.ones(3))
    with pytest.raises(ValueError, match=r"where of shape \(2,\) does not broadcast"):
        softfam.softmax(jnp.ones(3), where=jnp.array([True, False]))
