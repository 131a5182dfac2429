"""The measurements behind tests/test_sharding.py, run in a process of its own with 8 host
CPU devices: ``python -m tests.sharding_worker OUTPUT.json`` (test_sharding sets XLA_FLAGS
before this process starts JAX; the rest of the suite runs on 1 device).

For every linear loss, on a 2 x 4 mesh (examples over ``data``, classes over ``model``), in
float64: the values and the gradients for hidden, weights and bias under GSPMD (``jax.jit`` of
sharded inputs; on a mesh of ``Auto`` axes the loss is given ``axis_name="model"``) and under
``shard_map`` (``axis_name="model"``), on meshes of explicit and of ``Auto`` axes, each against
the single-device call; the shapes of the compiled program's all-gathers and all-reduces; the
sharding of the kernel's gradient. Nothing here asserts: the tests do, on the JSON written.
"""

import functools
import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import softfam

EXAMPLES, HIDDEN, CLASSES, BLOCK = 8, 6, 32, 3  # 8 classes per device: 2 blocks of 3 and one of 2
MESH_SHAPE = (2, 4)

LOSSES = {  # name: (loss, keywords)
    "softmax": (softfam.linear_softmax_cross_entropy_with_integer_labels, dict(block_size=BLOCK)),
    "taylor-2": (softfam.linear_taylor_softmax_cross_entropy_with_integer_labels, {}),
    "taylor-4": (softfam.linear_taylor_softmax_cross_entropy_with_integer_labels,
                 dict(order=4, block_size=BLOCK)),
    "spherical": (softfam.linear_spherical_softmax_cross_entropy_with_integer_labels,
                  dict(epsilon=0.1)),
    "squared-error": (softfam.linear_squared_error_with_integer_labels, {}),
    "z-loss": (softfam.linear_z_loss_with_integer_labels, dict(a=2.0, b=1.5)),
    # the keywords, sharded: vocabulary padding (the last 5 classes), cap, penalty, smoothing
    "softmax-keywords": (softfam.linear_softmax_cross_entropy_with_integer_labels,
                         dict(block_size=BLOCK, logit_soft_cap=2.0, log_normalizer_penalty=0.1,
                              label_smoothing=0.2, class_where="padded")),
    "taylor-4-keywords": (softfam.linear_taylor_softmax_cross_entropy_with_integer_labels,
                          dict(order=4, block_size=BLOCK, logit_soft_cap=1.5,
                               log_normalizer_penalty=0.1, class_where="padded")),
    "spherical-keywords": (softfam.linear_spherical_softmax_cross_entropy_with_integer_labels,
                           dict(epsilon=0.1, log_normalizer_penalty=0.1, class_where="padded")),
    "taylor-2-keywords": (softfam.linear_taylor_softmax_cross_entropy_with_integer_labels,
                          dict(log_normalizer_penalty=0.1, class_where="padded")),
}


def inputs():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(EXAMPLES, HIDDEN))
    weights = rng.normal(size=(HIDDEN, CLASSES)) / np.sqrt(HIDDEN)
    bias = rng.normal(size=CLASSES) / 2
    labels = rng.integers(0, CLASSES - 5, EXAMPLES)  # padded classes are never targets
    where = np.ones(EXAMPLES, bool)
    where[3] = False
    return dict(hidden=hidden, weights=weights, labels=labels.astype(np.int32), bias=bias,
                where=where)


def bound(name):
    """The loss with its keywords bound, and its (V,) ``class_where`` or None."""
    loss, keywords = LOSSES[name]
    keywords = dict(keywords)
    class_where = None
    if keywords.pop("class_where", None) == "padded":
        class_where = np.arange(CLASSES) < CLASSES - 5
    return functools.partial(loss, **keywords), class_where


def value_and_grads(per_example):
    """``per_example(hidden, weights, labels, bias, where)`` -> (values, grads of their sum)."""
    def total(hidden, weights, bias, labels, where):
        values = per_example(hidden, weights, labels, bias, where)
        return jnp.sum(values), values

    return jax.jit(jax.value_and_grad(total, (0, 1, 2), has_aux=True))


