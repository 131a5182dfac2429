"""The losses against NumPy float64 references written from their definitions on the full
logit vector, against optax, and against each other (integer vs one-hot labels, dense vs
statistics); masks, dtypes, axes, invalid labels and bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import softfam
from tests import reference as ref

INTEGER_LABEL_LOSSES = {
    "softmax": (softfam.softmax_cross_entropy_with_integer_labels, {},
                functools.partial(ref.integer_label_nll, ref.exp_score)),
    "taylor2": (softfam.taylor_softmax_cross_entropy_with_integer_labels, {"order": 2},
                functools.partial(ref.integer_label_nll, ref.taylor_score(2))),
    "taylor4": (softfam.taylor_softmax_cross_entropy_with_integer_labels, {"order": 4},
                functools.partial(ref.integer_label_nll, ref.taylor_score(4))),
    "spherical": (softfam.spherical_softmax_cross_entropy_with_integer_labels, {"epsilon": 0.05},
                  functools.partial(ref.integer_label_nll, ref.spherical_score(0.05))),
    "soft_margin_softmax": (
        softfam.soft_margin_softmax_cross_entropy_with_integer_labels, {"margin": 0.6},
        functools.partial(ref.integer_label_nll, ref.exp_score, margin=0.6)),
    "soft_margin_taylor6": (
        softfam.soft_margin_taylor_softmax_cross_entropy_with_integer_labels,
        {"order": 6, "margin": 0.6},
        functools.partial(ref.integer_label_nll, ref.taylor_score(6), margin=0.6)),
    "squared_error": (softfam.squared_error_with_integer_labels, {}, ref.squared_error),
    "z_loss": (softfam.z_loss_with_integer_labels, {"a": 1.5, "b": 1.0},
               functools.partial(ref.z_loss, a=1.5, b=1.0)),
    "upper_bound": (softfam.softmax_cross_entropy_upper_bound_with_integer_labels, {"xi": 0.7},
                    functools.partial(ref.softmax_upper_bound, xi=0.7)),
}

PROBABILITY_LABEL_LOSSES = {  # name: (one-hot loss, kwargs, score, integer-label twin)
    "softmax": (softfam.softmax_cross_entropy, {}, ref.exp_score, "softmax"),
    "taylor2": (softfam.taylor_softmax_cross_entropy, {"order": 2}, ref.taylor_score(2), "taylor2"),
    "taylor4": (softfam.taylor_softmax_cross_entropy, {"order": 4}, ref.taylor_score(4), "taylor4"),
    "spherical": (softfam.spherical_softmax_cross_entropy, {"epsilon": 0.05},
                  ref.spherical_score(0.05), "spherical"),
}

FROM_STATISTICS = {  # dense loss name: (loss on statistics, kwargs)
    "taylor2": (softfam.taylor_softmax_cross_entropy_from_statistics, {}),
    "spherical": (softfam.spherical_softmax_cross_entropy_from_statistics, {"epsilon": 0.05}),
    "squared_error": (softfam.squared_error_from_statistics, {}),
    "z_loss": (softfam.z_loss_from_statistics, {"a": 1.5, "b": 1.0}),
    "upper_bound": (softfam.softmax_cross_entropy_upper_bound_from_statistics, {"xi": 0.7}),
}

TOLERANCE = {
    jnp.float16: (5e-3, 5e-3),
    jnp.bfloat16: (4e-2, 4e-2),
    jnp.float32: (1e-5, 1e-5),
    jnp.float64: (1e-11, 1e-11),
}


def problem(batch=6, num_classes=10, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, num_classes)) * scale
    labels = rng.integers(0, num_classes, batch)
    return logits.astype(np.float32), labels.astype(np.int32)


def mask_keeping_targets(labels, num_classes, seed=1, all_masked_row=1):
    mask = np.random.default_rng(seed).random((len(labels), num_classes)) < 0.6
    mask[np.arange(len(labels)), labels] = True
    mask[all_masked_row] = False
    return mask


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_integer_label_losses_match_reference(name):
    loss, kwargs, reference = INTEGER_LABEL_LOSSES[name]
    logits, labels = problem()
    values = loss(logits, labels, **kwargs)
    assert values.shape == (6,) and values.dtype == jnp.float32
    np.testing.assert_allclose(values, reference(logits, labels), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_integer_label_losses_under_jit_and_vmap(name):
    loss, kwargs, reference = INTEGER_LABEL_LOSSES[name]
    logits, labels = problem(seed=2)
    expected = reference(logits, labels)
    jitted = jax.jit(lambda x, y: loss(x, y, **kwargs))
    mapped = jax.vmap(lambda x, y: loss(x, y, **kwargs))
    np.testing.assert_allclose(jitted(logits, labels), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mapped(logits, labels), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_integer_label_losses_with_a_class_mask(name):
    loss, kwargs, reference = INTEGER_LABEL_LOSSES[name]
    logits, labels = problem(seed=3)
    mask = mask_keeping_targets(labels, 10)
    values = np.asarray(loss(logits, labels, where=mask, **kwargs))
    assert values[1] == 0.0  # the fully masked example
    np.testing.assert_allclose(values, reference(logits, labels, mask=mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_integer_label_losses_with_a_per_example_mask(name):
    loss, kwargs, _ = INTEGER_LABEL_LOSSES[name]
    logits, labels = problem(seed=4)
    keep = np.array([True, False, True, True, False, True])
    values = np.asarray(loss(logits, labels, where=keep, **kwargs))
    np.testing.assert_array_equal(values[~keep], 0.0)
    np.testing.assert_allclose(values[keep], np.asarray(loss(logits, labels, **kwargs))[keep], rtol=1e-6)


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
def test_integer_label_losses_keep_the_dtype(name, dtype, x64):
    loss, kwargs, reference = INTEGER_LABEL_LOSSES[name]
    logits, labels = problem(seed=5)
    logits = jnp.asarray(logits, dtype)
    values = loss(logits, labels, **kwargs)
    assert values.dtype == dtype
    rtol, atol = TOLERANCE[dtype]
    expected = reference(np.asarray(logits, np.float64), labels)
    np.testing.assert_allclose(np.asarray(values, np.float64), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_integer_labels_index_flattened_tuple_axes(name):
    loss, kwargs, reference = INTEGER_LABEL_LOSSES[name]
    logits = np.random.default_rng(6).normal(size=(3, 2, 4, 5)).astype(np.float32)  # classes: axes 1, 3
    labels = np.array([[0, 7, 9, 3], [5, 1, 2, 8], [4, 6, 0, 9]], np.int32)  # flat index into (2, 5)
    values = loss(logits, labels, axis=(1, 3), **kwargs)
    flat = logits.transpose(0, 2, 1, 3).reshape(12, 10)
    np.testing.assert_allclose(values.reshape(12), reference(flat, labels.reshape(12)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_integer_labels_along_a_leading_axis(name):
    loss, kwargs, reference = INTEGER_LABEL_LOSSES[name]
    logits, labels = problem(seed=7)
    np.testing.assert_allclose(
        loss(logits.T, labels, axis=0, **kwargs), reference(logits, labels), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", PROBABILITY_LABEL_LOSSES)
def test_probability_label_losses_match_reference(name):
    loss, kwargs, score, _ = PROBABILITY_LABEL_LOSSES[name]
    logits, _ = problem(seed=8)
    labels = np.random.default_rng(9).dirichlet(np.ones(10), 6).astype(np.float32)
    expected = -np.sum(labels * ref.log_probabilities(score, logits), -1)
    np.testing.assert_allclose(loss(logits, labels, **kwargs), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", PROBABILITY_LABEL_LOSSES)
def test_one_hot_and_integer_labels_agree(name):
    loss, kwargs, _, twin = PROBABILITY_LABEL_LOSSES[name]
    integer_loss = INTEGER_LABEL_LOSSES[twin][0]
    logits, labels = problem(seed=10)
    mask = mask_keeping_targets(labels, 10, seed=11)
    one_hot = ref.one_hot(labels, 10).astype(np.float32)
    np.testing.assert_allclose(
        loss(logits, one_hot, where=mask, **kwargs),
        integer_loss(logits, labels, where=mask, **kwargs),
        rtol=1e-5, atol=1e-6,
    )


@pytest.mark.parametrize("name", PROBABILITY_LABEL_LOSSES)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float64])
def test_probability_label_losses_keep_the_dtype(name, dtype, x64):
    loss, kwargs, score, _ = PROBABILITY_LABEL_LOSSES[name]
    logits, labels = problem(seed=12)
    logits = jnp.asarray(logits, dtype)
    one_hot = jnp.asarray(ref.one_hot(labels, 10), dtype)
    values = loss(logits, one_hot, **kwargs)
    assert values.dtype == dtype
    expected = -np.sum(ref.one_hot(labels, 10) * ref.log_probabilities(score, np.asarray(logits, np.float64)), -1)
    np.testing.assert_allclose(np.asarray(values, np.float64), expected, *TOLERANCE[dtype])


def test_softmax_losses_agree_with_optax():
    logits, labels = problem(batch=16, num_classes=12, seed=13, scale=4.0)
    mask = mask_keeping_targets(labels, 12, seed=14)
    one_hot = ref.one_hot(labels, 12).astype(np.float32)
    for where in (None, mask):
        np.testing.assert_allclose(
            softfam.softmax_cross_entropy_with_integer_labels(logits, labels, where=where),
            optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels, where=where),
            rtol=1e-6, atol=1e-6,
        )
        np.testing.assert_allclose(
            softfam.softmax_cross_entropy(logits, one_hot, where=where),
            optax.losses.softmax_cross_entropy(logits, one_hot, where=where),
            rtol=1e-6, atol=1e-6,
        )
    cube = logits.reshape(16, 3, 4)
    np.testing.assert_allclose(
        softfam.softmax_cross_entropy_with_integer_labels(cube, labels, axis=(1, 2)),
        optax.losses.softmax_cross_entropy_with_integer_labels(cube, labels, axis=(1, 2)),
        rtol=1e-6, atol=1e-6,
    )


@pytest.mark.parametrize(
    "soft_margin,plain,kwargs",
    [
        (softfam.soft_margin_softmax_cross_entropy_with_integer_labels,
         softfam.softmax_cross_entropy_with_integer_labels, {}),
        (softfam.soft_margin_taylor_softmax_cross_entropy_with_integer_labels,
         softfam.taylor_softmax_cross_entropy_with_integer_labels, {"order": 4}),
    ],
)
def test_soft_margin_with_zero_margin_is_the_plain_loss_and_a_margin_raises_it(soft_margin, plain, kwargs):
    """A margin lowers the target's score where the score increases: T_n only right of its minimum."""
    logits, labels = problem(seed=15)
    logits[np.arange(6), labels] = np.abs(logits[np.arange(6), labels])
    np.testing.assert_allclose(soft_margin(logits, labels, **kwargs), plain(logits, labels, **kwargs), rtol=1e-6)
    assert np.all(
        np.asarray(soft_margin(logits, labels, margin=0.5, **kwargs)) > np.asarray(plain(logits, labels, **kwargs))
    )


