"""Models as pure functions over parameter pytrees: a ReLU MLP, a small CNN and a feed-forward
n-gram language model.

``init(key, input_shape, num_classes) -> params`` and ``apply(params, inputs) -> logits`` for
inputs of shape ``(batch, *input_shape)``: images ``(H, W, C)`` or token contexts ``(n,)``.
``apply`` is the linear output layer ``params["output"]`` applied to ``features(params,
inputs)``, the last hidden layer, which never reads ``params["output"]`` (so that another
output layer can take its place). With ``dropout=(rate, key)``, ``features`` applies inverted
dropout to every hidden layer's activations (each kept with probability ``1 - rate`` and
divided by it; a mask per layer from ``fold_in(key, layer)``); without it, it is
deterministic, as in evaluation. Hidden layers are rectifiers with He initialisation
(weights ~ N(0, 2 / fan_in), biases 0), as in de Brebisson & Vincent; the output layer uses
N(0, 1 / fan_in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax

Params = dict
Dropout = Optional[tuple[jax.Array, jax.Array]]  # (rate, key) in training, None in evaluation


def _affine(h: jax.Array, layer: Params) -> jax.Array:
    return h @ layer["w"] + layer["b"][None, :]


def _dense(key, fan_in: int, fan_out: int, gain: float) -> Params:
    weights = jax.random.normal(key, (fan_in, fan_out)) * math.sqrt(gain / fan_in)
    return {"w": weights, "b": jnp.zeros((fan_out,))}


def _drop(h: jax.Array, dropout: Dropout, layer: int) -> jax.Array:
    if dropout is None:
        return h
    rate, key = dropout
    keep = jax.random.bernoulli(jax.random.fold_in(key, layer), 1 - rate, h.shape)
    return jnp.where(keep, h / (1 - rate), 0).astype(h.dtype)


def _conv(key, size: int, channels_in: int, channels_out: int) -> Params:
    fan_in = size * size * channels_in
    weights = jax.random.normal(key, (size, size, channels_in, channels_out)) * math.sqrt(2 / fan_in)
    return {"w": weights, "b": jnp.zeros((channels_out,))}


@dataclass(frozen=True)
class Model:
    init: Callable[[jax.Array, tuple[int, ...], int], Params]
    # features(params, inputs, dropout=None) -> (batch, d): the output layer's input
    features: Callable[..., jax.Array]

    def apply(self, params: Params, inputs: jax.Array) -> jax.Array:
        return _affine(self.features(params, inputs), params["output"])


def mlp(widths: tuple[int, ...]) -> Model:
    """Flatten, then ``len(widths)`` ReLU layers of these widths, then a linear output layer."""

    def init(key, input_shape, num_classes):
        sizes = (math.prod(input_shape), *widths)
        keys = jax.random.split(key, len(sizes))
        return {"hidden": [_dense(k, i, o, 2.0) for k, i, o in zip(keys, sizes, sizes[1:])],
                "output": _dense(keys[-1], sizes[-1], num_classes, 1.0)}

    def features(params, images, dropout: Dropout = None):
        h = images.reshape(images.shape[0], -1)
        for index, layer in enumerate(params["hidden"]):
            h = _drop(jax.nn.relu(_affine(h, layer)), dropout, index)
        return h

    return Model(init, features)


def cnn(channels: tuple[int, ...], width: int) -> Model:
    """5x5 ReLU convolutions of stride 2 with these channel counts, a ReLU layer of ``width``,
    a linear output layer."""

    def init(key, input_shape, num_classes):
        height, width_in, channels_in = input_shape
        keys = jax.random.split(key, len(channels) + 2)
        convs, c_in = [], channels_in
        for k, c_out in zip(keys, channels):
            convs.append(_conv(k, 5, c_in, c_out))
            c_in = c_out
            height, width_in = -(-height // 2), -(-width_in // 2)
        flat = height * width_in * c_in
        return {
            "convs": convs,
            "hidden": _dense(keys[-2], flat, width, 2.0),
            "output": _dense(keys[-1], width, num_classes, 1.0),
        }

    def features(params, images, dropout: Dropout = None):
        h = images
        for index, conv in enumerate(params["convs"]):
            h = lax.conv_general_dilated(
                h, conv["w"], window_strides=(2, 2), padding="SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            h = _drop(jax.nn.relu(h + conv["b"][None, None, None, :]), dropout, index)
        h = jax.nn.relu(_affine(h.reshape(h.shape[0], -1), params["hidden"]))
        return _drop(h, dropout, len(params["convs"]))

    return Model(init, features)


def ngram(embedding: int, widths: tuple[int, ...]) -> Model:
    """Feed-forward n-gram language model (Bengio et al. 2003): the ``n`` context tokens'
    embeddings from one shared table of ``num_classes x embedding`` (entries ~ N(0, 1)),
    concatenated, then ReLU layers of ``widths`` and a linear output layer over the vocabulary."""
    hidden_mlp = mlp(widths)

    def init(key, input_shape, num_classes):
        (context,) = input_shape
        table_key, mlp_key = jax.random.split(key)
        return {
            "embedding": jax.random.normal(table_key, (num_classes, embedding)),
            **hidden_mlp.init(mlp_key, (context * embedding,), num_classes),
        }

    def features(params, tokens, dropout: Dropout = None):
        return hidden_mlp.features(params, params["embedding"][tokens], dropout)  # mlp flattens

    return Model(init, features)


def get(name: str, widths: tuple[int, ...]) -> Model:
    """``mlp`` with hidden ``widths``, ``cnn`` with ``widths = (*channels, hidden width)``, or
    ``ngram`` with ``widths = (embedding, *hidden widths)``."""
    if name == "mlp":
        return mlp(widths)
    if name == "cnn":
        return cnn(widths[:-1], widths[-1])
    if name == "ngram":
        return ngram(widths[0], widths[1:])
    raise ValueError(f"unknown model {name!r}; known models: mlp, cnn, ngram")
