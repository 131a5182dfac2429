"""The experiments, one config each: ``python -m experiments list`` shows them.

Each function's docstring gives the command that runs it, its measured run time on 2 CPU
cores, and what it writes.
"""

from __future__ import annotations

from typing import Callable

from experiments.comparison import ComparisonConfig


def digits_mlp() -> ComparisonConfig:
    """The quick comparison: 8 losses on the 8x8 digits with a 64-128-128-10 ReLU MLP.

    Command: ``python -m experiments run digits-mlp`` (measured: 98 seconds on 2 CPU cores).
    Writes ``results/digits-mlp/``: ``table.md``, ``learning_curves.png``,
    ``reliability.png`` and the run directories under ``runs/``.
    """
    return ComparisonConfig(
        name="digits-mlp", dataset="digits", model="mlp", widths=(128, 128), epochs=30,
        batch_size=64, learning_rates=(1e-3, 3e-3, 1e-2),
        command="python -m experiments run digits-mlp",
    )


def fashion_mnist_mlp() -> ComparisonConfig:
    """8 losses on Fashion-MNIST with a 784-256-256-10 ReLU MLP, Adam, 10 epochs.

    Command: ``python -m experiments run fashion-mnist-mlp`` (measured: 15 minutes on 2 CPU cores).
    Writes ``results/fashion-mnist-mlp/`` (table, plots, run directories).
    """
    return ComparisonConfig(
        name="fashion-mnist-mlp", dataset="fashion-mnist", model="mlp", widths=(256, 256),
        epochs=10, batch_size=128, learning_rates=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
        command="python -m experiments run fashion-mnist-mlp",
    )


def fashion_mnist_cnn() -> ComparisonConfig:
    """8 losses on Fashion-MNIST with a small CNN (two 5x5 stride-2 ReLU convolutions of 8 and
    16 channels, a ReLU layer of 64, the output layer), Adam, 3 epochs: sized so that the
    whole comparison fits in under an hour of 2 CPU cores.

    Command: ``python -m experiments run fashion-mnist-cnn`` (measured: 50 minutes on 2 CPU cores).
    Writes ``results/fashion-mnist-cnn/`` (table, plots, run directories).
    """
    return ComparisonConfig(
        name="fashion-mnist-cnn", dataset="fashion-mnist", model="cnn", widths=(8, 16, 64),
        epochs=3, batch_size=128, learning_rates=(1e-3, 3e-3),
        command="python -m experiments run fashion-mnist-cnn",
    )


def tiny() -> ComparisonConfig:
    """A seconds-long end-to-end check on real data (used by the tests): two losses, 512
    Fashion-MNIST training images, a 32-unit MLP, 2 epochs, 2 seeds.

    Command: ``python -m experiments run tiny --output /tmp/tiny`` (about 20 seconds).
    """
    return ComparisonConfig(
        name="tiny", dataset="fashion-mnist", model="mlp", widths=(32,), epochs=2,
        batch_size=64, learning_rates=(1e-3, 1e-2), losses=("log-softmax", "log-spherical"),
        seeds=(0, 1), train_subset=512, command="python -m experiments run tiny --output /tmp/tiny",
    )


CONFIGS: dict[str, Callable[[], ComparisonConfig]] = {
    "digits-mlp": digits_mlp,
    "fashion-mnist-mlp": fashion_mnist_mlp,
    "fashion-mnist-cnn": fashion_mnist_cnn,
    "tiny": tiny,
}


def get(name: str) -> ComparisonConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown experiment {name!r}; known experiments: {', '.join(CONFIGS)}")
    return CONFIGS[name]()
