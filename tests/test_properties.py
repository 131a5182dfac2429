"""Properties over random inputs (hypothesis): what the math says holds, and, as fixed
examples, the invariances that do not hold."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softfam
from tests import reference as ref
from tests.test_normalizers import NORMALIZERS

JITTED = {  # jitted once: hypothesis then compiles once per shape, not once per operation
    name: (jax.jit(functools.partial(normalize, **kwargs)), jax.jit(functools.partial(log_normalize, **kwargs)))
    for name, (normalize, log_normalize, kwargs, _) in NORMALIZERS.items()
}

settings.register_profile("softfam", max_examples=40, deadline=None)
settings.load_profile("softfam")


def vectors(low=-50.0, high=50.0, min_size=1, max_size=12):
    """float32 vectors of a few lengths only: each new length compiles the functions again."""
    lengths = [n for n in (1, 2, 3, 7, 12, 30) if min_size <= n <= max_size]
    return hnp.arrays(
        np.float32, st.sampled_from(lengths),
        elements=st.floats(low, high, width=32, allow_nan=False, allow_infinity=False),
    )


@given(vectors(), st.sampled_from(sorted(NORMALIZERS)))
def test_probabilities_lie_in_the_unit_interval_and_sum_to_one(x, name):
    normalize, log_normalize = JITTED[name]
    probs = np.asarray(normalize(x))
    assert np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.exp(np.asarray(log_normalize(x), np.float64)), probs, rtol=1e-5, atol=1e-30)


@given(vectors(), st.floats(-100, 100, width=32))
def test_softmax_is_shift_invariant(x, shift):
    np.testing.assert_allclose(
        softfam.softmax(x + np.float32(shift)), softfam.softmax(x), rtol=1e-4, atol=1e-6
    )


@given(vectors(min_size=2))
def test_softmax_preserves_order(x):
    probs = np.asarray(softfam.softmax(x))
    i, j = np.nonzero(x[:, None] < x[None, :])
    assert np.all(probs[i] <= probs[j])


@given(vectors(low=-1.0, high=20.0, min_size=2), st.sampled_from([2, 4, 6]))
def test_taylor_softmax_preserves_order_for_inputs_above_minus_one(x, order):
    """T_n is increasing right of its minimum, which lies at or left of -1."""
    probs = np.asarray(jax.jit(functools.partial(softfam.taylor_softmax, order=order))(x))
    i, j = np.nonzero(x[:, None] < x[None, :])
    assert np.all(probs[i] <= probs[j])


@given(vectors(), st.data())
def test_spherical_softmax_ignores_signs(x, data):
    signs = data.draw(hnp.arrays(np.float32, x.shape, elements=st.sampled_from([-1.0, 1.0])))
    spherical_softmax = JITTED["spherical"][0]
    np.testing.assert_array_equal(spherical_softmax(x * signs), spherical_softmax(x))


@given(vectors(low=0.125, high=8.0), st.floats(0.125, 8.0))
def test_spherical_softmax_is_scale_invariant_as_epsilon_vanishes(x, scale):
    spherical_softmax = jax.jit(functools.partial(softfam.spherical_softmax, epsilon=1e-10))
    np.testing.assert_allclose(
        spherical_softmax(x * np.float32(scale)), spherical_softmax(x), rtol=1e-4, atol=1e-7
    )


@given(vectors(low=-20.0, high=20.0, max_size=30), st.integers(0, 29), st.floats(0.01, 20.0))
def test_upper_bound_is_never_below_the_softmax_loss(x, label, xi):
    label = np.int32(label % len(x))
    bound = softfam.softmax_cross_entropy_upper_bound_with_integer_labels(x, label, xi=xi)
    exact = ref.logsumexp_nll(x[None].astype(np.float64), np.array([label]))[0]
    assert float(bound) >= exact - 1e-4 * max(1.0, abs(exact))


def test_taylor_and_spherical_softmax_are_not_shift_invariant():
    x = jnp.array([0.0, 1.0])
    # T_2: [1, 2.5] -> p_1 = 5/7; shifted [2.5, 5] -> p_1 = 2/3
    np.testing.assert_allclose(softfam.taylor_softmax(x)[1], 2.5 / 3.5, rtol=1e-6)
    np.testing.assert_allclose(softfam.taylor_softmax(x + 1)[1], 5 / 7.5, rtol=1e-6)
    # spherical (eps -> 0): [0, 1] -> p_1 = 1; shifted [1, 4] -> p_1 = 4/5
    np.testing.assert_allclose(softfam.spherical_softmax(x, epsilon=1e-9)[1], 1.0, rtol=1e-6)
    np.testing.assert_allclose(softfam.spherical_softmax(x + 1, epsilon=1e-9)[1], 0.8, rtol=1e-6)


def test_softmax_and_spherical_softmax_with_large_epsilon_are_not_scale_invariant():
    x = jnp.array([1.0, 2.0])
    # softmax: p_1 = sigmoid(1) vs sigmoid(2); spherical with eps = 1: 5/7 vs 17/22
    np.testing.assert_allclose(softfam.softmax(x)[1], 1 / (1 + np.exp(-1.0)), rtol=1e-6)
    np.testing.assert_allclose(softfam.softmax(2 * x)[1], 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    np.testing.assert_allclose(softfam.spherical_softmax(x, epsilon=1.0)[1], 5 / 7, rtol=1e-6)
    np.testing.assert_allclose(softfam.spherical_softmax(2 * x, epsilon=1.0)[1], 17 / 22, rtol=1e-6)


def test_softmax_temperature_limits():
    x = jnp.array([0.3, -1.2, 2.5, 1.0])
    np.testing.assert_allclose(softfam.softmax(x / 1e-3), [0, 0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(softfam.softmax(x / 1e6), np.full(4, 0.25), rtol=1e-5)
