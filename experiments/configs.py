"""The experiments, one config each: ``python -m experiments list`` shows them.

Each function's docstring gives the command that runs it, its measured run time on 2 CPU
cores, and what it writes.
"""

from __future__ import annotations

from typing import Callable, Union

from experiments.comparison import ComparisonConfig
from experiments.study import StudyConfig

# The losses of the many-class comparisons: log-softmax and the spherical family.
MANY_CLASS_LOSSES = ("log-softmax", "log-taylor-2", "log-spherical", "z-loss", "squared-error")


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


def _wordnet(vocabulary: str, seeds: tuple[int, ...], command: str) -> ComparisonConfig:
    return ComparisonConfig(
        name=f"wordnet-{vocabulary}", dataset=f"wordnet-{vocabulary}", model="ngram",
        widths=(32, 128), epochs=3, batch_size=256, learning_rates=(1e-3, 3e-3),
        losses=MANY_CLASS_LOSSES, seeds=seeds, train_subset=50_000, command=command,
    )


def wordnet_lm() -> StudyConfig:
    """Language modelling on the WordNet glosses with vocabularies of 1k, 10k and all training
    tokens: a 5-gram feed-forward model (4 context tokens, shared 32-d embeddings, one ReLU
    layer of 128), 3 epochs of Adam over a fixed random 50,000 training windows, 5 losses,
    5 seeds (3 with the full vocabulary, for time).

    Command: ``python -m experiments run wordnet-lm`` (about 105 minutes on 2 CPU cores: 1.5
    for 1k words, 12 for 10k, 90 for the full vocabulary).
    Writes ``results/wordnet-lm/``: a table and learning curves per vocabulary
    (``wordnet-1000/``, ``wordnet-10000/``, ``wordnet-full/``), and the losses against the
    vocabulary size (``table.md``, ``output_size.png``).
    """
    command = "python -m experiments run wordnet-lm"
    return StudyConfig(
        name="wordnet-lm",
        description="Word-level language modelling on the WordNet 3.0 glosses (experiments.text); "
                    "D is the vocabulary size with </s> and <unk>.",
        comparisons=(_wordnet("1000", (0, 1, 2, 3, 4), command),
                     _wordnet("10000", (0, 1, 2, 3, 4), command),
                     _wordnet("full", (0, 1, 2), command)),
        command=command,
    )


def output_size() -> StudyConfig:
    """The controlled output-size study: the synthetic teacher task (experiments.synthetic,
    20,000 training examples) with D = 2, 4, 10, 100, 1000 and 10000 classes, a 16-128-D ReLU MLP,
    10 epochs of Adam, 5 losses, learning rates 1e-3 to 0.1, 5 seeds.

    Command: ``python -m experiments run output-size`` (28 minutes on 2 CPU cores).
    Writes ``results/output-size/``: a table per D (``teacher-<D>/``) and the losses against D
    (``table.md``, ``output_size.png``).
    """
    command = "python -m experiments run output-size"
    return StudyConfig(
        name="output-size",
        description="The synthetic teacher task (experiments.synthetic): Gaussian inputs labelled by "
                    "a fixed random ReLU network with a Zipf prior over the D classes.",
        comparisons=tuple(
            ComparisonConfig(
                name=f"teacher-{d}", dataset=f"teacher-{d}", model="mlp", widths=(128,),
                epochs=10, batch_size=128, learning_rates=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
                losses=MANY_CLASS_LOSSES, command=command,
            )
            for d in (2, 4, 10, 100, 1000, 10000)
        ),
        command=command,
    )


def wordnet_factored() -> ComparisonConfig:
    """The factored output layer in use: the full-vocabulary WordNet language model of
    ``wordnet-lm`` trained by plain SGD, with the output layer of log-Taylor, log-spherical,
    Z-loss and squared error trained by softfam's factored layer (exact, O(d^2) per token)
    and log-softmax's by the dense layer; 3 seeds.

    Command: ``python -m experiments run wordnet-factored`` (64 minutes on 2 CPU cores, part
    of it shared with a test run; most of it is evaluation and the dense log-softmax).
    Writes ``results/wordnet-factored/``: table (with seconds per epoch), learning curves.
    """
    return ComparisonConfig(
        name="wordnet-factored", dataset="wordnet-full", model="ngram", widths=(32, 128),
        epochs=3, batch_size=256, learning_rates=(0.1, 0.3, 1.0), losses=MANY_CLASS_LOSSES,
        seeds=(0, 1, 2), train_subset=50_000, optimizer="sgd", output_layer="factored",
        command="python -m experiments run wordnet-factored",
    )


def tiny_lm() -> StudyConfig:
    """A seconds-long end-to-end check of the language-model path (used by the tests):
    WordNet with vocabularies of 10 and 100 words, 3 losses, 2 seeds, 512 windows.

    Command: ``python -m experiments run tiny-lm --output /tmp/tiny-lm`` (about 30 seconds).
    """
    command = "python -m experiments run tiny-lm --output /tmp/tiny-lm"
    return StudyConfig(
        name="tiny-lm", description="A tiny check of the language-model path.",
        comparisons=tuple(
            ComparisonConfig(
                name=f"wordnet-{vocabulary}", dataset=f"wordnet-{vocabulary}", model="ngram",
                widths=(8, 16), epochs=2, batch_size=64, learning_rates=(1e-2,),
                losses=("log-softmax", "log-taylor-2", "squared-error"), seeds=(0, 1), train_subset=512,
                command=command,
            )
            for vocabulary in ("10", "100")
        ),
        command=command,
    )


CONFIGS: dict[str, Callable[[], Union[ComparisonConfig, StudyConfig]]] = {
    "digits-mlp": digits_mlp,
    "fashion-mnist-mlp": fashion_mnist_mlp,
    "fashion-mnist-cnn": fashion_mnist_cnn,
    "tiny": tiny,
    "wordnet-lm": wordnet_lm,
    "output-size": output_size,
    "tiny-lm": tiny_lm,
    "wordnet-factored": wordnet_factored,
}


def get(name: str) -> Union[ComparisonConfig, StudyConfig]:
    if name not in CONFIGS:
        raise ValueError(f"unknown experiment {name!r}; known experiments: {', '.join(CONFIGS)}")
    return CONFIGS[name]()