# --- The spherical family. -------------------------------------------------------------------


def test_spherical_statistics_match_numpy():
    logits, labels = problem(seed=16)
    mask = mask_keeping_targets(labels, 10, seed=17)
    stats = [np.asarray(v) for v in softfam.spherical_statistics(logits, labels, where=mask)]
    stats = softfam.SphericalStatistics(*stats)
    x = np.where(mask, logits.astype(np.float64), 0.0)
    np.testing.assert_allclose(stats.target_logit[[0, 2, 3, 4, 5]], logits[[0, 2, 3, 4, 5], labels[[0, 2, 3, 4, 5]]])
    assert np.isnan(stats.target_logit[1])  # its target is masked: row 1 is fully masked
    np.testing.assert_allclose(stats.logit_sum, x.sum(-1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats.logit_square_sum, (x * x).sum(-1), rtol=1e-6)
    np.testing.assert_array_equal(stats.num_classes, mask.sum(-1))


def test_spherical_statistics_of_float16_logits_are_float32_and_do_not_overflow():
    logits = jnp.full((2, 100), 300.0, jnp.float16)  # q = 9e6 > float16 max
    stats = softfam.spherical_statistics(logits, jnp.array([0, 1]))
    assert stats.logit_square_sum.dtype == jnp.float32
    np.testing.assert_allclose(stats.logit_square_sum, 9e6, rtol=1e-6)


@pytest.mark.parametrize("name", FROM_STATISTICS)
def test_dense_spherical_losses_are_the_losses_on_statistics(name):
    on_statistics, kwargs = FROM_STATISTICS[name]
    dense, dense_kwargs, _ = INTEGER_LABEL_LOSSES[name]
    logits, labels = problem(seed=18)
    stats = softfam.spherical_statistics(logits, labels)
    np.testing.assert_array_equal(dense(logits, labels, **dense_kwargs), on_statistics(*stats, **kwargs))


@pytest.mark.parametrize("name", FROM_STATISTICS)
def test_losses_on_statistics_accept_a_scalar_number_of_classes(name, x64):
    on_statistics, kwargs = FROM_STATISTICS[name]
    _, _, reference = INTEGER_LABEL_LOSSES[name]
    logits, labels = problem(seed=19)
    x = logits.astype(np.float64)
    values = on_statistics(x[np.arange(6), labels], x.sum(-1), (x * x).sum(-1), 10, **kwargs)
    np.testing.assert_allclose(values, reference(x, labels), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("xi", [0.01, 0.5, 1.0, 3.0, 10.0])
@pytest.mark.parametrize("num_classes", [2, 3, 10, 1000])
def test_upper_bound_is_above_the_softmax_loss(xi, num_classes, x64):
    for seed in range(5):
        logits, labels = problem(batch=32, num_classes=num_classes, seed=seed, scale=3.0 * seed)
        logits = logits.astype(np.float64)
        bound = np.asarray(softfam.softmax_cross_entropy_upper_bound_with_integer_labels(logits, labels, xi=xi))
        assert np.all(bound >= ref.logsumexp_nll(logits, labels) - 1e-12)


def test_z_loss_is_shift_and_scale_invariant():
    logits, labels = problem(seed=20)
    values = softfam.z_loss_with_integer_labels(logits, labels)
    np.testing.assert_allclose(softfam.z_loss_with_integer_labels(3.0 * logits + 7.0, labels), values, rtol=1e-5)


def test_z_loss_with_all_logits_equal_uses_a_zero_score():
    values = softfam.z_loss_with_integer_labels(jnp.full((2, 5), 4.0), jnp.array([0, 3]), a=1.0, b=2.0)
    np.testing.assert_allclose(values, np.logaddexp(0.0, 2.0), rtol=1e-6)


# --- Invalid labels and bad input. ----------------------------------------------------------


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_out_of_range_or_masked_labels_give_nan_under_jit_and_no_gradient(name):
    loss, kwargs, reference = INTEGER_LABEL_LOSSES[name]
    logits, labels = problem(seed=21)
    labels[0], labels[2] = -1, 10
    mask = np.ones_like(logits, bool)
    mask[3, labels[3]] = False  # the target of example 3 is masked
    total = jax.jit(lambda x: jnp.sum(jnp.where(jnp.isnan(l := loss(x, labels, where=mask, **kwargs)), 0, l)))
    values = np.asarray(jax.jit(lambda x: loss(x, labels, where=mask, **kwargs))(logits))
    assert np.isnan(values[[0, 2, 3]]).all()
    good = [1, 4, 5]
    np.testing.assert_allclose(values[good], reference(logits[good], labels[good]), rtol=1e-5, atol=1e-5)
    grads = np.asarray(jax.grad(total)(logits))
    assert np.isfinite(grads).all()
    np.testing.assert_array_equal(grads[[0, 2, 3]], 0.0)


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
def test_integer_label_losses_reject_bad_arguments(name):
    loss, kwargs, _ = INTEGER_LABEL_LOSSES[name]
    logits, labels = problem()
    with pytest.raises(TypeError, match="logits must have a floating dtype"):
        loss(labels.reshape(2, 3), labels[:2], **kwargs)
    with pytest.raises(TypeError, match="labels must have an integer dtype"):
        loss(logits, labels.astype(np.float32), **kwargs)
    with pytest.raises(ValueError, match=r"labels of shape \(5,\) do not match logits of shape \(6, 10\)"):
        loss(logits, labels[:5], **kwargs)
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        loss(logits, labels, axis=2, **kwargs)


@pytest.mark.parametrize("name", PROBABILITY_LABEL_LOSSES)
def test_probability_label_losses_reject_bad_arguments(name):
    loss, kwargs, _, _ = PROBABILITY_LABEL_LOSSES[name]
    logits, labels = problem()
    with pytest.raises(TypeError, match="labels \\(probabilities\\) must have a floating dtype"):
        loss(logits, ref.one_hot(labels, 10).astype(np.int32), **kwargs)
    with pytest.raises(ValueError, match=r"labels of shape \(6, 9\) must have the logits' shape \(6, 10\)"):
        loss(logits, np.zeros((6, 9), np.float32), **kwargs)


@pytest.mark.parametrize(
    "loss,kwargs,message",
    [
        (softfam.spherical_softmax_cross_entropy_with_integer_labels, {"epsilon": 0.0}, "epsilon must be > 0"),
        (softfam.spherical_softmax_cross_entropy, {"epsilon": -1.0}, "epsilon must be > 0"),
        (softfam.z_loss_with_integer_labels, {"a": 0.0}, "a must be > 0"),
        (softfam.softmax_cross_entropy_upper_bound_with_integer_labels, {"xi": -0.5}, "xi must be > 0"),
        (softfam.taylor_softmax_cross_entropy_with_integer_labels, {"order": 3}, "order must be an even integer"),
        (softfam.soft_margin_taylor_softmax_cross_entropy_with_integer_labels, {"order": 0},
         "order must be an even integer"),
    ],
)
def test_bad_hyperparameters_are_rejected(loss, kwargs, message):
    logits, labels = problem()
    if loss is softfam.spherical_softmax_cross_entropy:
        labels = ref.one_hot(labels, 10).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        loss(logits, labels, **kwargs)


@pytest.mark.parametrize("name", INTEGER_LABEL_LOSSES)
@pytest.mark.parametrize("dtype,high", [(jnp.float32, 1e4), (jnp.float16, 65504.0)])
def test_huge_finite_logits_give_finite_losses(name, dtype, high):
    """Finite, but for a loss beyond the dtype's range (the float16 softmax losses)."""
    loss, kwargs, reference = INTEGER_LABEL_LOSSES[name]
    rng = np.random.default_rng(22)
    logits = jnp.asarray(rng.uniform(-high, high, (8, 32)), dtype).at[:, 0].set(high)
    labels = rng.integers(0, 32, 8).astype(np.int32)
    values = np.asarray(loss(logits, labels, **kwargs), np.float64)
    with np.errstate(all="ignore"):
        expected = reference(np.asarray(logits, np.float64), labels)
    representable = np.abs(expected) < jnp.finfo(dtype).max
    assert np.isfinite(values[representable]).all()
    assert not np.isnan(values).any()
