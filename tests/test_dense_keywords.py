"""The LLM-stack keywords on the dense softmax integer-label loss, against a NumPy float64
reference written here, and against the linear loss of ``hidden @ weights + bias``: the soft
cap ``c tanh(o / c)``, the penalty ``w (log Z)^2`` and the returned ``log Z``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softfam

SCORES = {"softmax": lambda x: x}  # log f(x) in float64, the member's score
DENSE = {"softmax": softfam.softmax_cross_entropy_with_integer_labels}
LINEAR = {"softmax": softfam.linear_softmax_cross_entropy_with_integer_labels}


def reference(member, logits, labels, cap=None, penalty=0.0, included=None):
    """(loss, log Z) per example in float64; excluded classes take no part."""
    x = np.asarray(logits, np.float64)
    if cap is not None:
        x = cap * np.tanh(x / cap)
    log_f = SCORES[member](x)
    if included is not None:
        log_f = np.where(included, log_f, -np.inf)
    log_z = np.log(np.sum(np.exp(log_f), -1))
    loss = log_z - log_f[np.arange(len(labels)), labels] + penalty * log_z ** 2
    return loss, log_z


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(5, 7)) * 4, rng.integers(0, 7, 5)


@pytest.mark.parametrize("member", SCORES)
@pytest.mark.parametrize("cap, penalty", [(None, 0.3), (2.5, 0.0), (2.5, 0.1)])
def test_the_keywords_match_the_float64_reference(x64, member, cap, penalty):
    logits, labels = data()
    loss, log_z = DENSE[member](jnp.asarray(logits), jnp.asarray(labels), logit_soft_cap=cap,
                                log_normalizer_penalty=penalty, return_log_normalizer=True)
    expected_loss, expected_log_z = reference(member, logits, labels, cap, penalty)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-10)
    np.testing.assert_allclose(log_z, expected_log_z, rtol=1e-10)


@pytest.mark.parametrize("member", SCORES)
def test_an_excluded_class_stays_excluded_after_the_cap(x64, member):
    logits, labels = data(1)
    logits[:, 6] = -np.inf  # excluded: the cap must not turn it into -c
    labels = np.minimum(labels, 5)
    loss, log_z = DENSE[member](jnp.asarray(logits), jnp.asarray(labels), logit_soft_cap=2.0,
                                return_log_normalizer=True)
    included = np.arange(7) < 6
    expected_loss, expected_log_z = reference(member, np.where(included, logits, 0), labels, 2.0,
                                              included=included)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-10)
    np.testing.assert_allclose(log_z, expected_log_z, rtol=1e-10)
    gradient = jax.grad(lambda x: DENSE[member](x, jnp.asarray(labels), logit_soft_cap=2.0).sum())(
        jnp.asarray(logits))
    assert np.all(np.asarray(gradient)[:, 6] == 0)


@pytest.mark.parametrize("member", SCORES)
def test_the_dense_loss_and_the_linear_loss_agree_with_every_keyword(x64, member):
    rng = np.random.default_rng(2)
    hidden, weights, bias = (jnp.asarray(rng.normal(size=s)) for s in ((6, 4), (4, 9), (9,)))
    labels = jnp.asarray(rng.integers(0, 9, 6))
    keywords = {"log_normalizer_penalty": 0.2, "return_log_normalizer": True, "logit_soft_cap": 3.0}

    def dense(hidden, weights, bias):
        loss, log_z = DENSE[member](hidden @ weights + bias[None, :], labels, **keywords)
        return loss.sum(), log_z

    def linear(hidden, weights, bias):
        loss, log_z = LINEAR[member](hidden, weights, labels, bias, **keywords)
        return loss.sum(), log_z

    (d_value, d_log_z), d_grads = jax.value_and_grad(dense, (0, 1, 2), has_aux=True)(hidden, weights, bias)
    (l_value, l_log_z), l_grads = jax.value_and_grad(linear, (0, 1, 2), has_aux=True)(hidden, weights, bias)
    np.testing.assert_allclose(l_value, d_value, rtol=1e-10)
    np.testing.assert_allclose(l_log_z, d_log_z, rtol=1e-10)
    for a, b in zip(l_grads, d_grads):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_a_cap_that_is_not_positive_is_refused():
    with pytest.raises(ValueError, match="logit_soft_cap must be > 0"):
        softfam.softmax_cross_entropy_with_integer_labels(jnp.ones((2, 3)), jnp.array([0, 1]),
                                                          logit_soft_cap=0.0)


def test_a_masked_example_has_log_z_zero_and_loss_zero():
    loss, log_z = softfam.softmax_cross_entropy_with_integer_labels(
        jnp.ones((2, 3)), jnp.array([0, 1]), where=jnp.array([True, False]),
        log_normalizer_penalty=0.5, return_log_normalizer=True)
    assert float(loss[1]) == 0.0 and float(log_z[1]) == 0.0
    assert float(log_z[0]) == pytest.approx(1 + np.log(3))  # log(3 e)
    assert float(loss[0]) == pytest.approx(np.log(3) + 0.5 * (1 + np.log(3)) ** 2)
