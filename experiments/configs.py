"""The experiments, one ``Config`` each (a study: several), and their command-line overrides.

``python -m experiments list`` shows them, ``python -m experiments show NAME`` prints a config's
fields, and any field can be overridden on the command line, flax-examples style, with lists
separated by commas::

    python -m experiments run digits-mlp --config.losses=log-softmax,log-taylor-2 \\
        --config.seeds=0,1 --config.max_epochs=3

An override of a study applies to each of its comparisons. Each function's docstring gives
the command that runs it, its measured run time on 2 CPU cores, and what it writes.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Callable, Optional, Union

from experiments import losses, models

# The losses of the many-class comparisons: log-softmax and the spherical family.
MANY_CLASS_LOSSES = ("log-softmax", "log-taylor-2", "log-spherical", "z-loss", "squared-error")
OPTIMIZERS = ("adam", "sgd")
OUTPUT_LAYERS = ("dense", "factored", "linear")


@dataclass(frozen=True)
class Config:
    """One comparison: the data, the model, the losses, their tuning grids and the budget.

    Each loss is tuned over ``learning_rates`` and its own grid (``epsilons`` for
    log-spherical, ``margins`` for the soft-margin losses, ``z_loss_a`` and ``z_loss_b`` for
    the Z-loss) with the ``tuning_seeds``, then trained with each of ``seeds``. A model trains
    up to ``max_epochs`` and stops once its validation metric has not improved for
    ``patience`` epochs (None: never early); its best validation epoch is tested.
    """

    name: str
    dataset: str  # a name in experiments.data, or npz:PATH
    model: str  # a name in experiments.models
    widths: tuple[int, ...]  # the model's sizes, see experiments.models.get
    losses: tuple[str, ...] = losses.COMPARED
    learning_rates: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    epsilons: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    margins: tuple[float, ...] = (0.3, 0.6, 1.0)  # around Banerjee et al.'s default 0.6
    z_loss_a: tuple[float, ...] = (1.0,)
    z_loss_b: tuple[float, ...] = (2.0,)
    # Tuning widens each grid past its end while the chosen value sits there, within these
    # (low, high) bounds (experiments.comparison).
    learning_rate_bounds: tuple[float, ...] = (1e-5, 1.0)
    epsilon_bounds: tuple[float, ...] = (1e-6, 10.0)
    margin_bounds: tuple[float, ...] = (0.05, 5.0)
    z_loss_a_bounds: tuple[float, ...] = (0.01, 100.0)
    z_loss_b_bounds: tuple[float, ...] = (0.01, 100.0)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    tuning_seeds: tuple[int, ...] = (100, 101)  # at least 2, none of them a final seed
    batch_size: int = 128
    max_epochs: int = 10
    patience: Optional[int] = None
    optimizer: str = "adam"  # a name in OPTIMIZERS
    train_subset: Optional[int] = None  # train on the first N training examples only
    # "factored": softfam's factored layer trains the output layer of every loss of the
    # spherical family by exact SGD (experiments.factored); the others stay dense.
    # "linear": every loss that has one trains through softfam's linear loss, without the
    # logits, with the config's optimizer (experiments.train.LinearTrainer).
    output_layer: str = "dense"
    description: str = ""

    def grid(self, loss: str) -> dict[str, tuple[float, ...]]:
        """The starting tuning grid of each hyperparameter ``loss`` takes."""
        grids = {"epsilon": self.epsilons, "margin": self.margins, "a": self.z_loss_a,
                 "b": self.z_loss_b}
        return {name: grids[name] for name in losses.get(loss).hyperparameters}

    @property
    def bounds(self) -> dict[str, tuple[float, ...]]:
        """The (low, high) bounds of the learning rate and of each loss hyperparameter."""
        return {"learning_rate": self.learning_rate_bounds, "epsilon": self.epsilon_bounds,
                "margin": self.margin_bounds, "a": self.z_loss_a_bounds, "b": self.z_loss_b_bounds}

    def check(self) -> "Config":
        """The config itself, or a ValueError naming the field that is wrong."""
        for loss in self.losses:
            losses.get(loss)
        models.get(self.model, self.widths)
        choices = {"optimizer": OPTIMIZERS, "output_layer": OUTPUT_LAYERS}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"config.{field}={getattr(self, field)!r}: choose one of "
                                 f"{', '.join(allowed)}")
        positive = {"batch_size": self.batch_size, "max_epochs": self.max_epochs,
                    "patience": self.patience, "train_subset": self.train_subset}
        for field, value in positive.items():
            if value is not None and value < 1:
                raise ValueError(f"config.{field}={value}: must be at least 1")
        for field in ("losses", "learning_rates", "seeds", "tuning_seeds"):
            if not getattr(self, field):
                raise ValueError(f"config.{field} is empty")
        grids = {"learning_rate": self.learning_rates, "epsilon": self.epsilons,
                 "margin": self.margins, "a": self.z_loss_a, "b": self.z_loss_b}
        for name, bounds in self.bounds.items():
            if len(bounds) != 2 or not 0 < bounds[0] < bounds[1] or not all(
                    bounds[0] <= value <= bounds[1] for value in grids[name]):
                raise ValueError(f"config bounds of {name}: {list(bounds)} must be (low, high) "
                                 f"with 0 < low < high around its grid {list(grids[name])}")
        if len(set(self.tuning_seeds)) < 2 or set(self.tuning_seeds) & set(self.seeds):
            raise ValueError(f"config.tuning_seeds={list(self.tuning_seeds)}: give at least 2 "
                             f"seeds, none of them in config.seeds={list(self.seeds)}")
        return self


def _parse(name: str, kind, text: str):
    """The value of field ``name`` of type ``kind`` from its command-line text."""
    if typing.get_origin(kind) is Union:  # Optional[X]
        (kind,) = [k for k in typing.get_args(kind) if k is not type(None)]
        if text.lower() == "none":
            return None
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return tuple(_parse(name, item, part.strip()) for part in text.split(",") if part.strip())
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"--config.{name}={text}: not a valid {kind.__name__}") from None


def override(config: Config, assignments: list[str]) -> Config:
    """``config`` with each ``KEY=VALUE`` of ``assignments`` applied; a ValueError names an
    unknown key (and lists the valid ones) or a bad value."""
    kinds = typing.get_type_hints(Config)
    changes = {}
    for assignment in assignments:
        key, equals, text = assignment.partition("=")
        if not equals:
            raise ValueError(f"--config.{assignment}: expected --config.KEY=VALUE")
        if key not in kinds or key == "name":
            raise ValueError(f"--config.{key}: no such field; valid keys: "
                             f"{', '.join(k for k in kinds if k != 'name')}")
        changes[key] = _parse(key, kinds[key], text)
    return dataclasses.replace(config, **changes).check()


def describe(config: Config) -> str:
    """The config's fields and values, one per line."""
    return "\n".join(f"{field.name} = {getattr(config, field.name)!r}"
                     for field in dataclasses.fields(config))


