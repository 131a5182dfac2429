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


# --- The keywords, against a dense reference written here: jnp on the logits, float64. -------

PADDED = 5  # the last 5 classes are vocabulary padding in the class_where tests


def log_scores(name, logits, epsilon=0.1):
    """``log f(o)`` of each member, directly from its definition."""
    if name == "softmax":
        return logits
    if name == "taylor-4":
        return jnp.log(1 + logits + logits**2 / 2 + logits**3 / 6 + logits**4 / 24)
    if name == "taylor-2":
        return jnp.log(1 + logits + logits**2 / 2)
    return jnp.log(logits**2 + epsilon)  # spherical


def reference(name, hidden, weights, labels, bias, where=None, class_where=None, cap=None,
              penalty=None, smoothing=None):
    """(loss, log Z) per example from the logits ``hidden @ weights + bias``."""
    logits = hidden @ weights
    logits = logits + jnp.broadcast_to(bias, logits.shape)
    if cap is not None:
        logits = cap * jnp.tanh(logits / cap)
    count = weights.shape[1] if class_where is None else jnp.sum(class_where).astype(logits.dtype)
    included = jnp.broadcast_to(True if class_where is None else class_where, logits.shape)
    target = jnp.take_along_axis(logits, labels[..., None], -1)[..., 0]
    log_z = None
    if name == "squared-error":
        onehot = jax.nn.one_hot(labels, weights.shape[1], dtype=logits.dtype)
        loss = jnp.sum(jnp.where(included, (logits - onehot) ** 2, 0), -1)
    elif name == "z-loss":
        mean = jnp.sum(jnp.where(included, logits, 0), -1) / count
        variance = jnp.sum(jnp.where(included, logits**2, 0), -1) / count - mean**2
        loss = jax.nn.softplus(2.0 * (1.5 - (target - mean) / jnp.sqrt(variance))) / 2.0
    else:
        log_f = jnp.where(included, log_scores(name, logits), -jnp.inf)
        log_z = jax.nn.logsumexp(log_f, -1)
        loss = log_z - jnp.take_along_axis(log_f, labels[..., None], -1)[..., 0]
        if smoothing is not None:
            mean_log_f = jnp.sum(jnp.where(included, log_f, 0), -1) / count
            loss = (1 - smoothing) * loss + smoothing * (log_z - mean_log_f)
        if penalty is not None:
            loss = loss + penalty * log_z**2
    if where is not None:
        loss = jnp.where(where, loss, 0)
        log_z = None if log_z is None else jnp.where(where, log_z, 0)
    return loss, log_z


LINEAR = {
    "softmax": functools.partial(softfam.linear_softmax_cross_entropy_with_integer_labels, block_size=BLOCK),
    "taylor-4": functools.partial(softfam.linear_taylor_softmax_cross_entropy_with_integer_labels,
                                  order=4, block_size=BLOCK),
    "taylor-2": softfam.linear_taylor_softmax_cross_entropy_with_integer_labels,
    "spherical": functools.partial(softfam.linear_spherical_softmax_cross_entropy_with_integer_labels, epsilon=0.1),
    "squared-error": softfam.linear_squared_error_with_integer_labels,
    "z-loss": functools.partial(softfam.linear_z_loss_with_integer_labels, a=2.0, b=1.5),
}
BLOCKED_KEYWORDS = [dict(logit_soft_cap=1.5), dict(class_where=True), dict(log_normalizer_penalty=0.3),
                    dict(label_smoothing=0.2),
                    dict(logit_soft_cap=1.5, class_where=True, log_normalizer_penalty=0.3,
                         label_smoothing=0.2)]
NORMALIZER_KEYWORDS = [dict(class_where=True), dict(log_normalizer_penalty=0.3),
                       dict(class_where=True, log_normalizer_penalty=0.3)]
KEYWORD_CASES = ([(name, k) for name in ("softmax", "taylor-4") for k in BLOCKED_KEYWORDS]
                 + [(name, k) for name in ("taylor-2", "spherical") for k in NORMALIZER_KEYWORDS]
                 + [(name, dict(class_where=True)) for name in ("squared-error", "z-loss")])


