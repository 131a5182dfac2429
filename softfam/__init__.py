"""softfam: softmax, Taylor softmax, spherical softmax and their losses, for JAX.

Every normalizer is ``p_i = f(x_i) / sum_j f(x_j)`` for a positive score ``f``: ``exp``
(softmax), the even Taylor polynomial ``T_n`` (Taylor softmax) or ``x^2 + eps`` (spherical
softmax). The losses follow ``optax.losses``: one value per example, no reduction.
"""

from softfam._factored import (
    FactoredOutput,
    condition_factored_output,
    dense_output_weights,
    factored_output,
    factored_statistics,
    factored_step,
)
from softfam._linear import (
    linear_softmax_cross_entropy_with_integer_labels,
    linear_spherical_softmax_cross_entropy_with_integer_labels,
    linear_squared_error_with_integer_labels,
    linear_taylor_softmax_cross_entropy_with_integer_labels,
    linear_z_loss_with_integer_labels,
)
from softfam._losses import (
    soft_margin_softmax_cross_entropy_with_integer_labels,
    soft_margin_taylor_softmax_cross_entropy_with_integer_labels,
    softmax_cross_entropy,
    softmax_cross_entropy_upper_bound_with_integer_labels,
    softmax_cross_entropy_with_integer_labels,
    spherical_softmax_cross_entropy,
    spherical_softmax_cross_entropy_with_integer_labels,
    squared_error_with_integer_labels,
    taylor_softmax_cross_entropy,
    taylor_softmax_cross_entropy_with_integer_labels,
    z_loss_with_integer_labels,
)
from softfam._normalizers import (
    log_softmax,
    log_spherical_softmax,
    log_taylor_softmax,
    softmax,
    spherical_softmax,
    taylor_softmax,
)
from softfam._spherical import (
    SphericalStatistics,
    softmax_cross_entropy_upper_bound_from_statistics,
    spherical_softmax_cross_entropy_from_statistics,
    spherical_statistics,
    squared_error_from_statistics,
    taylor_softmax_cross_entropy_from_statistics,
    z_loss_from_statistics,
)

__version__ = "0.1.0"

__all__ = [
    "FactoredOutput",
    "SphericalStatistics",
    "condition_factored_output",
    "dense_output_weights",
    "factored_output",
    "factored_statistics",
    "factored_step",
    "linear_softmax_cross_entropy_with_integer_labels",
    "linear_spherical_softmax_cross_entropy_with_integer_labels",
    "linear_squared_error_with_integer_labels",
    "linear_taylor_softmax_cross_entropy_with_integer_labels",
    "linear_z_loss_with_integer_labels",
    "log_softmax",
    "log_spherical_softmax",
    "log_taylor_softmax",
    "soft_margin_softmax_cross_entropy_with_integer_labels",
    "soft_margin_taylor_softmax_cross_entropy_with_integer_labels",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_upper_bound_from_statistics",
    "softmax_cross_entropy_upper_bound_with_integer_labels",
    "softmax_cross_entropy_with_integer_labels",
    "spherical_softmax",
    "spherical_softmax_cross_entropy",
    "spherical_softmax_cross_entropy_from_statistics",
    "spherical_softmax_cross_entropy_with_integer_labels",
    "spherical_statistics",
    "squared_error_from_statistics",
    "squared_error_with_integer_labels",
    "taylor_softmax",
    "taylor_softmax_cross_entropy",
    "taylor_softmax_cross_entropy_from_statistics",
    "taylor_softmax_cross_entropy_with_integer_labels",
    "z_loss_from_statistics",
    "z_loss_with_integer_labels",
]