def digits_mlp() -> Config:
    """The quick comparison: 8 losses on the 8x8 digits with a 64-128-128-10 ReLU MLP, under
    the comparison protocol made light enough for a quick start: batch 64, early stopping
    with patience 5 (up to 200 epochs).

    Command: ``python -m experiments run digits-mlp`` (measured: 43 seconds on 2 CPU cores from
    a cold compilation cache).
    Writes ``results/digits-mlp/``: ``table.md``, ``learning_curves.png``,
    ``reliability.png`` and the run directories under ``runs/``.
    """
    return Config(name="digits-mlp", dataset="digits", model="mlp", widths=(128, 128),
                  max_epochs=200, patience=5, batch_size=64)


def fashion_mnist_mlp() -> Config:
    """8 losses on Fashion-MNIST with a 784-256-256-10 ReLU MLP under the comparison protocol:
    Adam, batch 128, early stopping with patience 5 (up to 100 epochs), 2 tuning seeds, then
    20 final seeds per loss, so that a difference of about 0.15 points of test error between
    log-softmax and log-Taylor or log-spherical can be resolved (issue 13's target; a pilot of
    the 5-seed table had a per-seed sd of about 0.3 points).

    Command: ``python -m experiments run fashion-mnist-mlp`` (about 95 minutes on 2 CPU cores,
    partly shared with other work; one epoch is 0.53 s; resumable).
    Writes ``results/fashion-mnist-mlp/`` (table, plots, run directories).
    """
    return Config(name="fashion-mnist-mlp", dataset="fashion-mnist", model="mlp",
                  widths=(256, 256), learning_rates=(3e-4, 1e-3, 3e-3), max_epochs=100,
                  patience=5, seeds=tuple(range(20)))


