"""The factored output layer: exact training of a spherical-family loss in O(d^2) per example.

A linear output layer ``o = W h`` (``W``: D x d) trained with a loss that sees ``o`` only
through the spherical statistics ``(o_c, s, q)`` never needs ``o`` (Vincent, de Brebisson
and Bouthillier 2015, arXiv 1412.7091). ``W`` is kept as ``W = V U + 1 w^T`` with

- ``U`` (d x d) and its inverse, so the part of the SGD step that multiplies ``W`` on the
  right is applied to ``U`` alone, and ``V`` (D x d) changes only in the target rows;
- ``Q = W^T W`` (d x d) and ``w_bar = W^T 1`` (d), so that ``q = h^T Q h`` and ``s = w_bar . h``;
- ``w`` (d), the bias-like vector that takes the ``s`` part of the step (``1 w^T``).

For a minibatch ``H`` (m x d, rows ``h_j``) with targets ``c_j``, the gradients of the mean
loss with respect to the statistics, ``g_o``, ``g_s``, ``g_q`` (m), give
``dL/do_j = g_oj e_cj + g_sj 1 + 2 g_qj o_j``, so the SGD step of rate ``eta`` on ``W`` is

    W' = W (I - M) + 1 a^T + Y H     with  M = 2 eta H^T diag(g_q) H,  a = -eta H^T g_s,

and ``Y`` (D x m) holds ``-eta g_oj`` at ``(c_j, j)``. Hence ``U' = U (I - M)``,
``w' = (I - M)^T w + a``, ``V'[c_j] -= eta g_oj (U'^-T h_j)``, and ``U'^-1 = (I - M)^-1 U^-1``
by Woodbury, ``(I - H^T A H)^-1 = I + H^T (I - A H H^T)^-1 A H`` with ``A = 2 eta diag(g_q)``;
``Q'`` and ``w_bar'`` follow from ``W'`` by exact low-rank corrections. The gradient for ``H``
is ``g_oj W[c_j] + g_sj w_bar + 2 g_qj Q h_j``. ``I - M`` is never formed (``X - H^T A H X``),
so all of it costs O(m d^2 + m^2 d), no d^3 product, plus an O(m d) scatter-add into ``V``.

Conditioning is a separate function, ``condition_factored_output``, called between jitted
steps (every few steps; outside ``jit``). It computes the singular values of ``U`` and
recomputes its inverse from them (O(d^3), nothing of size D). Only if some have left
``singular_range`` does it touch ``V``: at most ``max_corrections`` of them are set back to 1
by a rank-k change of ``U`` and the opposite change of ``V`` (O(D d k)); if more have, ``W`` is
unfactored (``V <- V U``, ``U <- I``, O(D d^2), rare), and ``Q`` and ``w_bar`` are recomputed
from ``W``. Neither changes ``W``. The step itself therefore never reads or writes ``V``
beyond the m target rows, and its cost does not grow with D.
"""

from __future__ import annotations

import inspect
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_STATISTICS_PARAMETERS = ("target_logit", "logit_sum", "logit_square_sum", "num_classes")


class FactoredOutput(NamedTuple):
    """The state of a factored output layer of weights ``W = V U + 1 w^T`` (D x d).

    Attributes:
      u: ``U`` (d, d).
      u_inverse: ``U^-1`` (d, d).
      v: ``V`` (D, d).
      gram: ``Q = W^T W`` (d, d).
      column_sums: ``w_bar = W^T 1`` (d,).
      offset: ``w`` (d,).
      steps: the number of updates so far (int32 scalar).
    """

    u: jax.Array
    u_inverse: jax.Array
    v: jax.Array
    gram: jax.Array
    column_sums: jax.Array
    offset: jax.Array
    steps: jax.Array


def factored_output(weights: jax.typing.ArrayLike) -> FactoredOutput:
    """The factored state of the dense output weights ``W`` (D, d): ``V = W``, ``U = I``, ``w = 0``.

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> state = softfam.factored_output(jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
      >>> state.gram.tolist(), state.column_sums.tolist()
      ([[35.0, 44.0], [44.0, 56.0]], [9.0, 12.0])
    """
    w = jnp.asarray(weights)
    if w.ndim != 2 or not jnp.issubdtype(w.dtype, jnp.floating):
        raise ValueError(f"weights must be a floating (D, d) matrix, got {w.dtype} of shape {w.shape}")
    d = w.shape[1]
    eye = jnp.eye(d, dtype=w.dtype)
    return FactoredOutput(eye, eye.copy(), w.copy(), w.T @ w, jnp.sum(w, 0), jnp.zeros(d, w.dtype),
                          jnp.zeros((), jnp.int32))  # distinct buffers, so that all can be donated


