"""Evaluation of a classifier's outputs: error rate, top-10 accuracy, NLL, expected calibration
error, Brier score.

Sums are accumulated over chunks of examples (``Totals``) and turned into means at the end
(``summarize``). The prediction is the most probable class under the model's own
probabilities (for spherical softmax that is not the largest logit), or the largest output
when the loss defines no distribution (squared error); NLL, ECE and Brier are then None.
Top-10 accuracy counts a target ranked among the 10 most probable classes (ties in its favour).

ECE uses 15 equal-width confidence bins: ``sum_b (n_b / N) |accuracy_b - confidence_b|``.
NLL is also summed per frequency bucket of the target class (``class_buckets``: the classes
ranked by their training frequency, ranks 1-10, 11-100, 101-1,000, 1,001-10,000 and beyond),
so that a language model's perplexity can be read for frequent and rare words apart.
``baselines`` gives the same metrics for two predictors that ignore the input.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

NUM_BINS = 15
BUCKET_EDGES = (10, 100, 1000, 10_000)  # frequency ranks that end each bucket but the last
NUM_BUCKETS = len(BUCKET_EDGES) + 1


def class_buckets(train_labels, num_classes: int) -> np.ndarray:
    """The frequency bucket (0 = the 10 most frequent) of each class (D,) by its rank in the
    training labels (ties by class index)."""
    counts = np.bincount(np.asarray(train_labels), minlength=num_classes)
    rank = np.empty(num_classes, np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(num_classes)
    return np.searchsorted(np.asarray(BUCKET_EDGES), rank, side="right").astype(np.int32)


class Totals(NamedTuple):
    """Sums over the examples seen so far (each a scalar, or per confidence bin)."""

    count: jax.Array
    errors: jax.Array
    top10_correct: jax.Array
    nll: jax.Array
    brier: jax.Array
    bin_count: jax.Array  # (NUM_BINS,)
    bin_confidence: jax.Array  # sum of the top probability per bin
    bin_correct: jax.Array  # number of correct predictions per bin
    bucket_count: jax.Array  # (NUM_BUCKETS,) examples per frequency bucket of the target
    bucket_nll: jax.Array  # their summed NLL


def totals(
    logits: jax.Array,
    labels: jax.Array,
    weights: jax.Array,
    log_probabilities: Optional[Callable[[jax.Array], jax.Array]],
    buckets: jax.Array,
) -> Totals:
    """The sums for one chunk: ``logits`` (N, D), integer ``labels`` (N,), ``weights`` (N,)
    1 for an example, 0 for padding, ``buckets`` (N,) the frequency bucket of each label."""
    count = jnp.sum(weights)
    scores = _scores(logits, log_probabilities)
    target_score = jnp.take_along_axis(scores, labels[:, None], -1)
    rank = jnp.sum(scores > target_score, -1)  # classes scored strictly above the target
    scored = ~jnp.any(jnp.isnan(scores), -1)  # a row with a NaN (a diverged model) ranks nothing
    top10_correct = jnp.sum(weights * ((rank < 10) & scored).astype(jnp.float32))
    correct = weights * (_predictions(scores) == labels).astype(jnp.float32)
    in_bucket = weights[:, None] * jax.nn.one_hot(buckets, NUM_BUCKETS)  # (N, NUM_BUCKETS)
    bucket_count = jnp.sum(in_bucket, 0)
    if log_probabilities is None:
        zero, zeros = jnp.zeros(()), jnp.zeros((NUM_BINS,))
        return Totals(count, count - jnp.sum(correct), top10_correct, zero, zero, zeros, zeros, zeros,
                      bucket_count, jnp.zeros((NUM_BUCKETS,)))
    probs = jnp.exp(scores)
    target_log_prob = target_score[:, 0]
    target_prob = jnp.exp(target_log_prob)
    example_nll = -jnp.where(weights > 0, target_log_prob, 0)
    nll = jnp.sum(weights * example_nll)
    brier = jnp.sum(weights * (jnp.sum(probs * probs, -1) - 2 * target_prob + 1))
    confidence = jnp.max(probs, -1)
    bins = jnp.clip((confidence * NUM_BINS).astype(jnp.int32), 0, NUM_BINS - 1)
    in_bin = weights[:, None] * jax.nn.one_hot(bins, NUM_BINS)  # (N, NUM_BINS), small
    return Totals(
        count, count - jnp.sum(correct), top10_correct, nll, brier,
        jnp.sum(in_bin, 0), confidence @ in_bin, correct @ in_bin, bucket_count,
        example_nll @ in_bucket,
    )


def _scores(logits, log_probabilities):
    return logits if log_probabilities is None else log_probabilities(logits).astype(jnp.float32)


def _predictions(scores: jax.Array) -> jax.Array:
    """The highest-scored class of each row, or -1 for a row with a NaN (a diverged model)."""
    return jnp.where(jnp.any(jnp.isnan(scores), -1), -1, jnp.argmax(scores, -1))


def predictions(
    logits: jax.Array, log_probabilities: Optional[Callable[[jax.Array], jax.Array]]
) -> jax.Array:
    """The predicted class of each row of ``logits`` (N, D): the most probable under the model's
    probabilities (the largest output without them); -1 for a row with a NaN."""
    return _predictions(_scores(logits, log_probabilities))


def summarize(total: Totals, has_probabilities: bool) -> dict:
    """Means from the sums: ``error`` and ``top10_accuracy`` (fractions), ``nll``, ``ece``,
    ``brier``, the reliability bins, the examples per frequency bucket and their mean NLL
    (``bucket_nll``, None for an empty bucket); the probability-based ones are None without
    probabilities."""
    total = jax.device_get(total)  # one transfer, not one per number
    summary = {
        "error": float(total.errors / total.count),
        "top10_accuracy": float(total.top10_correct / total.count),
        "bucket_count": [int(c) for c in total.bucket_count],
    }
    if not has_probabilities:
        return summary | {"nll": None, "ece": None, "brier": None, "bucket_nll": None}
    gap = np.abs(total.bin_correct - total.bin_confidence)  # n_b |acc_b - conf_b|
    return summary | {
        "nll": float(total.nll / total.count),
        "ece": float(np.sum(gap) / total.count),
        "brier": float(total.brier / total.count),
        "bucket_nll": [float(n / c) if c else None for n, c in zip(total.bucket_nll, total.bucket_count)],
        "bins": {
            "count": [int(c) for c in total.bin_count],
            "confidence": [float(c) for c in total.bin_confidence],
            "correct": [float(c) for c in total.bin_correct],
        },
    }


def prior(train_labels, num_classes: int) -> np.ndarray:
    """The class prior (unigram) from the training labels, with add-one smoothing:
    ``p_k = (n_k + 1) / (N + D)``."""
    train_labels = np.asarray(train_labels)
    return (np.bincount(train_labels, minlength=num_classes) + 1.0) / (train_labels.size + num_classes)


def baselines(train_labels, test_labels, num_classes: int) -> dict[str, dict[str, float]]:
    """The test metrics of two predictors that ignore the input: the uniform distribution over
    the D classes, and the class prior (unigram for language models) estimated from the
    training labels with add-one smoothing, ``p_k = (n_k + 1) / (N + D)``. The uniform guess
    has expected error ``1 - 1/D``, NLL ``log D`` and Brier score ``1 - 1/D``. Both also give
    their mean NLL per frequency bucket (``bucket_nll``)."""
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    d = num_classes
    unigram = prior(train_labels, d)
    top10 = np.argsort(-unigram, kind="stable")[:10]
    p_target = unigram[test_labels]
    buckets = class_buckets(train_labels, d)[test_labels]

    def by_bucket(nll):
        return [float(nll[buckets == b].mean()) if np.any(buckets == b) else None
                for b in range(NUM_BUCKETS)]

    return {
        "uniform": {"error": 1 - 1 / d, "top10_accuracy": min(10, d) / d, "nll": float(np.log(d)),
                    "brier": 1 - 1 / d, "bucket_nll": by_bucket(np.full(test_labels.size, np.log(d)))},
        "prior": {"error": float(np.mean(test_labels != top10[0])),
                  "top10_accuracy": float(np.mean(np.isin(test_labels, top10))),
                  "nll": float(-np.mean(np.log(p_target))),
                  "brier": float(np.sum(unigram ** 2) - 2 * np.mean(p_target) + 1),
                  "bucket_nll": by_bucket(-np.log(p_target))},
    }