def keyword_arguments(keywords, dtype=jnp.float64):
    """The linear loss's keywords and the reference's, from a case's keywords."""
    linear = dict(keywords)
    if linear.get("class_where"):
        linear["class_where"] = jnp.arange(CLASSES) < CLASSES - PADDED
    names = dict(logit_soft_cap="cap", log_normalizer_penalty="penalty", label_smoothing="smoothing")
    dense = {names.get(k, k): v for k, v in linear.items()}
    return linear, dense


def padded_inputs(dtype, seed=0):
    """inputs() with the targets among the classes that exist."""
    hidden, weights, labels, bias = inputs(dtype, seed)
    return hidden, weights, labels % (CLASSES - PADDED), bias


def case_id(case):
    name, keywords = case
    return f"{name}-{'-'.join(keywords)}"


@pytest.mark.parametrize("case", KEYWORD_CASES, ids=case_id)
def test_keywords_equal_the_dense_reference_with_where(x64, case):
    name, keywords = case
    linear_keywords, dense_keywords = keyword_arguments(keywords)
    hidden, weights, labels, bias = padded_inputs(jnp.float64)
    where = jnp.asarray(np.random.default_rng(3).random(EXAMPLES) < 0.7)
    returns_log_z = name not in ("squared-error", "z-loss")

    def linear(h, w, labels, b, where):
        if not returns_log_z:
            return LINEAR[name](h, w, labels, b, where, **linear_keywords), None
        return LINEAR[name](h, w, labels, b, where, return_log_normalizer=True, **linear_keywords)

    def dense(h, w, labels, b, where):
        return reference(name, h, w, labels, b, where, **dense_keywords)

    def total(loss):
        def f(h, w, b):
            values, log_z = loss(h, w, labels, b, where)
            return jnp.sum(values), (values, log_z)
        return jax.value_and_grad(f, (0, 1, 2), has_aux=True)(hidden, weights, bias)

    (_, (values, log_z)), grads = total(linear)
    (_, (expected, expected_log_z)), expected_grads = total(dense)
    assert values.shape == EXAMPLES and (np.asarray(values)[~np.asarray(where)] == 0).all()
    assert relative_error(values, expected) < 1e-10
    if returns_log_z:
        assert relative_error(log_z, expected_log_z) < 1e-10
    for grad, expected_grad in zip(grads, expected_grads):
        assert relative_error(grad, expected_grad) < 1e-10
    if "class_where" in keywords:  # the padding gets no gradient, also after capping
        assert (np.asarray(grads[1])[:, -PADDED:] == 0).all()
        assert (np.asarray(grads[2])[-PADDED:] == 0).all()


@pytest.mark.parametrize("name", ["softmax", "taylor-4"])
def test_padded_classes_stay_excluded_after_capping(x64, name):
    """With a cap, the padding's logits become finite (about -cap, not -inf): the loss must
    still equal the loss of the vocabulary without the padding, whatever the padding's
    weights are."""
    hidden, weights, labels, bias = padded_inputs(jnp.float64)
    class_where = jnp.arange(CLASSES) < CLASSES - PADDED
    huge = weights.at[:, -PADDED:].set(-50.0)
    padded = LINEAR[name](hidden, huge, labels, bias, class_where=class_where, logit_soft_cap=2.0)
    unpadded = LINEAR[name](hidden, weights[:, :-PADDED], labels, bias[:-PADDED], logit_soft_cap=2.0)
    assert relative_error(padded, unpadded) < 1e-12


def test_label_smoothing_equals_optax_on_smoothed_labels(x64):
    import optax

    hidden, weights, labels, bias = inputs(jnp.float64)
    loss = LINEAR["softmax"](hidden, weights, labels, bias, label_smoothing=0.3)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, CLASSES, dtype=jnp.float64), 0.3)
    logits = hidden @ weights
    expected = optax.losses.softmax_cross_entropy(logits + jnp.broadcast_to(bias, logits.shape), targets)
    assert relative_error(loss, expected) < 1e-12


