"""Every hyperparameter (epsilon, margin, a, b, xi) is a traced, differentiable argument:
``jax.grad`` with respect to it, under ``jit`` and ``vmap``, against central finite differences
of the NumPy float64 references in tests/reference.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softfam
from tests import reference as ref

RNG = np.random.default_rng(41)
HIDDEN, KERNEL = RNG.normal(size=(4, 3)), RNG.normal(size=(3, 6))  # the linear losses' inputs
LOGITS = HIDDEN @ KERNEL
LABELS = RNG.integers(0, 6, 4).astype(np.int32)
PROBABILITY_LABELS = RNG.dirichlet(np.ones(6), 4)
WEIGHTS = RNG.normal(size=LOGITS.shape)  # a scalar that sees every output of a normalizer


def spherical_probabilities(x, epsilon):
    return ref.probabilities(ref.spherical_score(epsilon), x)


# name: (softfam function of (value) -> scalar, NumPy reference of (value) -> scalar, value)
def _cases():
    weighted = lambda out: np.sum(out * WEIGHTS)  # noqa: E731
    jweighted = lambda out: jnp.sum(out * WEIGHTS)  # noqa: E731
    x, y, p = LOGITS, LABELS, PROBABILITY_LABELS
    statistics = tuple(np.asarray(v) for v in softfam.spherical_statistics(x, y))  # float64
    return {
        "spherical_softmax/epsilon": (
            lambda e: jweighted(softfam.spherical_softmax(x, epsilon=e)),
            lambda e: weighted(spherical_probabilities(x, e)), 0.3),
        "log_spherical_softmax/epsilon": (
            lambda e: jweighted(softfam.log_spherical_softmax(x, epsilon=e)),
            lambda e: weighted(np.log(spherical_probabilities(x, e))), 0.3),
        "spherical_softmax_cross_entropy/epsilon": (
            lambda e: jnp.sum(softfam.spherical_softmax_cross_entropy(x, p, epsilon=e)),
            lambda e: -np.sum(p * np.log(spherical_probabilities(x, e))), 0.3),
        "spherical_softmax_cross_entropy_with_integer_labels/epsilon": (
            lambda e: jnp.sum(softfam.spherical_softmax_cross_entropy_with_integer_labels(
                x, y, epsilon=e)),
            lambda e: np.sum(ref.integer_label_nll(ref.spherical_score(e), x, y)), 0.3),
        "spherical_softmax_cross_entropy_from_statistics/epsilon": (
            lambda e: jnp.sum(softfam.spherical_softmax_cross_entropy_from_statistics(
                *statistics, epsilon=e)),
            lambda e: np.sum(ref.integer_label_nll(ref.spherical_score(e), x, y)), 0.3),
        "linear_spherical_softmax_cross_entropy_with_integer_labels/epsilon": (
            lambda e: jnp.sum(softfam.linear_spherical_softmax_cross_entropy_with_integer_labels(
                HIDDEN, KERNEL, y, epsilon=e)),
            lambda e: np.sum(ref.integer_label_nll(ref.spherical_score(e), x, y)), 0.3),
        "soft_margin_softmax_cross_entropy_with_integer_labels/margin": (
            lambda m: jnp.sum(softfam.soft_margin_softmax_cross_entropy_with_integer_labels(
                x, y, margin=m)),
            lambda m: np.sum(ref.integer_label_nll(ref.exp_score, x, y, margin=m)), 0.6),
        "soft_margin_taylor_softmax_cross_entropy_with_integer_labels/margin": (
            lambda m: jnp.sum(softfam.soft_margin_taylor_softmax_cross_entropy_with_integer_labels(
                x, y, order=4, margin=m)),
            lambda m: np.sum(ref.integer_label_nll(ref.taylor_score(4), x, y, margin=m)), 0.6),
        "z_loss_with_integer_labels/a": (
            lambda a: jnp.sum(softfam.z_loss_with_integer_labels(x, y, a=a, b=1.0)),
            lambda a: np.sum(ref.z_loss(x, y, a, 1.0)), 1.5),
        "z_loss_with_integer_labels/b": (
            lambda b: jnp.sum(softfam.z_loss_with_integer_labels(x, y, a=1.5, b=b)),
            lambda b: np.sum(ref.z_loss(x, y, 1.5, b)), 1.0),
        "linear_z_loss_with_integer_labels/a": (
            lambda a: jnp.sum(softfam.linear_z_loss_with_integer_labels(
                HIDDEN, KERNEL, y, a=a, b=1.0)),
            lambda a: np.sum(ref.z_loss(x, y, a, 1.0)), 1.5),
        "linear_z_loss_with_integer_labels/b": (
            lambda b: jnp.sum(softfam.linear_z_loss_with_integer_labels(
                HIDDEN, KERNEL, y, a=1.5, b=b)),
            lambda b: np.sum(ref.z_loss(x, y, 1.5, b)), 1.0),
        "z_loss_from_statistics/a": (
            lambda a: jnp.sum(softfam.z_loss_from_statistics(*statistics, a=a, b=1.0)),
            lambda a: np.sum(ref.z_loss(x, y, a, 1.0)), 1.5),
        "z_loss_from_statistics/b": (
            lambda b: jnp.sum(softfam.z_loss_from_statistics(*statistics, a=1.5, b=b)),
            lambda b: np.sum(ref.z_loss(x, y, 1.5, b)), 1.0),
        "softmax_cross_entropy_upper_bound_with_integer_labels/xi": (
            lambda xi: jnp.sum(softfam.softmax_cross_entropy_upper_bound_with_integer_labels(
                x, y, xi=xi)),
            lambda xi: np.sum(ref.softmax_upper_bound(x, y, xi)), 0.7),
        "softmax_cross_entropy_upper_bound_from_statistics/xi": (
            lambda xi: jnp.sum(softfam.softmax_cross_entropy_upper_bound_from_statistics(
                *statistics, xi=xi)),
            lambda xi: np.sum(ref.softmax_upper_bound(x, y, xi)), 0.7),
    }


CASES = list(_cases())


def central_difference(f, value, step=1e-5):
    """``(f(v + h) - f(v - h)) / 2h``, in float64: error O(h^2) ~ 1e-10 relative."""
    return (f(value + step) - f(value - step)) / (2 * step)


@pytest.mark.parametrize("case", CASES)
def test_grad_matches_finite_differences_of_the_reference(case, x64):
    function, reference, value = _cases()[case]
    expected = central_difference(reference, value)
    grad = jax.jit(jax.grad(function))(jnp.float64(value))
    np.testing.assert_allclose(grad, expected, rtol=1e-7, atol=1e-9)
    assert abs(expected) > 1e-6  # the hyperparameter matters here: the check can fail


@pytest.mark.parametrize("case", CASES)
def test_vmap_of_grad_over_hyperparameter_values_matches_one_at_a_time(case, x64):
    """A sweep under one ``vmap(grad)``: each value's gradient as if computed alone."""
    function, reference, value = _cases()[case]
    values = jnp.asarray([value * 0.5, value, value * 2.0])
    grads = jax.jit(jax.vmap(jax.grad(function)))(values)
    expected = [central_difference(reference, float(v)) for v in values]
    np.testing.assert_allclose(grads, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_hyperparameter_is_traced_under_jit_with_one_compilation(case, x64):
    """Two values through one jitted function: one trace, two different results."""
    function, reference, value = _cases()[case]
    traces = []

    @jax.jit
    def traced(v):
        traces.append(v)
        return function(v)

    first, second = traced(jnp.float64(value)), traced(jnp.float64(value * 2))
    assert len(traces) == 1
    np.testing.assert_allclose([first, second], [reference(value), reference(value * 2)],
                               rtol=1e-10)


def test_float32_logits_with_a_float64_hyperparameter_differentiate(x64):
    """The hyperparameter is cast to the compute dtype; its gradient comes back in its own."""
    x = LOGITS.astype(np.float32)
    weights = WEIGHTS.astype(np.float32)
    grad = jax.grad(lambda e: jnp.sum(softfam.spherical_softmax(x, epsilon=e) * weights))(
        jnp.float64(0.3))
    expected = central_difference(
        lambda e: np.sum(spherical_probabilities(x.astype(np.float64), e) * WEIGHTS), 0.3)
    assert grad.dtype == jnp.float64
    np.testing.assert_allclose(grad, expected, rtol=1e-4)


def test_epsilon_and_logits_differentiate_together(x64):
    """Second order across arguments: d/d(eps) of the gradient with respect to the logits."""
    def loss(x, e):
        return jnp.sum(softfam.spherical_softmax_cross_entropy(x, PROBABILITY_LABELS, epsilon=e))

    mixed = jax.jit(jax.grad(lambda e: jnp.sum(jax.grad(loss)(LOGITS, e) * WEIGHTS)))(0.3)
    expected = central_difference(
        lambda e: float(jnp.sum(jax.grad(loss)(LOGITS, e) * WEIGHTS)), 0.3)
    np.testing.assert_allclose(mixed, expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["epsilon", "margin"])
def test_hyperparameters_of_huge_logits_differentiate_in_log_space(name, x64):
    """Logits whose scores overflow take the log-space way; its hyperparameter derivative
    agrees with finite differences there too (the ratios of huge scores are exact)."""
    x = np.array([[3e200, -1e201, 2.0, 0.5]])
    y = np.array([0], np.int32)
    if name == "epsilon":
        def function(e):
            return jnp.sum(softfam.log_spherical_softmax(x, epsilon=e) * WEIGHTS[:1, :4])

        def reference(e):  # log(x^2 + eps) = 2 log|x| for the huge logits, in float64
            log_f = np.array([[2 * np.log(abs(v)) if abs(v) > 1e100 else np.log(v * v + e)
                               for v in x[0]]])
            top = log_f.max()
            log_z = top + np.log(np.sum(np.exp(log_f - top)))
            return np.sum((log_f - log_z) * WEIGHTS[:1, :4])
    else:
        x = np.array([[1e200, -1e201, 2.0, 0.5]])
        y = np.array([2], np.int32)

        def function(m):
            return jnp.sum(softfam.soft_margin_taylor_softmax_cross_entropy_with_integer_labels(
                x, y, margin=m))

        def reference(m):  # log T_2 of the target with margin; log Z ~ log T_2(-1e201)
            log_big = [2 * np.log(abs(v)) - np.log(2) for v in (1e200, -1e201)]
            t = 2.0 - m
            log_target = np.log(1 + t + t * t / 2)
            top = max(log_big)
            log_z = top + np.log(sum(np.exp(v - top) for v in log_big + [log_target]))
            return log_z - log_target
    grad = jax.grad(function)(jnp.float64(0.3))
    np.testing.assert_allclose(grad, central_difference(reference, 0.3), rtol=1e-6, atol=1e-12)
