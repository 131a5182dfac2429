"""A controlled classification task whose only knob is the number of classes D.

A fixed random teacher labels Gaussian inputs, with a Zipf prior over the classes:

    x ~ N(0, I_16),   h = relu(A x / 4),   y = argmax_k (SCALE * B_k . h / 8 + log(1 / k)),

A (64 x 16) and B (D x 64) with N(0, 1) entries, k = 1..D. The labels are a deterministic
function of x (the Bayes error is 0), so no normalizer's family is favoured by label noise;
the prior pushes the labels towards the first classes. Measured on the 20,000 training labels
at D = 10, 100, 1000, 10000: 10, 77, 273 and 502 distinct classes, entropy 1.9, 3.2, 3.8 and
4.2 nats, and class frequency falling with its rank like rank^-1.7 to rank^-2.1 (a fitted
slope): a frequent head and a long, mostly unseen tail, as with words. The
teacher's rows ``B_k`` for k <= D are the same for every D (one random stream, drawn row by
row), and the inputs are the same for every D: only the number of classes changes.
"""

from __future__ import annotations

import re

import numpy as np

from experiments.data.common import DataError, Dataset, Split

INPUTS, HIDDEN = 16, 64
SCALE = 4.0  # spread of the teacher's scores against the log-prior's
SIZES = {"train": 20_000, "valid": 5_000, "test": 20_000}
_SEED = 0


def teacher_dataset(num_classes: int) -> Dataset:
    """Inputs float32 (N, 16) and teacher labels over ``num_classes`` classes (module docstring)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    rng = np.random.default_rng(_SEED)
    a = rng.standard_normal((HIDDEN, INPUTS))
    x = rng.standard_normal((sum(SIZES.values()), INPUTS))
    b = np.random.default_rng(_SEED + 1).standard_normal((num_classes, HIDDEN))
    h = np.maximum(x @ a.T / np.sqrt(INPUTS), 0)
    log_prior = -np.log(np.arange(1, num_classes + 1))
    labels = np.empty(len(x), np.int32)
    for start in range(0, len(x), 1000):  # at most 1000 x D scores at once
        scores = SCALE * h[start:start + 1000] @ b.T / np.sqrt(HIDDEN) + log_prior
        labels[start:start + 1000] = np.argmax(scores, 1)
    cuts = np.cumsum([SIZES["train"], SIZES["valid"]])
    splits = [Split(xs.astype(np.float32), ys) for xs, ys in
              zip(np.split(x, cuts), np.split(labels, cuts))]
    return Dataset(f"teacher-{num_classes}", *splits, num_classes=num_classes)


def load(name: str) -> Dataset:
    """``teacher-<D>``: ``teacher_dataset(D)``."""
    match = re.fullmatch(r"teacher-([1-9][0-9]*)", name)
    if match is None:
        raise DataError(f"unknown synthetic data set {name!r}; use teacher-<D>, e.g. teacher-100")
    return teacher_dataset(int(match.group(1)))