@pytest.mark.parametrize("name", ["softmax", "taylor-4"])
def test_keywords_under_jit_with_traced_hyperparameters_and_under_vmap(name):
    hidden, weights, labels, bias = padded_inputs(jnp.float32)
    class_where = jnp.arange(CLASSES) < CLASSES - PADDED
    loss = functools.partial(LINEAR[name], class_where=class_where)
    plain = loss(hidden, weights, labels, bias, logit_soft_cap=1.5, log_normalizer_penalty=0.3,
                 label_smoothing=0.2)
    jitted = jax.jit(lambda cap, w, s: loss(hidden, weights, labels, bias, logit_soft_cap=cap,
                                            log_normalizer_penalty=w, label_smoothing=s))
    np.testing.assert_allclose(jitted(1.5, 0.3, 0.2), plain, rtol=1e-6)
    assert not np.allclose(jitted(3.0, 0.3, 0.2), plain, rtol=1e-3)  # the cap is read, not baked in
    mapped = jax.vmap(lambda h, l: loss(h, weights, l, bias, logit_soft_cap=1.5, log_normalizer_penalty=0.3,
                                        label_smoothing=0.2))(hidden, labels)
    np.testing.assert_allclose(mapped, plain, rtol=1e-6)


@pytest.mark.parametrize("name", ["taylor-2", "spherical", "squared-error", "z-loss"])
def test_class_where_under_jit_and_vmap_on_the_statistics_paths(name):
    hidden, weights, labels, bias = padded_inputs(jnp.float32)
    class_where = jnp.arange(CLASSES) < CLASSES - PADDED
    loss = functools.partial(LINEAR[name], class_where=class_where)
    plain = loss(hidden, weights, labels, bias)
    np.testing.assert_allclose(jax.jit(loss)(hidden, weights, labels, bias), plain, rtol=1e-6)
    mapped = jax.vmap(loss, in_axes=(0, None, 0, None))(hidden, weights, labels, bias)
    np.testing.assert_allclose(mapped, plain, rtol=1e-6)


# bfloat16 inputs, float32 sums: the largest relative errors against the float64 reference
# over these cases, measured, are 3.5e-3 for the values (the output's rounding to bfloat16's
# 8-bit mantissa: 2^-9 = 2e-3 at most per number) and 5.4e-3 for the gradients. Tolerances:
# 1e-2 and 1.5e-2, about three times that.
@pytest.mark.parametrize("case", KEYWORD_CASES, ids=case_id)
def test_bfloat16_inputs_accumulate_in_float32(case):
    name, keywords = case
    linear_keywords, dense_keywords = keyword_arguments(keywords)
    args = padded_inputs(jnp.bfloat16)
    values, grads = value_and_grads(functools.partial(LINEAR[name], **linear_keywords), *args)
    assert values.dtype == jnp.bfloat16 and [g.dtype for g in grads] == [jnp.bfloat16] * 3
    with jax.enable_x64(True):
        exact = [a.astype(jnp.float64) if a.dtype == jnp.bfloat16 else a for a in args]
        expected, expected_grads = value_and_grads(
            lambda h, w, labels, b, where: reference(name, h, w, labels, b, where, **dense_keywords)[0], *exact)
    assert relative_error(values, expected) < 1e-2
    for grad, expected_grad in zip(grads, expected_grads):
        assert relative_error(grad, expected_grad) < 1.5e-2


def equations(jaxpr):
    """Every equation of a jaxpr, inner jaxprs (scans, custom VJPs) included."""
    for equation in jaxpr.eqns:
        yield equation
        for param in equation.params.values():
            for inner in (param if isinstance(param, (list, tuple)) else [param]):
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    yield from equations(inner)