def collectives(compiled_text: str) -> dict:
    """The result shapes of each kind of collective in an optimized HLO module."""
    found = {}
    for kind in ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter"):
        pattern = rf"=\s*(\(?[^=]*?\)?)\s+{kind}(?:-start)?\("
        found[kind] = [shape.strip() for shape in re.findall(pattern, compiled_text)]
    return found


def measure(name, meshes, arrays):
    loss, class_where = bound(name)
    per_example = functools.partial(loss, class_where=class_where)
    args = (arrays["hidden"], arrays["weights"], arrays["bias"], arrays["labels"], arrays["where"])
    (_, values), grads = value_and_grads(per_example)(*args)
    reference = [np.asarray(values)] + [np.asarray(g) for g in grads]

    specs = dict(hidden=P("data", None), weights=P(None, "model"), bias=P("model"),
                 labels=P("data"), where=P("data"))

    def on_each_device(hidden, weights, labels, bias, where, class_where):
        return loss(hidden, weights, labels, bias, where, class_where=class_where, axis_name="model")

    def shard_map_program(mesh):
        local_class_where = None if class_where is None else jax.device_put(
            class_where, NamedSharding(mesh, P("model")))
        return value_and_grads(lambda *args: jax.shard_map(
            on_each_device, mesh=mesh,
            in_specs=(specs["hidden"], specs["weights"], specs["labels"], specs["bias"],
                      specs["where"], P("model")),
            out_specs=P("data"))(*args, local_class_where))

    ways = {  # name: (mesh, program)
        "gspmd": (meshes["explicit"], value_and_grads(per_example)),
        "shard_map": (meshes["explicit"], shard_map_program(meshes["explicit"])),
        "gspmd-auto": (meshes["auto"], value_and_grads(functools.partial(per_example, axis_name="model"))),
        "shard_map-auto": (meshes["auto"], shard_map_program(meshes["auto"])),
    }
    results = {}
    for way, (mesh, program) in ways.items():
        sharded = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in arrays.items()}
        sharded_args = tuple(sharded[k] for k in ("hidden", "weights", "bias", "labels", "where"))
        (_, values), grads = program(*sharded_args)
        outputs = [np.asarray(values)] + [np.asarray(g) for g in grads]
        errors = [float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(outputs, reference)]
        text = program.lower(*sharded_args).compile().as_text()
        results[way] = dict(
            errors=dict(zip(("values", "hidden", "weights", "bias"), errors)),
            collectives=collectives(text),
            weights_grad_spec=str(grads[1].sharding.spec),
            weights_spec=str(sharded["weights"].sharding.spec),
            weights_grad_shard_shape=list(grads[1].addressable_shards[0].data.shape),
            devices=len(grads[1].sharding.device_set),
        )
    return results


# --8<-- [start:train-step]
def train_step_example(mesh, steps=5):
    """The docs' example: a jitted train step on the 2 x 4 mesh with a tied embedding.

    The kernel is the (V, d) embedding, sharded over ``model`` by its vocabulary, passed as
    ``embedding.T`` (a transpose, no copy); the vocabulary of 1000 is padded to 1024, a
    multiple of 128, and ``class_where`` excludes the padding; the logits are soft-capped and
    log Z is penalized. Returns the losses of the steps, the embedding's sharding after them,
    whether the padding's rows moved, and the compiled step's all-gathers.
    """
    import optax

    vocabulary, padded, d, batch = 1000, 1024, 16, 8
    rng = np.random.default_rng(1)
    params = dict(embedding=jax.device_put(rng.normal(size=(padded, d)) / 4, NamedSharding(mesh, P("model", None))),
                  dense=jax.device_put(rng.normal(size=(d, d)) / 4, NamedSharding(mesh, P())))
    features = jax.device_put(rng.normal(size=(batch, d)), NamedSharding(mesh, P("data", None)))
    labels = jax.device_put(rng.integers(0, vocabulary, batch).astype(np.int32), NamedSharding(mesh, P("data")))
    class_where = jax.device_put(np.arange(padded) < vocabulary, NamedSharding(mesh, P("model")))
    optimizer = optax.adam(1e-2)

    def loss(params, features, labels):
        hidden = jnp.tanh(features @ params["dense"])
        per_example = softfam.linear_softmax_cross_entropy_with_integer_labels(
            hidden, params["embedding"].T, labels, class_where=class_where,
            logit_soft_cap=30.0, log_normalizer_penalty=1e-4)
        return jnp.mean(per_example)

    @jax.jit
    def train_step(params, state, features, labels):
        value, grads = jax.value_and_grad(loss)(params, features, labels)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    state = optimizer.init(params)
    start = np.asarray(params["embedding"])
    text = train_step.lower(params, state, features, labels).compile().as_text()
    losses = []
    for _ in range(steps):
        params, state, value = train_step(params, state, features, labels)
        losses.append(float(value))
    moved = np.abs(np.asarray(params["embedding"]) - start).max(axis=1)
    return dict(losses=losses, embedding_spec=str(params["embedding"].sharding.spec),
                padding_moved=float(moved[vocabulary:].max()), vocabulary_moved=float(moved[:vocabulary].max()),
                all_gathers=collectives(text)["all-gather"])
