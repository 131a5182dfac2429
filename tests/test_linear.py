"""The linear losses against the dense losses of ``hidden @ weights + bias`` through jax.grad:
values and the gradients for hidden, weights and bias, in float64 to 1e-10, in the other
float dtypes to stated tolerances, under jit and vmap, with ``where``, with invalid labels;
and no intermediate as large as the (N, V) logits."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softfam

HIDDEN, CLASSES, BLOCK = 7, 23, 5  # 23 = 4 blocks of 5 and one of 3
EXAMPLES = (3, 4)
LOSSES = {  # name: (linear loss, dense loss), hyperparameters bound
    "softmax": (functools.partial(softfam.linear_softmax_cross_entropy_with_integer_labels, block_size=BLOCK),
                softfam.softmax_cross_entropy_with_integer_labels),
    "taylor-2": (softfam.linear_taylor_softmax_cross_entropy_with_integer_labels,
                 softfam.taylor_softmax_cross_entropy_with_integer_labels),
    "taylor-4": (functools.partial(softfam.linear_taylor_softmax_cross_entropy_with_integer_labels,
                                   order=4, block_size=BLOCK),
                 functools.partial(softfam.taylor_softmax_cross_entropy_with_integer_labels, order=4)),
    "spherical": (functools.partial(softfam.linear_spherical_softmax_cross_entropy_with_integer_labels, epsilon=0.1),
                  functools.partial(softfam.spherical_softmax_cross_entropy_with_integer_labels, epsilon=0.1)),
    "squared-error": (softfam.linear_squared_error_with_integer_labels,
                      softfam.squared_error_with_integer_labels),
    "z-loss": (functools.partial(softfam.linear_z_loss_with_integer_labels, a=2.0, b=1.5),
               functools.partial(softfam.z_loss_with_integer_labels, a=2.0, b=1.5)),
}


def inputs(dtype, seed=0):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(*EXAMPLES, HIDDEN))
    weights = rng.normal(size=(HIDDEN, CLASSES)) / np.sqrt(HIDDEN)
    bias = rng.normal(size=CLASSES) / 2
    labels = rng.integers(0, CLASSES, EXAMPLES)
    labels[0, 1] = labels[0, 0]  # a repeated target
    return (jnp.asarray(hidden, dtype), jnp.asarray(weights, dtype), jnp.asarray(labels, jnp.int32),
            jnp.asarray(bias, dtype))


def value_and_grads(loss, hidden, weights, labels, bias, where=None):
    """Each example's loss and the gradients of their sum for hidden, weights and bias."""
    def total(h, w, b):
        values = loss(h, w, labels, b, where)
        return jnp.sum(values.astype(jnp.float64 if values.dtype == jnp.float64 else jnp.float32)), values

    (_, values), grads = jax.value_and_grad(total, (0, 1, 2), has_aux=True)(hidden, weights, bias)
    return values, grads


def dense_version(dense_loss):
    def loss(hidden, weights, labels, bias, where=None):
        logits = hidden @ weights + jnp.broadcast_to(bias, (*hidden.shape[:-1], bias.size))
        return dense_loss(logits, labels) if where is None else jnp.where(where, dense_loss(logits, labels), 0)
    return loss


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("name", LOSSES)
def test_values_and_gradients_equal_the_dense_loss_in_float64(x64, name):
    linear, dense = LOSSES[name]
    args = inputs(jnp.float64)
    values, grads = value_and_grads(linear, *args)
    expected_values, expected_grads = value_and_grads(dense_version(dense), *args)
    assert values.shape == EXAMPLES and values.dtype == jnp.float64
    assert relative_error(values, expected_values) < 1e-10
    for grad, expected in zip(grads, expected_grads):
        assert relative_error(grad, expected) < 1e-10


# Measured maximum relative errors against float64 over the six losses, values and gradients:
# float32 2.1e-7, bfloat16 3.5e-3 (its 8-bit mantissa, in the output's rounding), float16
# 4.8e-4. The tolerances allow about 10 times that.
TOLERANCE = {jnp.float32: 2e-6, jnp.bfloat16: 3e-2, jnp.float16: 5e-3}


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("name", LOSSES)
def test_lower_precisions_stay_close_to_float64_and_keep_their_dtype(name, dtype):
    linear, dense = LOSSES[name]
    args = inputs(dtype)
    values, grads = value_and_grads(linear, *args)
    assert values.dtype == dtype and [g.dtype for g in grads] == [dtype] * 3
    with jax.enable_x64(True):
        exact = [a.astype(jnp.float64) if a.dtype == dtype else a for a in args]
        expected_values, expected_grads = value_and_grads(dense_version(dense), *exact)
    assert relative_error(values, expected_values) < TOLERANCE[dtype]
    for grad, expected in zip(grads, expected_grads):
        assert relative_error(grad, expected) < TOLERANCE[dtype]


