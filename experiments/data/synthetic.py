"""A controlled classification task whose only knob is the number of classes D.

A fixed random teacher labels Gaussian inputs, with a Zipf prior over the classes:

    x ~ N(0, I_16),   h = relu(A x / 4),   s_k = SCALE * B_k . h / 8 + log(1 / k),

A (64 x 16) and B (D x 64) with N(0, 1) entries, k = 1..D. Three teachers label x from the
scores s (``KINDS``):

- ``teacher-<D>``: ``y = argmax_k s_k``, a deterministic function of x (Bayes error 0). Its
  decision rule is that of a softmax output layer on a hidden layer plus a bias.
- ``softmax-teacher-<D>``: y drawn from ``softmax(s)``, the model class of log-softmax.
- ``taylor-teacher-<D>``: y drawn from the order-2 Taylor softmax ``T_2(s) / sum T_2(s)``,
  the model class of log-Taylor.

The sampled teachers' Bayes error, ``1 - E_x max_k p_k(x)``, is known exactly from ``p``
(``Dataset.bayes_error``). The prior pushes the labels towards the first classes. Measured on the
argmax teacher's 20,000 training labels at D = 10, 100, 1000, 10000: 10, 77, 273 and 502
distinct classes, entropy 1.9, 3.2, 3.8 and 4.2 nats, and class frequency falling with its
rank like rank^-1.7 to rank^-2.1 (a fitted slope): a frequent head and a long, mostly unseen
tail, as with words. The teacher's rows ``B_k`` for k <= D are the same for every D (one
random stream, drawn row by row), and the inputs are the same for every D: only the number
of classes changes. The sampled teachers draw their labels from one fixed random stream by
the inverse of the cumulative distribution.
"""

from __future__ import annotations

import re

import numpy as np

from experiments.data.common import DataError, Dataset, Split

INPUTS, HIDDEN = 16, 64
SCALE = 4.0  # spread of the teacher's scores against the log-prior's
SIZES = {"train": 20_000, "valid": 5_000, "test": 20_000}
_SEED = 0
CHUNK = 1000  # at most CHUNK x D scores at once


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _taylor_softmax(s: np.ndarray) -> np.ndarray:
    t = 1 + s + s * s / 2
    return t / t.sum(1, keepdims=True)


# The teachers: the distribution of y given the scores, or None for the argmax.
KINDS = {"teacher": None, "softmax-teacher": _softmax, "taylor-teacher": _taylor_softmax}


def _inputs_and_probabilities(num_classes: int, kind: str):
    """The inputs (N, 16) and, chunk by chunk, the teacher's scores and label distribution."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if kind not in KINDS:
        raise ValueError(f"unknown teacher {kind!r}; choose one of {', '.join(KINDS)}")
    rng = np.random.default_rng(_SEED)
    a = rng.standard_normal((HIDDEN, INPUTS))
    x = rng.standard_normal((sum(SIZES.values()), INPUTS))
    b = np.random.default_rng(_SEED + 1).standard_normal((num_classes, HIDDEN))
    h = np.maximum(x @ a.T / np.sqrt(INPUTS), 0)
    log_prior = -np.log(np.arange(1, num_classes + 1))

    def chunks():
        for start in range(0, len(x), CHUNK):
            scores = SCALE * h[start:start + CHUNK] @ b.T / np.sqrt(HIDDEN) + log_prior
            yield scores, None if KINDS[kind] is None else KINDS[kind](scores)

    return x, chunks()


def teacher_dataset(num_classes: int, kind: str = "teacher") -> Dataset:
    """Inputs float32 (N, 16) and the labels of teacher ``kind`` over ``num_classes`` classes
    (module docstring), with the test split's Bayes error ``mean_x (1 - max_k p_k(x))``: 0 for
    the argmax teacher."""
    x, chunks = _inputs_and_probabilities(num_classes, kind)
    uniform = np.random.default_rng(_SEED + 2).random(len(x))
    labels = np.empty(len(x), np.int32)
    missed = np.zeros(len(x))  # 1 - max_k p_k(x)
    for start, (scores, probs) in zip(range(0, len(x), CHUNK), chunks):
        if probs is None:
            labels[start:start + CHUNK] = np.argmax(scores, 1)
        else:  # the first class whose cumulative probability exceeds u
            below = np.cumsum(probs, 1) <= uniform[start:start + len(probs), None]
            labels[start:start + CHUNK] = np.minimum(below.sum(1), num_classes - 1)
            missed[start:start + CHUNK] = 1 - probs.max(1)
    cuts = np.cumsum([SIZES["train"], SIZES["valid"]])
    splits = [Split(xs.astype(np.float32), ys) for xs, ys in
              zip(np.split(x, cuts), np.split(labels, cuts))]
    return Dataset(f"{kind}-{num_classes}", *splits, num_classes=num_classes,
                   bayes_error=float(missed[cuts[1]:].mean()))


def load(name: str) -> Dataset:
    """``<kind>-<D>`` for a teacher kind of ``KINDS``: ``teacher_dataset(D, kind)``."""
    match = re.fullmatch(rf"({'|'.join(KINDS)})-([1-9][0-9]*)", name)
    if match is None:
        raise DataError(f"unknown synthetic data set {name!r}; use teacher-<D>, "
                        "softmax-teacher-<D> or taylor-teacher-<D>, e.g. teacher-100")
    return teacher_dataset(int(match.group(2)), match.group(1))