def dense_output_weights(state: FactoredOutput) -> jax.Array:
    """The dense weights ``W = V U + 1 w^T`` (D, d): O(D d^2).

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> w = jnp.array([[1.0, 2.0], [3.0, 4.0]])
      >>> softfam.dense_output_weights(softfam.factored_output(w)).tolist()
      [[1.0, 2.0], [3.0, 4.0]]
    """
    return state.v @ state.u + state.offset[None, :]


def _target_rows(state: FactoredOutput, labels: jax.Array) -> jax.Array:
    """``W[c_j]`` (m, d) for the targets ``c_j``: O(m d^2)."""
    return state.v[labels] @ state.u + state.offset[None, :]


def factored_statistics(state: FactoredOutput, hidden: jax.typing.ArrayLike,
                        labels: jax.typing.ArrayLike) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The spherical statistics of ``o = W h`` for each row of ``hidden`` (m, d), without ``o``.

    Returns ``(o_c, s, q)``, each (m,): ``o_c = W[c] . h``, ``s = w_bar . h``, ``q = h^T Q h``;
    O(m d^2).

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> state = softfam.factored_output(jnp.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
      >>> o_c, s, q = softfam.factored_statistics(state, jnp.array([[1.0, 1.0]]), jnp.array([1]))
      >>> o_c.tolist(), s.tolist(), q.tolist()  # o = [1, 2, 2]
      ([2.0], [5.0], [9.0])
    """
    hidden, labels = _check_batch(state, hidden, labels)
    target_logit = jnp.sum(_target_rows(state, labels) * hidden, -1)
    return target_logit, hidden @ state.column_sums, jnp.sum((hidden @ state.gram) * hidden, -1)


def _check_batch(state: FactoredOutput, hidden, labels) -> tuple[jax.Array, jax.Array]:
    hidden, labels = jnp.asarray(hidden), jnp.asarray(labels)
    d = state.u.shape[0]
    if hidden.ndim != 2 or hidden.shape[1] != d:
        raise ValueError(f"hidden must have shape (m, {d}) for this layer, got {hidden.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.shape != hidden.shape[:1]:
        raise ValueError(f"labels must be integers of shape ({hidden.shape[0]},), "
                         f"got {labels.dtype} of shape {labels.shape}")
    return hidden.astype(state.u.dtype), labels


def _check_loss(loss_from_statistics: Callable) -> None:
    try:
        names = tuple(inspect.signature(loss_from_statistics).parameters)[:4]
    except (TypeError, ValueError):
        names = ()
    if names != _STATISTICS_PARAMETERS:
        name = getattr(loss_from_statistics, "__name__", repr(loss_from_statistics))
        raise TypeError(
            f"loss_from_statistics must be a spherical-family loss written on the statistics "
            f"{_STATISTICS_PARAMETERS} (for example softfam.taylor_softmax_cross_entropy_from_"
            f"statistics, with its keywords bound by functools.partial); {name} takes "
            f"{names or 'other arguments'}. Losses that need every output, such as the "
            "log-softmax, cannot be trained by the factored layer."
        )


def factored_step(
    state: FactoredOutput,
    hidden: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    loss_from_statistics: Callable[..., jax.Array],
    learning_rate: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array, FactoredOutput]:
    """One exact SGD step of ``W`` on the mean over the minibatch of a spherical-family loss.

    Args:
      state: the layer (``factored_output``).
      hidden: ``H`` (m, d), the layer's inputs.
      labels: integer targets (m,) in ``[0, D)``.
      loss_from_statistics: a loss on ``(o_c, s, q, num_classes)`` returning one value per
        example, e.g. ``softfam.z_loss_from_statistics`` (bind keywords with ``partial``).
      learning_rate: ``eta``.

    Returns:
      ``(loss, grad_hidden, new_state)``: the mean loss before the step, its gradient with
      respect to ``hidden`` (m, d), for backpropagation, and the state after
      ``W <- W - eta dL/dW``. Cost O(m d^2 + m^2 d), whatever D. Under ``jax.jit``, donate
      ``state`` so that ``V`` is updated in place; call ``condition_factored_output`` every
      few steps.

    Example:
      >>> import functools, jax.numpy as jnp, softfam
      >>> state = softfam.factored_output(jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
      >>> loss, grad_h, state = softfam.factored_step(
      ...     state, jnp.array([[1.0, -1.0]]), jnp.array([0]),
      ...     softfam.squared_error_from_statistics, 0.1)
      >>> float(loss)  # o = [1, -1, 0], target 0: (1 - 1)^2 + 1 + 0
      1.0
      >>> print(softfam.dense_output_weights(state).round(6))  # row 1 -= 0.1 * 2 * (-1) * h
      [[1.  0. ]
       [0.2 0.8]
       [1.  1. ]]
    """
    _check_loss(loss_from_statistics)
    hidden, labels = _check_batch(state, hidden, labels)
    num_classes = state.v.shape[0]
    m, d = hidden.shape
    dtype = state.u.dtype
    eta = jnp.asarray(learning_rate, dtype)

    target_rows = _target_rows(state, labels)  # W[c_j], (m, d)
    hidden_gram = hidden @ state.gram  # rows (Q h_j)^T
    statistics = (jnp.sum(target_rows * hidden, -1), hidden @ state.column_sums,
                  jnp.sum(hidden_gram * hidden, -1))

    def mean_loss(target_logit, logit_sum, logit_square_sum):
        per_example = loss_from_statistics(target_logit, logit_sum, logit_square_sum, num_classes)
        return jnp.mean(per_example.astype(dtype))

    loss, (g_o, g_s, g_q) = jax.value_and_grad(mean_loss, argnums=(0, 1, 2))(*statistics)
    grad_hidden = (g_o[:, None] * target_rows + g_s[:, None] * state.column_sums[None, :]
                   + 2 * g_q[:, None] * hidden_gram)

    # W' = W K + 1 a^T + Y H with K = I - M, M = H^T A H, A = 2 eta diag(g_q), a = -eta H^T g_s.
    # K is symmetric and never formed: K X = X - H^T A H X costs O(m d k) for X (d, k).
    a_diag = 2 * eta * g_q

    def keep(x):  # K x for x of shape (d,) or (d, k)
        return x - hidden.T @ ((a_diag if x.ndim == 1 else a_diag[:, None]) * (hidden @ x))

    a = -eta * (hidden.T @ g_s)
    y = -eta * g_o  # Y's entries, at rows c_j
    u = keep(state.u.T).T  # U K
    # K^-1 = I + H^T (I_m - A H H^T)^-1 A H  (Woodbury, no inverse of A needed)
    small = jnp.eye(m, dtype=dtype) - a_diag[:, None] * (hidden @ hidden.T)
    woodbury = jnp.linalg.solve(small, a_diag[:, None] * hidden)  # (m, d)
    u_inverse = state.u_inverse + hidden.T @ (woodbury @ state.u_inverse)  # K^-1 U^-1
    # V'[c_j] += y_j (U'^-T h_j): W' - W K - 1 a^T = Y H = (V' - V) U'.
    v = state.v.at[labels].add(y[:, None] * (hidden @ u_inverse))
    offset = keep(state.offset) + a
    # w_bar' = K w_bar + D a + H^T Y^T 1
    wbar_k = keep(state.column_sums)  # K W^T 1
    y_sum = hidden.T @ y  # H^T Y^T 1
    column_sums = wbar_k + num_classes * a + y_sum
    # Q' = W'^T W' = K Q K + C + C^T + D a a^T + H^T Y^T Y H, with
    # C = K W^T 1 a^T + K W^T Y H + a (Y^T 1)^T H, W^T Y = target_rows^T diag(y)
    # and K Q K = Q - M Q - Q M + H^T A (H Q H^T) A H. Every term in H on both sides is
    # H^T X H + Z^T H + H^T Z = P + P^T with P = H^T (X H / 2 + Z) (X symmetric, m x m):
    # X = A (H Q H^T) A + Y^T Y - B - B^T, B = A (H W^T Y) (from K W^T Y H), and
    # Z = Y^T W - A H Q (from W^T Y H and M Q); so one (d, m) @ (m, d) product.
    same_target = (labels[:, None] == labels[None, :]).astype(dtype)
    b = a_diag[:, None] * (hidden @ target_rows.T) * y[None, :]
    x = (a_diag[:, None] * (hidden_gram @ hidden.T) * a_diag[None, :]
         + same_target * (y[:, None] * y[None, :]) - b - b.T)
    p = hidden.T @ (x @ hidden / 2 + y[:, None] * target_rows - a_diag[:, None] * hidden_gram)
    rank_one = jnp.outer(wbar_k, a) + jnp.outer(a, y_sum)
    gram = state.gram + p + p.T + rank_one + rank_one.T + num_classes * jnp.outer(a, a)
    return loss, grad_hidden, FactoredOutput(u, u_inverse, v, gram, column_sums, offset, state.steps + 1)


@jax.jit
def _decompose(u: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``U = P S R^T`` and ``U^-1 = R S^-1 P^T``: ``(P, S, R^T, U^-1)``, O(d^3)."""
    left, sigma, right_t = jnp.linalg.svd(u)
    return left, sigma, right_t, (right_t.T / sigma[None, :]) @ left.T


@jax.jit
def _correct(state: FactoredOutput, left, sigma, right_t, drifted) -> FactoredOutput:
    """Sets the singular values of ``U`` at the indices ``drifted`` (k,) back to 1: with
    ``B = I + P_k (S_k - 1) P_k^T``,
    ``U' = B^-1 U = U + P_k (1 - S_k) R_k^T`` has singular values 1 at k, ``V' = V B`` keeps
    ``V' U' = V U`` (O(D d k)), and ``U'^-1 = U^-1 B``."""
    p, r = left[:, drifted], right_t[drifted].T  # (d, k)
    stretch = sigma[drifted] - 1  # S_k - 1
    return state._replace(
        u=state.u - (p * stretch[None, :]) @ r.T,
        u_inverse=state.u_inverse + (state.u_inverse @ p) * stretch[None, :] @ p.T,
        v=state.v + (state.v @ p) * stretch[None, :] @ p.T,
    )


@jax.jit
def _unfactor(state: FactoredOutput) -> FactoredOutput:
    """``V <- W - 1 w^T``, ``U <- I``, and ``Q``, ``w_bar`` recomputed from ``W``: O(D d^2)."""
    w = dense_output_weights(state)
    eye = jnp.eye(state.u.shape[0], dtype=state.u.dtype)
    return state._replace(u=eye, u_inverse=eye, v=w - state.offset[None, :], gram=w.T @ w,
                          column_sums=jnp.sum(w, 0))


def condition_factored_output(
    state: FactoredOutput,
    *,
    singular_range: tuple[float, float] = (0.5, 2.0),
    max_corrections: int = 8,
) -> FactoredOutput:
    """The same weights ``W`` with ``U`` well conditioned and ``U^-1`` recomputed exactly.

    Call it between jitted ``factored_step`` calls, every few steps (each step moves the
    singular values of ``U`` by a factor ``I - M``; 10 is a safe default), not under ``jit``:
    whether ``V`` must change is decided here, on the host, from the SVD of ``U`` (O(d^3)).
    Only if some singular values have left ``singular_range`` is ``V`` touched: up to
    ``max_corrections`` of them are set back to 1 in O(D d k), more unfactor ``W`` in O(D d^2).

    Example:
      >>> import jax.numpy as jnp, softfam
      >>> state = softfam.factored_output(jnp.array([[1.0, 2.0], [3.0, 4.0]]))
      >>> state = state._replace(u=jnp.diag(jnp.array([0.25, 1.0])), u_inverse=jnp.eye(2))
      >>> softfam.condition_factored_output(state).u.tolist()  # 0.25 is out of (0.5, 2)
      [[1.0, 0.0], [0.0, 1.0]]
    """
    if isinstance(state.u, jax.core.Tracer):
        raise TypeError("condition_factored_output decides on the host whether V must change: "
                        "call it outside jax.jit, between jitted factored_step calls")
    left, sigma, right_t, u_inverse = _decompose(state.u)
    state = state._replace(u_inverse=u_inverse)
    low, high = singular_range
    drifted = np.asarray((sigma < low) | (sigma > high))
    if not drifted.any():
        return state
    if drifted.sum() > max_corrections:
        return _unfactor(state)
    return _correct(state, left, sigma, right_t, np.flatnonzero(drifted))
