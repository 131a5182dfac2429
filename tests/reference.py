"""Independent NumPy float64 references: each normalizer's score f, probabilities f / sum f,
and every loss written from its definition on the full logit vector."""

from __future__ import annotations

import math

import numpy as np


def exp_score(x):
    return np.exp(x)


def taylor_score(order):
    def score(x):
        return sum(x**k / math.factorial(k) for k in range(order + 1))

    return score


def spherical_score(epsilon):
    def score(x):
        return x * x + epsilon

    return score


def scores(score, x, mask=None, axis=-1):
    """f(x) in float64, 0 where masked; softmax scores are shifted by the max for range."""
    x = np.asarray(x, np.float64)
    if score is exp_score:
        shift = np.max(np.where(mask, x, -np.inf) if mask is not None else x, axis, keepdims=True)
        x = x - np.where(np.isfinite(shift), shift, 0)
    f = score(x)
    return f if mask is None else np.where(mask, f, 0.0)


def probabilities(score, x, axis=-1, mask=None):
    f = scores(score, x, mask, axis)
    total = np.sum(f, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, f / total, 0.0)


def log_probabilities(score, x, axis=-1, mask=None):
    """log p; for softmax x - max - log sum exp(x - max), which does not underflow."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if score is not exp_score:
            return np.log(probabilities(score, x, axis, mask))
        x = np.asarray(x, np.float64)
        if mask is not None:
            x = np.where(mask, x, -np.inf)
        shift = np.max(x, axis, keepdims=True)
        shifted = x - np.where(np.isfinite(shift), shift, 0)
        return shifted - np.log(np.sum(np.exp(shifted), axis, keepdims=True))


def one_hot(labels, num_classes):
    return np.eye(num_classes)[labels]


def integer_label_nll(score, logits, labels, mask=None, margin=0.0):
    """-log p_c with p_c = f(x_c - m) / (f(x_c - m) + sum_{j != c} f(x_j)), classes last."""
    x = np.asarray(logits, np.float64)
    target = one_hot(labels, x.shape[-1]).astype(bool)
    x = np.where(target, x - margin, x)
    p = probabilities(score, x, mask=mask)
    with np.errstate(divide="ignore"):
        loss = -np.log(np.sum(np.where(target, p, 0.0), -1))
    return loss if mask is None else np.where(mask.any(-1), loss, 0.0)


def squared_error(logits, labels, mask=None):
    x = np.asarray(logits, np.float64)
    err = (x - one_hot(labels, x.shape[-1])) ** 2
    return np.sum(err if mask is None else np.where(mask, err, 0.0), -1)


def _unmasked(logits, labels, mask):
    """Per example: the unmasked logits and the target's logit."""
    x = np.asarray(logits, np.float64)
    rows = [x[i] if mask is None else x[i][mask[i]] for i in range(len(x))]
    return rows, x[np.arange(len(x)), labels]


def z_loss(logits, labels, a, b, mask=None):
    rows, target = _unmasked(logits, labels, mask)
    out = []
    for row, o_c in zip(rows, target):
        if len(row) == 0:
            out.append(0.0)
            continue
        z = (o_c - row.mean()) / row.std() if row.std() > 0 else 0.0  # no spread: z_c = 0
        out.append(np.logaddexp(0.0, a * (b - z)) / a)
    return np.array(out)


def softmax_upper_bound(logits, labels, xi, mask=None):
    """Bouchard's bound built step by step: alpha + sum_k JJ(o_k - alpha) - o_c at the optimal
    alpha = mean + (D - 2) / (4 lam D), JJ the quadratic upper bound of log(1 + e^x) at +-xi."""
    rows, target = _unmasked(logits, labels, mask)
    lam = (1 / (1 + np.exp(-xi)) - 0.5) / (2 * xi)
    out = []
    for row, o_c in zip(rows, target):
        d = len(row)
        if d == 0:
            out.append(0.0)
            continue
        alpha = row.mean() + (d - 2) / (4 * lam * d)
        t = row - alpha
        jj = lam * (t * t - xi * xi) + (t - xi) / 2 + np.logaddexp(0.0, xi)
        out.append(alpha + jj.sum() - o_c)
    return np.array(out)


def logsumexp_nll(logits, labels):
    x = np.asarray(logits, np.float64)
    m = x.max(-1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(-1)) + m[..., 0]
    return lse - x[np.arange(len(x)), labels]
