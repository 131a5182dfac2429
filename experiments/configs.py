"""The experiments, one ``Config`` each (a study: several), by name.

``python -m experiments list`` shows them, ``python -m experiments show NAME`` prints a config's
fields, and any field can be overridden on the command line, flax-examples style, with lists
separated by commas (``experiments.config.override``)::

    python -m experiments run digits-mlp --config.losses=log-softmax,log-taylor-2 \\
        --config.seeds=0,1 --config.max_epochs=3 --config.dropout=0.1

An override of a study applies to each of its comparisons. Each function's docstring gives
the command that runs it, its measured run time on 2 CPU cores, and what it writes.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Union

from experiments.config import Config, override
from experiments.losses import MANY_CLASS


def digits_mlp() -> Config:
    """The quick comparison: 8 losses on the 8x8 digits with a 64-128-128-10 ReLU MLP, under
    the comparison protocol made light enough for a quick start: batch 64, early stopping
    with patience 5 (up to 200 epochs).

    Command: ``python -m experiments run digits-mlp`` (measured: 54 seconds on 2 CPU cores from
    a cold compilation cache, 2026-12-07; seconds where the records are committed).
    Writes ``results/digits-mlp/``: ``table.md``, ``learning_curves.png``,
    ``reliability.png`` and the records (``experiments.records``).
    """
    return Config(name="digits-mlp", dataset="digits", model="mlp", widths=(128, 128),
                  max_epochs=200, patience=5, batch_size=64)


def fashion_mnist_mlp() -> Config:
    """8 losses on Fashion-MNIST with a 784-256-256-10 ReLU MLP under the comparison protocol:
    Adam, batch 128, early stopping with patience 5 (up to 100 epochs), 2 tuning seeds, then
    20 final seeds per loss, so that a difference of about 0.15 points of test error between
    log-softmax and log-Taylor or log-spherical can be resolved (a pilot of the 5-seed table had
    a per-seed sd of about 0.3 points).

    Command: ``python -m experiments run fashion-mnist-mlp`` (about 95 minutes on 2 CPU cores,
    partly shared with other work; one epoch is 0.53 s; resumable).
    Writes ``results/fashion-mnist-mlp/`` (table, plots, records).
    """
    return Config(name="fashion-mnist-mlp", dataset="fashion-mnist", model="mlp",
                  widths=(256, 256), search={"learning_rate": (3e-4, 1e-3, 3e-3)},
                  max_epochs=100, patience=5, seeds=tuple(range(20)))


def fashion_mnist_cnn() -> Config:
    """8 losses on Fashion-MNIST with a small CNN (two 5x5 stride-2 ReLU convolutions of 8 and
    16 channels, a ReLU layer of 64, the output layer) under the comparison protocol: Adam,
    batch 128, early stopping with patience 5 up to 100 epochs, 2 tuning seeds, 5 final seeds.
    Cut to the first 20,000 training images: on all 54,000 an epoch took 18 s (measured with
    another run on the machine), about 13 hours for the study; on 20,000 it took about 4.5
    hours of training, over several sittings (it resumes).

    Command: ``python -m experiments run fashion-mnist-cnn``.
    Writes ``results/fashion-mnist-cnn/`` (table, plots, records).
    """
    return Config(name="fashion-mnist-cnn", dataset="fashion-mnist", model="cnn",
                  widths=(8, 16, 64), search={"learning_rate": (3e-4, 1e-3, 3e-3)},
                  max_epochs=100, patience=5, train_subset=20_000)


def tiny() -> Config:
    """A seconds-long end-to-end check on real data (used by the tests): two losses, 512
    Fashion-MNIST training images, a 32-unit MLP, 2 epochs, 2 seeds.

    Command: ``python -m experiments run tiny --output /tmp/tiny`` (about 20 seconds).
    """
    return Config(name="tiny", dataset="fashion-mnist", model="mlp", widths=(32,), max_epochs=2,
                  batch_size=64, search={"learning_rate": (1e-3, 1e-2)},
                  losses=("log-softmax", "log-spherical"),
                  seeds=(0, 1), train_subset=512)


WORDNET = ("Word-level language modelling on the WordNet 3.0 glosses (experiments.data.text); "
           "D is the vocabulary size with </s> and <unk>.")


def _wordnet(name: str, vocabulary: str, train_subset: int) -> Config:
    return Config(name=name, dataset=f"wordnet-{vocabulary}", model="ngram", widths=(32, 128),
                  losses=MANY_CLASS, max_epochs=50,
                  patience=3, batch_size=256, train_subset=train_subset, output_layer="linear",
                  description=WORDNET)


def wordnet_lm() -> Config:
    """Language modelling on the WordNet glosses with a 10k-word vocabulary under the comparison
    protocol: a 5-gram feed-forward model (4 context tokens, shared 32-d embeddings, one ReLU
    layer of 128) trained with Adam, batch 256, on a fixed 1,000,000 of the 1,614,866 training
    windows (20 times the first format's 50,000), stopped on validation perplexity with patience
    3 up to 50 epochs; 2 tuning seeds, 5 final seeds, 5 losses, each through its linear loss
    (the dense loss's values and gradients without the logits).

    Command: ``python -m experiments run wordnet-lm`` (26 hours of training on 2 CPU cores,
    over several sittings: its findings give the compute plan; resumable).
    Writes ``results/wordnet-lm/`` (table with perplexity by word frequency, plots, records).
    """
    return _wordnet("wordnet-lm", "10000", 1_000_000)


def wordnet_linear() -> Config:
    """The full-vocabulary WordNet language model (59,335 words with </s> and <unk>) trained
    with Adam through the linear losses, so that every loss shares one optimizer without
    building the (batch, D) logits; ``wordnet-lm``'s model and protocol on a fixed 200,000
    training windows (cut for time) and up to 200 epochs, with log-softmax through the dense
    logits timed beside. Batch 1024, not 256: a spherical-family step costs about the same at
    either size (two O(V d^2) products with the (d, V) kernel), so its epoch is 4 times
    cheaper. log-spherical's epsilon starts at 10, where ``wordnet-lm``'s tuning had its
    lowest validation perplexity when this was set (2026-12-01, before its tuning ended), and
    may widen up to 1000.

    Command: ``python -m experiments run wordnet-linear`` (17-20 hours on 2 CPU cores,
    over several sittings: its findings give the compute plan; resumable).
    Writes ``results/wordnet-linear/`` (table with memory and tokens per second, plots, records).
    """
    return dataclasses.replace(_wordnet("wordnet-linear", "full", 200_000), max_epochs=200,
                               batch_size=1024, search={"epsilon": (10.0,)},
                               search_bounds={"epsilon": (1e-6, 1000.0)})


def wordnet_regularized() -> Config:
    """The many-class question under regularization: ``wordnet-lm``'s 10k-word model on a
    fixed 200,000 training windows, each loss tuned by the same budget of a quasi-random
    search, 16 points on 2 tuning seeds, over the learning rate (1e-4 to 1e-2), dropout (0 to
    0.5), weight decay (0 to 0.1) and epsilon (0.1 to 1000, log-spherical) or label smoothing
    (0 to 0.3, label-smoothed log-softmax, the smoothing control); Adam through the linear
    losses with a linear warmup over half an epoch and a cosine decay to epoch 30, validated
    every 391 steps (twice an epoch of 781) and stopped after 6 validations without improvement;
    5 final seeds per loss, each also mixed with the unigram by the weight that minimises its
    validation NLL.

    Command: ``python -m experiments run wordnet-regularized`` (planned at about 12.5 hours on
    2 CPU cores, over several sittings: its findings give the compute plan; resumable).
    Writes ``results/wordnet-regularized/`` (table, plots, records).
    """
    return Config(
        name="wordnet-regularized", dataset="wordnet-10000", model="ngram", widths=(32, 128),
        losses=("log-softmax", "log-taylor-2", "log-spherical", "label-smoothed-log-softmax"),
        batch_size=256, train_subset=200_000, max_epochs=30, patience=6, eval_every=391,
        schedule="warmup-cosine", warmup_epochs=0.5, output_layer="linear", tuning="random",
        trials=16, search={"learning_rate": (1e-4, 1e-2), "dropout": (0.0, 0.5),
                           "weight_decay": (0.0, 0.1), "epsilon": (0.1, 1000.0),
                           "label_smoothing": (0.0, 0.3)},
        search_bounds={"epsilon": (1e-6, 1000.0)}, description=WORDNET)


def wordnet_regularized_data_size() -> tuple[Config, ...]:
    """The data size under regularization: ``wordnet-regularized``'s log-softmax, log-Taylor-2
    and log-spherical at 200,000 training windows (its own size) and 1,000,000, each loss with
    the hyperparameters chosen in ``results/wordnet-regularized`` (tuning again at 1,000,000
    would cost about 5 times that tuning), 5 seeds; the schedule and the epoch cap in epochs,
    validation every 391 steps as there. All 1,614,866 windows are cut for time: at the
    measured pace (log-Taylor-2 and log-spherical run to the 30-epoch cap) they would add
    about 6 hours. The 200,000 comparison trains that comparison's final models again: the
    study's first point, and a check that they reproduce.

    Command: ``python -m experiments run wordnet-regularized-data-size``, once
    ``wordnet-regularized`` has its final models (planned at about 4.5 hours on 2 CPU cores: the
    findings of ``wordnet-regularized`` give the plan; resumable). Writes
    ``results/wordnet-regularized-data-size/``: a comparison per size, and each loss's test
    metrics against the number of training windows N (``table.md``, ``data_size.png``).
    """
    tuned = wordnet_regularized()
    return tuple(
        dataclasses.replace(tuned, name=f"wordnet-regularized-{label}", train_subset=size,
                            losses=tuned.losses[:3], points_from="results/wordnet-regularized")
        for label, size in (("200k", 200_000), ("1m", 1_000_000)))


TEACHERS = {
    "teacher": "labelled by the argmax of its scores (Bayes error 0)",
    "softmax-teacher": "labelled by a draw from the softmax of its scores",
    "taylor-teacher": "labelled by a draw from the order-2 Taylor softmax of its scores",
}


def _output_size(kind: str) -> tuple[Config, ...]:
    description = ("The synthetic teacher task (experiments.data.synthetic): Gaussian inputs, a "
                   "fixed random ReLU network with a Zipf prior over the D classes, "
                   f"{TEACHERS[kind]}.")
    return tuple(
        Config(name=f"{kind}-{d}", dataset=f"{kind}-{d}", model="mlp", widths=(128,),
               losses=MANY_CLASS, max_epochs=200, patience=5, description=description)
        for d in (2, 4, 10, 100, 1000)
    )


def output_size() -> tuple[Config, ...]:
    """The controlled output-size study on the deterministic teacher: the synthetic task
    (experiments.data.synthetic, 20,000 training examples) labelled by the argmax of the
    teacher's scores, with D = 2, 4, 10, 100 and 1000 classes, a 16-128-D ReLU MLP, 5 losses,
    under the comparison protocol (Adam, early stopping with patience 5 up to 200 epochs, 2
    tuning seeds, 5 final seeds). D = 10,000 is cut: one epoch takes 1.5 s there against 0.15 s
    at D = 1000, about 100 minutes per teacher.

    Command: ``python -m experiments run output-size`` (its findings give the compute plan).
    Writes ``results/output-size/``: a comparison per D (``teacher-<D>/``) and the losses
    against D (``table.md``, ``output_size.png``).
    """
    return _output_size("teacher")


def output_size_softmax_teacher() -> tuple[Config, ...]:
    """``output-size`` with labels drawn from the teacher's softmax (known Bayes error): the
    model class of log-softmax. Command: ``python -m experiments run output-size-softmax-teacher``.
    """
    return _output_size("softmax-teacher")


def output_size_taylor_teacher() -> tuple[Config, ...]:
    """``output-size`` with labels drawn from the teacher's order-2 Taylor softmax (known Bayes
    error): the model class of log-Taylor. Command:
    ``python -m experiments run output-size-taylor-teacher``.
    """
    return _output_size("taylor-teacher")


def tiny_lm() -> tuple[Config, ...]:
    """A seconds-long end-to-end check of the language-model path (used by the tests):
    WordNet with vocabularies of 10 and 100 words, 3 losses, 2 seeds, 512 windows.

    Command: ``python -m experiments run tiny-lm --output /tmp/tiny-lm`` (about 30 seconds).
    """
    return tuple(
        Config(name=f"wordnet-{vocabulary}", dataset=f"wordnet-{vocabulary}", model="ngram",
               widths=(8, 16), max_epochs=2, batch_size=64, search={"learning_rate": (1e-2,)},
               losses=("log-softmax", "log-taylor-2", "squared-error"), seeds=(0, 1),
               train_subset=512, description="A tiny check of the language-model path.")
        for vocabulary in ("10", "100")
    )


CONFIGS: dict[str, Callable[[], Union[Config, tuple[Config, ...]]]] = {
    "digits-mlp": digits_mlp,
    "fashion-mnist-mlp": fashion_mnist_mlp,
    "fashion-mnist-cnn": fashion_mnist_cnn,
    "tiny": tiny,
    "wordnet-lm": wordnet_lm,
    "wordnet-linear": wordnet_linear,
    "wordnet-regularized": wordnet_regularized,
    "wordnet-regularized-data-size": wordnet_regularized_data_size,
    "output-size": output_size,
    "output-size-softmax-teacher": output_size_softmax_teacher,
    "output-size-taylor-teacher": output_size_taylor_teacher,
    "tiny-lm": tiny_lm,
}


def get(name: str, assignments: list[str] = ()) -> Union[Config, tuple[Config, ...]]:
    """The experiment called ``name`` (a study: a tuple of configs) with the overrides applied
    and checked (``experiments.config.ConfigError``)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown experiment {name!r}; known experiments: {', '.join(CONFIGS)}")
    experiment = CONFIGS[name]()
    if isinstance(experiment, Config):
        return override(experiment, list(assignments))
    return tuple(override(config, list(assignments)) for config in experiment)