@pytest.mark.parametrize("name", LOSSES)
def test_jit_and_vmap_agree_with_the_plain_call(name):
    linear, _ = LOSSES[name]
    hidden, weights, labels, bias = inputs(jnp.float32)
    plain = linear(hidden, weights, labels, bias)
    np.testing.assert_allclose(jax.jit(linear)(hidden, weights, labels, bias), plain, rtol=1e-6)
    mapped = jax.vmap(linear, in_axes=(0, None, 0, None))(hidden, weights, labels, bias)
    np.testing.assert_allclose(mapped, plain, rtol=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_where_drops_examples_from_the_loss_and_the_gradients(x64, name):
    linear, dense = LOSSES[name]
    hidden, weights, labels, bias = inputs(jnp.float64)
    where = jnp.asarray(np.random.default_rng(3).random(EXAMPLES) < 0.6)
    labels = jnp.where(where, labels, CLASSES + 5)  # invalid labels under the mask are ignored
    values, grads = value_and_grads(linear, hidden, weights, labels, bias, where)
    safe_labels = jnp.where(where, labels, 0)
    expected_values, expected_grads = value_and_grads(dense_version(dense), hidden, weights, safe_labels, bias, where)
    assert not np.asarray(where).all() and (np.asarray(values)[~np.asarray(where)] == 0).all()
    assert relative_error(values, expected_values) < 1e-10
    for grad, expected in zip(grads, expected_grads):
        assert relative_error(grad, expected) < 1e-10
    assert (np.asarray(grads[0])[~np.asarray(where)] == 0).all()


@pytest.mark.parametrize("name", LOSSES)
def test_an_invalid_label_gives_nan_for_its_example_only(name):
    linear, _ = LOSSES[name]
    hidden, weights, labels, bias = inputs(jnp.float32)
    labels = labels.at[1, 2].set(CLASSES).at[2, 0].set(-1)
    values = np.asarray(linear(hidden, weights, labels, bias))
    invalid = np.zeros(EXAMPLES, bool)
    invalid[1, 2] = invalid[2, 0] = True
    assert np.isnan(values[invalid]).all() and np.isfinite(values[~invalid]).all()


def largest_intermediate(function, *args) -> int:
    """The number of elements of the largest array any equation of ``function``'s jaxpr
    (inner jaxprs included: scans, custom VJPs) produces."""
    def sizes(jaxpr):
        for equation in jaxpr.eqns:
            for var in equation.outvars:
                yield int(np.prod(var.aval.shape)) if hasattr(var.aval, "shape") else 0
            for param in equation.params.values():
                for inner in (param if isinstance(param, (list, tuple)) else [param]):
                    inner = getattr(inner, "jaxpr", inner)
                    if hasattr(inner, "eqns"):
                        yield from sizes(inner)

    return max(sizes(jax.make_jaxpr(function)(*args).jaxpr))


@pytest.mark.parametrize("name", LOSSES)
def test_no_array_as_large_as_the_logits_is_built(name):
    """N = 64 examples, V = 512 classes, d = 8, blocks of 32: the largest intermediate of the
    loss and its three gradients is at most (N, 32) logits or the (d, V) weights' gradient."""
    linear, _ = LOSSES[name]
    rng = np.random.default_rng(0)
    hidden, weights = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32), jnp.asarray(rng.normal(size=(8, 512)), jnp.float32)
    labels, bias = jnp.asarray(rng.integers(0, 512, 64)), jnp.zeros(512, jnp.float32)
    if "block_size" in getattr(linear, "keywords", {}):
        linear = functools.partial(linear, block_size=32)
    loss = lambda h, w, b: jnp.sum(linear(h, w, labels, b))  # noqa: E731
    largest = largest_intermediate(jax.value_and_grad(loss, (0, 1, 2)), hidden, weights, bias)
    assert largest <= max(64 * 32, 8 * 512) < 64 * 512


@pytest.mark.parametrize("bad, message", [
    (dict(weights=jnp.zeros((6, CLASSES))), r"weights must have shape \(d, V\)"),
    (dict(labels=jnp.zeros(3, jnp.int32)), "labels must have hidden's shape"),
    (dict(bias=jnp.zeros(CLASSES + 1)), rf"bias must have shape \({CLASSES},\)"),
    (dict(labels=jnp.zeros(EXAMPLES)), "labels must have an integer dtype"),
])
def test_bad_inputs_are_refused_by_name(bad, message):
    hidden, weights, labels, bias = inputs(jnp.float32)
    args = dict(hidden=hidden, weights=weights, labels=labels, bias=bias) | bad
    with pytest.raises((ValueError, TypeError), match=message):
        softfam.linear_softmax_cross_entropy_with_integer_labels(**args)
    with pytest.raises(ValueError, match="block_size must be a positive"):
        softfam.linear_softmax_cross_entropy_with_integer_labels(hidden, weights, labels, block_size=0)
