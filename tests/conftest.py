"""Strict JAX numerics for every test: no silent dtype or rank promotion, warnings are errors
(set in pyproject.toml). float64 is enabled only inside tests that ask for the `x64` fixture."""

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture
def hermetic_data(monkeypatch, tmp_path):
    """No $SOFTFAM_DATA and an empty system data directory, whatever the machine has."""
    from experiments.data import common

    monkeypatch.delenv("SOFTFAM_DATA", raising=False)
    monkeypatch.setattr(common, "SYSTEM_DATA_DIR", tmp_path / "system")