def fashion_mnist_cnn() -> Config:
    """8 losses on Fashion-MNIST with a small CNN (two 5x5 stride-2 ReLU convolutions of 8 and
    16 channels, a ReLU layer of 64, the output layer) under the comparison protocol: Adam,
    batch 128, early stopping with patience 5 up to 100 epochs, 2 tuning seeds, 5 final seeds.
    Cut to the first 20,000 training images: on all 54,000 an epoch took 18 s (measured with
    another run on the machine), about 13 hours for the study; on 20,000 it took about 4.5
    hours of training, over several sittings (it resumes).

    Command: ``python -m experiments run fashion-mnist-cnn``.
    Writes ``results/fashion-mnist-cnn/`` (table, plots, run directories).
    """
    return Config(name="fashion-mnist-cnn", dataset="fashion-mnist", model="cnn",
                  widths=(8, 16, 64), learning_rates=(3e-4, 1e-3, 3e-3), max_epochs=100,
                  patience=5, train_subset=20_000)


def tiny() -> Config:
    """A seconds-long end-to-end check on real data (used by the tests): two losses, 512
    Fashion-MNIST training images, a 32-unit MLP, 2 epochs, 2 seeds.

    Command: ``python -m experiments run tiny --output /tmp/tiny`` (about 20 seconds).
    """
    return Config(name="tiny", dataset="fashion-mnist", model="mlp", widths=(32,), max_epochs=2,
                  batch_size=64, learning_rates=(1e-3, 1e-2), losses=("log-softmax", "log-spherical"),
                  seeds=(0, 1), train_subset=512)


WORDNET = ("Word-level language modelling on the WordNet 3.0 glosses (experiments.data.text); "
           "D is the vocabulary size with </s> and <unk>.")


def _wordnet(name: str, vocabulary: str, train_subset: int) -> Config:
    return Config(name=name, dataset=f"wordnet-{vocabulary}", model="ngram", widths=(32, 128),
                  losses=MANY_CLASS_LOSSES, learning_rates=(1e-3, 3e-3, 1e-2), max_epochs=50,
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
    over several sittings: see the README's compute plan; resumable).
    Writes ``results/wordnet-lm/`` (table with perplexity by word frequency, plots, runs).
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
    over several sittings: see the README's compute plan; resumable).
    Writes ``results/wordnet-linear/`` (table with memory and tokens per second, plots, runs).
    """
    return dataclasses.replace(_wordnet("wordnet-linear", "full", 200_000), max_epochs=200,
                               batch_size=1024, epsilons=(10.0,), epsilon_bounds=(1e-6, 1000.0))


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
               losses=MANY_CLASS_LOSSES, max_epochs=200, patience=5, description=description)
        for d in (2, 4, 10, 100, 1000)
    )


def output_size() -> tuple[Config, ...]:
    """The controlled output-size study on the deterministic teacher: the synthetic task
    (experiments.data.synthetic, 20,000 training examples) labelled by the argmax of the
    teacher's scores, with D = 2, 4, 10, 100 and 1000 classes, a 16-128-D ReLU MLP, 5 losses,
    under the comparison protocol (Adam, early stopping with patience 5 up to 200 epochs, 2
    tuning seeds, 5 final seeds). D = 10,000 is cut: one epoch takes 1.5 s there against 0.15 s
    at D = 1000, about 100 minutes per teacher.

    Command: ``python -m experiments run output-size`` (see the README's compute plan).
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
               widths=(8, 16), max_epochs=2, batch_size=64, learning_rates=(1e-2,),
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
    "output-size": output_size,
    "output-size-softmax-teacher": output_size_softmax_teacher,
    "output-size-taylor-teacher": output_size_taylor_teacher,
    "tiny-lm": tiny_lm,
}


def get(name: str, assignments: list[str] = ()) -> Union[Config, tuple[Config, ...]]:
    """The experiment called ``name`` (a study: a tuple of configs) with the overrides applied."""
    if name not in CONFIGS:
        raise ValueError(f"unknown experiment {name!r}; known experiments: {', '.join(CONFIGS)}")
    experiment = CONFIGS[name]()
    if isinstance(experiment, Config):
        return override(experiment, list(assignments))
    return tuple(override(config, list(assignments)) for config in experiment)