# --8<-- [end:train-step]


def vocabulary_over_two_axes():
    """Log-softmax and the spherical softmax with the classes sharded over a tuple of mesh
    axes, ("m1", "m2") of a 2 x 2 x 2 mesh: the largest relative error against the
    single-device call over the values and the three gradients, GSPMD and shard_map."""
    mesh = jax.make_mesh((2, 2, 2), ("data", "m1", "m2"))
    arrays = inputs()
    specs = dict(hidden=P("data", None), weights=P(None, ("m1", "m2")), bias=P(("m1", "m2")),
                 labels=P("data"), where=P("data"))
    sharded = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in arrays.items()}
    order = ("hidden", "weights", "bias", "labels", "where")
    errors = {}
    for name in ("softmax", "spherical"):
        loss, _ = bound(name)
        (_, values), grads = value_and_grads(loss)(*(arrays[k] for k in order))
        reference = [np.asarray(values)] + [np.asarray(g) for g in grads]
        local = jax.shard_map(functools.partial(loss, axis_name=("m1", "m2")), mesh=mesh,
                              in_specs=(specs["hidden"], specs["weights"], specs["labels"],
                                        specs["bias"], specs["where"]), out_specs=P("data"))
        for way, per_example in (("gspmd", loss), ("shard_map", local)):
            (_, values), grads = value_and_grads(per_example)(*(sharded[k] for k in order))
            outputs = [np.asarray(values)] + [np.asarray(g) for g in grads]
            errors[f"{name}-{way}"] = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
                                          for a, b in zip(outputs, reference))
    return errors


def forgotten_axis_name() -> str:
    """The error of a loss called inside shard_map on a shard of the classes without
    axis_name (it would be the loss of that shard's classes alone)."""
    mesh = jax.make_mesh(MESH_SHAPE, ("data", "model"))
    arrays = inputs()
    loss = jax.shard_map(softfam.linear_softmax_cross_entropy_with_integer_labels, mesh=mesh,
                         in_specs=(P("data", None), P(None, "model"), P("data")), out_specs=P("data"))
    specs = dict(hidden=P("data", None), weights=P(None, "model"), labels=P("data"))
    args = [jax.device_put(arrays[k], NamedSharding(mesh, spec)) for k, spec in specs.items()]
    try:
        loss(*args)
    except ValueError as error:
        return str(error)
    return ""


def main(output: str) -> None:
    jax.config.update("jax_enable_x64", True)
    meshes = dict(explicit=jax.make_mesh(MESH_SHAPE, ("data", "model"), axis_types=(AxisType.Explicit,) * 2),
                  auto=jax.make_mesh(MESH_SHAPE, ("data", "model"), axis_types=(AxisType.Auto,) * 2))
    arrays = inputs()
    report = dict(devices=jax.device_count(), shapes=dict(examples=EXAMPLES, hidden=HIDDEN, classes=CLASSES),
                  losses={name: measure(name, meshes, arrays) for name in LOSSES},
                  train_step=train_step_example(meshes["explicit"]),
                  two_axes=vocabulary_over_two_axes(),
                  forgotten_axis_name=forgotten_axis_name())
    with open(output, "w") as file:
        json.dump(report, file, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
