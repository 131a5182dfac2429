"""A new member of the family, defined here alone: ``f(x) = (1 + x)^2 + 1``.

Writing its score and its log-score is all it takes: the shared path gives the probabilities,
log-probabilities, log-partition, both losses and their derivatives, masks, -inf exclusions
and huge logits. Each is checked against a NumPy float64 reference written from the formula.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from softfam import _family


def quadratic_score(x):
    """``f(x) = (1 + x)^2 + 1 >= 1``."""
    u = 1 + x
    return u * u + 1


def quadratic_log_score(x):
    """``log f(x) = 2 log m + log((u/m)^2 + 1/m^2)``, ``u = 1 + x``, ``m = max(|u|, 1)``:
    no ``u^2`` that overflows."""
    u = 1 + x
    m = jnp.maximum(jnp.abs(u), 1)
    return 2 * jnp.log(m) + jnp.log((u / m) ** 2 + 1 / (m * m))


QUADRATIC = _family.Member(score=quadratic_score, log_score=quadratic_log_score)


def reference_scores(x):
    x = np.asarray(x, np.float64)
    return (1 + x) ** 2 + 1


def reference_probabilities(x, mask=None):
    f = reference_scores(x)
    if mask is not None:
        f = np.where(mask, f, 0.0)
    return f / f.sum(-1, keepdims=True)


LOGITS = np.random.default_rng(7).normal(size=(5, 6)) * 2
LABELS = np.array([0, 3, 5, 1, 2], np.int32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probabilities_and_log_probabilities_match_the_reference(dtype, x64):
    x = LOGITS.astype(dtype)
    tolerance = {"rtol": 1e-12, "atol": 1e-14} if dtype == np.float64 else {"rtol": 2e-6}
    expected = reference_probabilities(x)
    probs = _family.probabilities(QUADRATIC, x, -1, None)
    assert probs.dtype == dtype
    np.testing.assert_allclose(probs, expected, **tolerance)
    np.testing.assert_allclose(_family.log_probabilities(QUADRATIC, x, -1, None),
                               np.log(expected), **tolerance)
    np.testing.assert_allclose(
        _family.log_partition(QUADRATIC, jnp.asarray(x), None, (1,))[:, 0],
        np.log(reference_scores(x).sum(-1)), **tolerance)


def test_losses_match_the_reference(x64):
    expected = -np.log(reference_probabilities(LOGITS)[np.arange(5), LABELS])
    np.testing.assert_allclose(
        _family.integer_label_nll(QUADRATIC, LOGITS, LABELS, -1, None), expected, rtol=1e-12)
    one_hot = np.eye(6)[LABELS]
    np.testing.assert_allclose(
        _family.cross_entropy(QUADRATIC, LOGITS, one_hot, -1, None), expected, rtol=1e-12)


def test_gradient_of_the_loss_is_the_closed_form(x64):
    """d/dx_i (log Z - log f(x_c)) = f'(x_i) / Z - [i = c] f'(x_c) / f(x_c), f'(x) = 2 (1 + x)."""
    grads = jax.grad(lambda x: jnp.sum(_family.integer_label_nll(QUADRATIC, x, LABELS, -1, None)))(
        LOGITS)
    slopes = 2 * (1 + LOGITS)
    expected = slopes / reference_scores(LOGITS).sum(-1, keepdims=True)
    rows = np.arange(5)
    expected[rows, LABELS] -= slopes[rows, LABELS] / reference_scores(LOGITS)[rows, LABELS]
    np.testing.assert_allclose(grads, expected, rtol=1e-10, atol=1e-14)


def test_derivatives_of_every_output_in_both_modes_and_second_order(x64):
    mask = np.random.default_rng(8).random(LOGITS.shape) < 0.7
    mask[:, 0] = True
    weights = np.random.default_rng(9).normal(size=LOGITS.shape)
    for output in (_family.probabilities, _family.log_probabilities):
        def weighted(x, output=output):
            return jnp.sum(jnp.where(mask, output(QUADRATIC, x, -1, mask), 0) * weights)

        check_grads(jax.jit(weighted), (LOGITS,), order=2, modes=("fwd", "rev"))


def test_masks_and_minus_infinity_exclude_classes_exactly(x64):
    x = LOGITS.copy()
    x[0, 2] = -np.inf
    mask = np.ones(x.shape, bool)
    mask[1, 4] = False
    mask[2] = False  # a fully excluded slice: probabilities 0, log-probabilities -inf
    included = mask & np.isfinite(x)
    probs = np.asarray(_family.probabilities(QUADRATIC, x, -1, mask))
    expected = np.zeros_like(probs)
    rows = included.any(-1)
    expected[rows] = reference_probabilities(np.where(included, x, 0)[rows], included[rows])
    np.testing.assert_allclose(probs, expected, rtol=1e-12, atol=0)
    assert (probs[~included] == 0).all()
    log_probs = np.asarray(_family.log_probabilities(QUADRATIC, x, -1, mask))
    assert (log_probs[~included] == -np.inf).all()
    grads = jax.grad(lambda v: jnp.sum(_family.probabilities(QUADRATIC, v, -1, mask) * x.clip(-3)))(
        np.where(included, x, 1e300))
    assert (grads[~included] == 0).all() and np.isfinite(grads).all()


def test_huge_logits_take_the_log_space_way_and_stay_exact():
    """Scores that overflow float32 (f(3e19) ~ 9e38): the ratios are exact all the same."""
    x = np.array([[3e19, -4e19, 2.0, 0.0], [0.5, -1.0, 2.0, 0.0]], np.float32)
    with np.errstate(over="ignore"):
        assert not np.isfinite(quadratic_score(x).sum())  # the direct sum overflows
    u = 1 + x.astype(np.float64)
    expected = (u * u + 1) / (u * u + 1).sum(-1, keepdims=True)
    np.testing.assert_allclose(_family.probabilities(QUADRATIC, x, -1, None), expected,
                               rtol=1e-5, atol=1e-37)
    np.testing.assert_allclose(_family.log_probabilities(QUADRATIC, x, -1, None), np.log(expected),
                               rtol=1e-5)
