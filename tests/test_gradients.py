"""Gradients: check_grads in float64 for every function, to first order in forward and
reverse mode and to second order in reverse mode (``check_second_order``), exactly zero gradients for masked inputs however large, known closed forms, and the
transformations a training loop uses (jit, vmap, jacfwd, scan)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import softfam
from tests import reference as ref
from tests.test_losses import FROM_STATISTICS, INTEGER_LABEL_LOSSES, PROBABILITY_LABEL_LOSSES
from tests.test_normalizers import NORMALIZERS


def check_second_order(f, args):
    """First order in both modes, second order (reverse over reverse) against finite
    differences; forward over forward would double the compile time for no new code path."""
    f = jax.jit(f)
    check_grads(f, args, order=1, modes=("fwd",))
    check_grads(f, args, order=2, modes=("rev",))


def data(seed=0, batch=3, num_classes=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, num_classes)) * 1.5
    labels = rng.integers(0, num_classes, batch).astype(np.int32)
    mask = rng.random((batch, num_classes)) < 0.7
    mask[np.arange(batch), labels] = True
    return logits, labels, mask


@pytest.mark.parametrize("name", ["softmax", "taylor2", "spherical"])  # taylor6 differs only in order
def test_normalizer_gradients_of_second_order(name, x64):
    """With a partial mask: masked and unmasked entries are both exercised."""
    normalize, log_normalize, kwargs, _ = NORMALIZERS[name]
    logits, _, mask = data()
    weights = np.random.default_rng(1).normal(size=logits.shape)

    def weighted(f):  # a scalar that sees every unmasked output
        return lambda x: jnp.sum(jnp.where(mask, f(x, where=mask, **kwargs), 0) * weights)

    check_second_order(weighted(normalize), (logits,))
    check_second_order(weighted(log_normalize), (logits,))


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_integer_label_loss_gradients_of_second_order(name, x64):
    loss, kwargs, _ = INTEGER_LABEL_LOSSES[name]
    logits, labels, mask = data(seed=2)
    check_second_order(lambda x: loss(x, labels, where=mask, **kwargs), (logits,))


@pytest.mark.parametrize("name", PROBABILITY_LABEL_LOSSES)
def test_probability_label_loss_gradients_of_second_order(name, x64):
    loss, kwargs, _, _ = PROBABILITY_LABEL_LOSSES[name]
    logits, _, mask = data(seed=3)
    labels = np.random.default_rng(4).dirichlet(np.ones(5), 3)
    check_second_order(lambda x, y: loss(x, y, where=mask, **kwargs), (logits, labels))


@pytest.mark.parametrize("name", FROM_STATISTICS)
def test_losses_on_statistics_gradients_of_second_order(name, x64):
    on_statistics, kwargs = FROM_STATISTICS[name]
    logits, labels, _ = data(seed=5)
    stats = tuple(np.asarray(v) for v in softfam.spherical_statistics(logits, labels))
    check_grads(jax.jit(lambda *s: on_statistics(*s, **kwargs)), stats[:3] + (np.full(3, 5.0),), order=2,
                modes=("fwd", "rev"))


def test_softmax_cross_entropy_gradient_is_probabilities_minus_target(x64):
    logits, labels, _ = data(seed=6, num_classes=7)
    grads = jax.grad(lambda x: softfam.softmax_cross_entropy_with_integer_labels(x, labels).sum())(logits)
    expected = ref.probabilities(ref.exp_score, logits) - ref.one_hot(labels, 7)
    np.testing.assert_allclose(grads, expected, rtol=1e-12, atol=1e-14)


def test_log_taylor_gradient_is_bounded_by_one(x64):
    """d/dx log T_2(x) = 2u / (u^2 + 1) with u = 1 + x, so |d/dx log T_2| <= 1.

    With the pair [x, 0], log p_0 - log p_1 = log T_2(x) - log T_2(0) = log T_2(x).
    """
    x = np.linspace(-30, 30, 6001)
    pairs = np.stack([x, np.zeros_like(x)], -1)

    def log_taylor(pair):
        log_probs = softfam.log_taylor_softmax(pair)
        return log_probs[0] - log_probs[1]

    grads = jax.jit(jax.vmap(jax.grad(log_taylor)))(pairs)[:, 0]
    u = 1 + x
    np.testing.assert_allclose(grads, 2 * u / (u * u + 1), rtol=1e-9, atol=1e-12)
    assert np.abs(grads).max() <= 1 + 1e-12


@pytest.mark.parametrize("huge", [3e38, np.inf])
@pytest.mark.parametrize("name", NORMALIZERS)
def test_masked_huge_inputs_get_exactly_zero_gradient_in_normalizers(name, huge):
    normalize, log_normalize, kwargs, _ = NORMALIZERS[name]
    x = np.array([[0.5, huge, -1.0, 2.0], [huge, huge, -huge, huge]], np.float32)
    mask = np.array([[True, False, True, True], [False, False, False, False]])
    for f in (normalize, log_normalize):
        grads = np.asarray(jax.grad(lambda v: jnp.sum(jnp.where(mask, f(v, where=mask, **kwargs), 0)))(x))
        assert np.isfinite(grads).all()
        np.testing.assert_array_equal(grads[~mask], 0.0)


@pytest.mark.parametrize("huge", [3e38, np.inf])
@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_masked_huge_inputs_get_exactly_zero_gradient_in_losses(name, huge):
    loss, kwargs, _ = INTEGER_LABEL_LOSSES[name]
    x = np.array([[0.5, huge, -1.0, 2.0], [huge, huge, -huge, huge]], np.float32)
    mask = np.array([[True, False, True, True], [False, False, False, False]])
    labels = np.array([3, 0], np.int32)
    values, grads = jax.value_and_grad(lambda v: jnp.sum(loss(v, labels, where=mask, **kwargs)))(x)
    assert np.isfinite(values)
    assert np.isfinite(grads).all()
    np.testing.assert_array_equal(np.asarray(grads)[~mask], 0.0)


@pytest.mark.parametrize("name", PROBABILITY_LABEL_LOSSES)
def test_masked_huge_inputs_get_exactly_zero_gradient_in_probability_label_losses(name):
    loss, kwargs, _, _ = PROBABILITY_LABEL_LOSSES[name]
    x = np.array([[0.5, 3e38, -1.0, 2.0]], np.float32)
    mask = np.array([[True, False, True, True]])
    labels = np.array([[0.2, 0.0, 0.3, 0.5]], np.float32)
    grads = np.asarray(jax.grad(lambda v: jnp.sum(loss(v, labels, where=mask, **kwargs)))(x))
    assert np.isfinite(grads).all() and grads[0, 1] == 0.0


@pytest.mark.parametrize("name", PROBABILITY_LABEL_LOSSES)
def test_one_hot_and_integer_label_gradients_agree(name, x64):
    loss, kwargs, _, twin = PROBABILITY_LABEL_LOSSES[name]
    integer_loss = INTEGER_LABEL_LOSSES[twin][0]
    logits, labels, mask = data(seed=7)
    one_hot_grads = jax.grad(lambda x: loss(x, ref.one_hot(labels, 5), where=mask, **kwargs).sum())(logits)
    integer_grads = jax.grad(lambda x: integer_loss(x, labels, where=mask, **kwargs).sum())(logits)
    np.testing.assert_allclose(one_hot_grads, integer_grads, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_forward_and_reverse_jacobians_agree_and_scan_matches(name, x64):
    loss, kwargs, _ = INTEGER_LABEL_LOSSES[name]
    logits, labels, _ = data(seed=8)
    per_example = lambda x: loss(x, labels, **kwargs)  # noqa: E731
    np.testing.assert_allclose(jax.jacfwd(per_example)(logits), jax.jacrev(per_example)(logits), rtol=1e-10, atol=1e-12)

    def step(total, example):
        x, y = example
        return total + loss(x, y, **kwargs), None

    scanned, _ = jax.lax.scan(step, jnp.zeros((), jnp.float64), (jnp.asarray(logits), jnp.asarray(labels)))
    np.testing.assert_allclose(scanned, per_example(logits).sum(), rtol=1e-12)