@pytest.mark.parametrize("name", LINEAR)
def test_bfloat16_products_and_sums_are_formed_in_float32(name):
    """Every matrix product and every sum of the loss and its gradients, with bfloat16 inputs,
    produces float32 (``preferred_element_type``), and so does every sum over classes."""
    hidden, weights, labels, bias = padded_inputs(jnp.bfloat16)
    keywords = dict(class_where=jnp.arange(CLASSES) < CLASSES - PADDED)
    loss = lambda h, w, b: jnp.sum(LINEAR[name](h, w, labels, b, **keywords).astype(jnp.float32))  # noqa: E731
    jaxpr = jax.make_jaxpr(jax.value_and_grad(loss, (0, 1, 2)))(hidden, weights, bias).jaxpr
    reductions = [e for e in equations(jaxpr)
                  if e.primitive.name in ("dot_general", "reduce_sum", "reduce_max")
                  and jnp.issubdtype(e.outvars[0].aval.dtype, jnp.floating)]
    assert any(e.primitive.name == "dot_general" for e in reductions)
    assert {str(e.outvars[0].aval.dtype) for e in reductions} == {"float32"}


@pytest.mark.parametrize("name, keywords, message", [
    ("softmax", dict(logit_soft_cap=0.0), "logit_soft_cap must be > 0"),
    ("taylor-4", dict(logit_soft_cap=-1.0), "logit_soft_cap must be > 0"),
    ("softmax", dict(label_smoothing=1.0), r"label_smoothing must be in \[0, 1\)"),
    ("softmax", dict(label_smoothing=-0.1), r"label_smoothing must be in \[0, 1\)"),
    ("softmax", dict(class_where=jnp.ones(CLASSES + 1, bool)), r"class_where must be a boolean array of shape \(23,\)"),
    ("spherical", dict(class_where=jnp.ones(CLASSES)), r"class_where must be a boolean array of shape \(23,\)"),
    ("taylor-2", dict(logit_soft_cap=2.0), "logit_soft_cap is not available for the Taylor softmax of order 2"),
    ("spherical", dict(label_smoothing=0.1), "label_smoothing is not available for the spherical softmax"),
    ("squared-error", dict(log_normalizer_penalty=0.1), "log_normalizer_penalty is not available for the squared error"),
    ("z-loss", dict(return_log_normalizer=True), "return_log_normalizer is not available for the Z-loss"),
    ("softmax", dict(axis_name="model"), "axis_name='model' must name axes of the enclosing shard_map"),
    ("taylor-2", dict(axis_name="model"), "axis_name='model' must name axes of the enclosing shard_map"),
])
def test_bad_keywords_are_refused_by_name(name, keywords, message):
    hidden, weights, labels, bias = inputs(jnp.float32)
    with pytest.raises(ValueError, match=message):
        LINEAR[name](hidden, weights, labels, bias, **keywords)


@pytest.mark.parametrize("name", LINEAR)
def test_a_label_naming_an_excluded_class_gives_inf_and_its_neighbours_are_untouched(name):
    hidden, weights, labels, bias = padded_inputs(jnp.float32)
    class_where = jnp.arange(CLASSES) < CLASSES - PADDED
    loss = functools.partial(LINEAR[name], class_where=class_where)
    values = np.asarray(loss(hidden, weights, labels.at[1, 1].set(CLASSES - 1), bias))
    expected = np.asarray(loss(hidden, weights, labels, bias))
    assert values[1, 1] == np.inf
    mask = np.ones(EXAMPLES, bool)
    mask[1, 1] = False
    np.testing.assert_array_equal(values[mask], expected[mask])


@pytest.mark.parametrize("name", ["softmax", "taylor-4"])
def test_the_cap_is_a_constant_and_gets_no_gradient(name):
    """Its own pass would need the cap's derivative block by block; a traced cap is held
    constant, the value still depends on it."""
    hidden, weights, labels, bias = inputs(jnp.float32)
    total = lambda cap: jnp.sum(LINEAR[name](hidden, weights, labels, bias, logit_soft_cap=cap))  # noqa: E731
    assert float(jax.grad(total)(2.0)) == 0.0
    assert float(total(2.0)) != float(total(3.0))
