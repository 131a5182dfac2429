"""The LLM-stack keywords on the dense integer-label losses of the normalizer family, against a
NumPy float64 reference written here, and against the linear loss of ``hidden @ weights + bias``
where there is one: the soft cap ``c tanh(o / c)``, the penalty ``w (log Z)^2`` and the returned
``log Z``, for softmax, Taylor softmax (orders 2 and 4), their soft-margin variants and the
spherical softmax."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softfam

EPSILON = 0.05
MARGIN = 0.7


def taylor_score(order):
    return lambda x: sum(x ** j / math.factorial(j) for j in range(order + 1))


SCORES = {  # the member's score f in float64
    "softmax": np.exp,
    "taylor2": taylor_score(2),
    "taylor4": taylor_score(4),
    "spherical": lambda x: x * x + EPSILON,
}
CASES = {  # name: (dense loss, member, margin)
    "softmax": (softfam.softmax_cross_entropy_with_integer_labels, "softmax", 0.0),
    "taylor2": (functools.partial(softfam.taylor_softmax_cross_entropy_with_integer_labels,
                                  order=2), "taylor2", 0.0),
    "taylor4": (functools.partial(softfam.taylor_softmax_cross_entropy_with_integer_labels,
                                  order=4), "taylor4", 0.0),
    "spherical": (functools.partial(softfam.spherical_softmax_cross_entropy_with_integer_labels,
                                    epsilon=EPSILON), "spherical", 0.0),
    "soft_margin_softmax": (
        functools.partial(softfam.soft_margin_softmax_cross_entropy_with_integer_labels,
                          margin=MARGIN), "softmax", MARGIN),
    "soft_margin_taylor2": (
        functools.partial(softfam.soft_margin_taylor_softmax_cross_entropy_with_integer_labels,
                          order=2, margin=MARGIN), "taylor2", MARGIN),
    "soft_margin_taylor4": (
        functools.partial(softfam.soft_margin_taylor_softmax_cross_entropy_with_integer_labels,
                          order=4, margin=MARGIN), "taylor4", MARGIN),
}
LINEAR = {  # name: (linear loss, whether it takes the cap)
    "softmax": (softfam.linear_softmax_cross_entropy_with_integer_labels, True),
    "taylor2": (functools.partial(softfam.linear_taylor_softmax_cross_entropy_with_integer_labels,
                                  order=2), False),
    "taylor4": (functools.partial(softfam.linear_taylor_softmax_cross_entropy_with_integer_labels,
                                  order=4), True),
    "spherical": (functools.partial(
        softfam.linear_spherical_softmax_cross_entropy_with_integer_labels, epsilon=EPSILON),
        False),
}


def dense(name):
    return CASES[name][0]


def reference(name, logits, labels, cap=None, penalty=0.0, included=None):
    """(loss, log Z) per example in float64, ``Z = f(x_c - m) + sum_{j != c} f(x_j)`` the
    normalizer that the loss divides by; excluded classes take no part."""
    _, member, margin = CASES[name]
    f = SCORES[member]
    x = np.asarray(logits, np.float64)
    if cap is not None:
        x = cap * np.tanh(x / cap)
    rows = np.arange(len(labels))
    target_score = f(x[rows, labels] - margin)
    scores = f(x)
    if included is not None:
        scores = np.where(included, scores, 0)
    scores[rows, labels] = target_score
    log_z = np.log(np.sum(scores, -1))
    return log_z - np.log(target_score) + penalty * log_z ** 2, log_z


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(5, 7)) * 4, rng.integers(0, 7, 5)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("cap, penalty", [(None, 0.3), (2.5, 0.0), (2.5, 0.1)])
def test_the_keywords_match_the_float64_reference(x64, name, cap, penalty):
    logits, labels = data()
    loss, log_z = dense(name)(jnp.asarray(logits), jnp.asarray(labels), logit_soft_cap=cap,
                              log_normalizer_penalty=penalty, return_log_normalizer=True)
    expected_loss, expected_log_z = reference(name, logits, labels, cap, penalty)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-10)
    np.testing.assert_allclose(log_z, expected_log_z, rtol=1e-10)
    plain = dense(name)(jnp.asarray(logits), jnp.asarray(labels), logit_soft_cap=cap,
                        log_normalizer_penalty=penalty)
    np.testing.assert_array_equal(plain, loss)


@pytest.mark.parametrize("name", CASES)
def test_the_gradient_of_the_capped_penalized_loss_matches_finite_differences(x64, name):
    logits, labels = data(3)
    cap, penalty = 2.5, 0.1

    def objective(x):  # the loss and log Z, both differentiated
        loss, log_z = dense(name)(x, jnp.asarray(labels), logit_soft_cap=cap,
                                  log_normalizer_penalty=penalty, return_log_normalizer=True)
        return jnp.sum(loss) + 0.5 * jnp.sum(log_z)

    def reference_objective(x):
        loss, log_z = reference(name, x, labels, cap, penalty)
        return np.sum(loss) + 0.5 * np.sum(log_z)

    gradient = jax.grad(objective)(jnp.asarray(logits))
    step = 1e-6
    expected = np.zeros_like(logits)
    for index in np.ndindex(logits.shape):
        shift = np.zeros_like(logits)
        shift[index] = step
        expected[index] = (reference_objective(logits + shift)
                           - reference_objective(logits - shift)) / (2 * step)
    np.testing.assert_allclose(gradient, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", CASES)
def test_an_excluded_class_stays_excluded_after_the_cap(x64, name):
    logits, labels = data(1)
    logits[:, 6] = -np.inf  # excluded: the cap must not turn it into -c
    labels = np.minimum(labels, 5)
    loss, log_z = dense(name)(jnp.asarray(logits), jnp.asarray(labels), logit_soft_cap=2.0,
                              return_log_normalizer=True)
    included = np.arange(7) < 6
    expected_loss, expected_log_z = reference(name, np.where(included, logits, 0), labels, 2.0,
                                              included=included)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-10)
    np.testing.assert_allclose(log_z, expected_log_z, rtol=1e-10)
    gradient = jax.grad(lambda x: dense(name)(x, jnp.asarray(labels), logit_soft_cap=2.0).sum())(
        jnp.asarray(logits))
    assert np.all(np.isfinite(np.asarray(gradient)))
    assert np.all(np.asarray(gradient)[:, 6] == 0)


@pytest.mark.parametrize("name", CASES)
def test_jit_and_vmap_give_the_eager_numbers(name):
    rng = np.random.default_rng(4)
    logits = jnp.asarray(rng.normal(size=(3, 4, 7)) * 3, jnp.float32)
    labels = jnp.asarray(rng.integers(0, 7, (3, 4)))

    def loss(logits, labels, cap, penalty):
        return dense(name)(logits, labels, logit_soft_cap=cap, log_normalizer_penalty=penalty,
                           return_log_normalizer=True)

    cap, penalty = jnp.float32(2.5), jnp.float32(0.1)
    eager = loss(logits, labels, cap, penalty)
    for transformed in (jax.jit(loss)(logits, labels, cap, penalty),
                        jax.vmap(loss, (0, 0, None, None))(logits, labels, cap, penalty)):
        for value, expected in zip(transformed, eager):
            np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", LINEAR)
def test_the_dense_loss_and_the_linear_loss_agree_with_every_keyword(x64, name):
    rng = np.random.default_rng(2)
    hidden, weights, bias = (jnp.asarray(rng.normal(size=s)) for s in ((6, 4), (4, 9), (9,)))
    labels = jnp.asarray(rng.integers(0, 9, 6))
    linear_loss, takes_the_cap = LINEAR[name]
    keywords = {"log_normalizer_penalty": 0.2, "return_log_normalizer": True}
    if takes_the_cap:
        keywords["logit_soft_cap"] = 3.0

    def dense_loss(hidden, weights, bias):
        loss, log_z = dense(name)(hidden @ weights + bias[None, :], labels, **keywords)
        return loss.sum(), log_z

    def linear(hidden, weights, bias):
        loss, log_z = linear_loss(hidden, weights, labels, bias, **keywords)
        return loss.sum(), log_z

    (d_value, d_log_z), d_grads = jax.value_and_grad(dense_loss, (0, 1, 2), has_aux=True)(
        hidden, weights, bias)
    (l_value, l_log_z), l_grads = jax.value_and_grad(linear, (0, 1, 2), has_aux=True)(
        hidden, weights, bias)
    np.testing.assert_allclose(l_value, d_value, rtol=1e-10)
    np.testing.assert_allclose(l_log_z, d_log_z, rtol=1e-10)
    for a, b in zip(l_grads, d_grads):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss, name", [
    (softfam.taylor_softmax_cross_entropy_from_statistics, "taylor2"),
    (functools.partial(softfam.spherical_softmax_cross_entropy_from_statistics, epsilon=EPSILON),
     "spherical"),
])
def test_the_statistics_losses_give_log_z_and_the_penalty(x64, loss, name):
    logits, labels = data(5)
    statistics = (logits[np.arange(5), labels], logits.sum(-1), (logits ** 2).sum(-1), 7.0)
    value, log_z = loss(*(jnp.asarray(s) for s in statistics), log_normalizer_penalty=0.4,
                        return_log_normalizer=True)
    expected_loss, expected_log_z = reference(name, logits, labels, penalty=0.4)
    np.testing.assert_allclose(value, expected_loss, rtol=1e-10)
    np.testing.assert_allclose(log_z, expected_log_z, rtol=1e-10)


@pytest.mark.parametrize("name", CASES)
def test_a_cap_that_is_not_positive_is_refused(name):
    with pytest.raises(ValueError, match="logit_soft_cap must be > 0"):
        dense(name)(jnp.ones((2, 3)), jnp.array([0, 1]), logit_soft_cap=0.0)


@pytest.mark.parametrize("name", CASES)
def test_a_masked_example_has_log_z_zero_and_loss_zero(name):
    loss, log_z = dense(name)(jnp.ones((2, 3)), jnp.array([0, 1]), where=jnp.array([True, False]),
                              log_normalizer_penalty=0.5, return_log_normalizer=True)
    assert float(loss[1]) == 0.0 and float(log_z[1]) == 0.0
    expected_loss, expected_log_z = reference(name, np.ones((1, 3)), np.array([0]), penalty=0.5)
    assert float(log_z[0]) == pytest.approx(expected_log_z[0])
    assert float(loss[0]) == pytest.approx(expected_loss[0])


@pytest.mark.parametrize("name", ["taylor2", "spherical"])
def test_a_non_finite_logit_gives_nan_for_its_example_alone(name):
    logits = jnp.array([[1.0, jnp.nan, 0.5], [0.2, -1.0, 2.0]])
    loss, log_z = dense(name)(logits, jnp.array([0, 2]), log_normalizer_penalty=0.5,
                              return_log_normalizer=True)
    assert np.isnan(float(loss[0])) and np.isnan(float(log_z[0]))
    assert np.isfinite(float(loss[1])) and np.isfinite(float(log_z[1]))


@pytest.mark.parametrize("name", [name for name in CASES if CASES[name][2]])
def test_a_soft_margin_loss_with_an_excluded_target_returns_the_plain_log_z(x64, name):
    """The target at -inf has score 0 with or without the margin: the loss is +inf and log Z is
    that of the included classes."""
    logits, labels = data(2)
    logits[0, labels[0]] = -np.inf
    loss, log_z = dense(name)(jnp.asarray(logits), jnp.asarray(labels), return_log_normalizer=True)
    member = SCORES[CASES[name][1]]
    included = np.isfinite(logits[0])
    assert loss[0] == np.inf
    np.testing.assert_allclose(log_z[0], np.log(np.sum(member(logits[0][included]))), rtol=1e-12)
