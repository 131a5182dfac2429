"""The one config type: a comparison's data, model, losses, training, regularization and tuning.

Every tuned hyperparameter is declared once, in ``HYPERPARAMETERS``: the values its search
starts from, its bounds, whether it is searched on a log scale, and which losses take it. A
config overrides its values with ``--config.<name>=v1,v2,...`` and its bounds with
``--config.<name>_bounds=low,high``:

- ``tuning="grid"``: one value is fixed, several are a starting grid, widened past a chosen end
  within the bounds (``experiments.tuning.search_grid``);
- ``tuning="random"``: one value is fixed, several span a range from their least to their
  greatest, drawn from quasi-randomly, ``trials`` points per loss
  (``experiments.tuning.random_points``).

Dropout, weight decay and label smoothing start at 0 and the schedule is constant, so that a
config that does not ask for them trains as the committed tables did. ``check`` refuses an
invalid config before anything is written, naming the field and the valid choices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Optional, Union

from experiments import losses, models

OPTIMIZERS = ("adam", "sgd")
OUTPUT_LAYERS = ("dense", "factored", "linear")
SCHEDULES = ("constant", "warmup-cosine")
TUNINGS = ("grid", "random")


class ConfigError(ValueError):
    """A config that cannot run; the message names the field and what it accepts."""


@dataclass(frozen=True)
class Hyperparameter:
    """A tuned hyperparameter: its default values (see the module docstring), its bounds, its
    search scale, and the losses that take it (None: every loss)."""

    values: tuple[float, ...]
    bounds: tuple[float, float]
    log: bool
    takes: Optional[tuple[str, ...]] = None

    def taken_by(self, loss: str) -> bool:
        return self.takes is None or loss in self.takes


HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "learning_rate": Hyperparameter((1e-3, 3e-3, 1e-2), (1e-5, 1.0), log=True),
    # dropout rate on every hidden layer's activations (experiments.models)
    "dropout": Hyperparameter((0.0,), (0.0, 0.9), log=False),
    # decoupled (AdamW-style) decay of the weight matrices, kernels and embeddings, not biases
    "weight_decay": Hyperparameter((0.0,), (0.0, 1.0), log=False),
    "epsilon": Hyperparameter((1e-3, 1e-2, 1e-1), (1e-6, 10.0), log=True, takes=("log-spherical",)),
    # Banerjee et al.'s default margin is 0.6
    "margin": Hyperparameter((0.3, 0.6, 1.0), (0.05, 5.0), log=True,
                             takes=("soft-margin-softmax", "soft-margin-taylor-2")),
    "a": Hyperparameter((1.0,), (0.01, 100.0), log=True, takes=("z-loss",)),
    "b": Hyperparameter((2.0,), (0.01, 100.0), log=True, takes=("z-loss",)),
    "label_smoothing": Hyperparameter((0.0,), (0.0, 0.5), log=False,
                                      takes=("label-smoothed-log-softmax",)),
}
# Where each hyperparameter acts: the rest are the loss's keyword arguments.
OPTIMIZER_HYPERPARAMETERS = ("learning_rate", "weight_decay")
MODEL_HYPERPARAMETERS = ("dropout",)
# Fields that do not change how a model trains: a run directory made under other values of
# these resumes (experiments.records). Every other field is in the fingerprint.
NOT_TRAINING = ("name", "description", "losses", "seeds", "tuning_seeds", "tuning", "trials",
                "search", "search_bounds")


@dataclass(frozen=True)
class Config:
    """One comparison: the data, the model, the losses, how each is trained and tuned.

    Each loss is tuned over the hyperparameters it takes (``HYPERPARAMETERS``, with this
    config's ``search`` and ``search_bounds`` overrides) on the ``tuning_seeds``, then trained
    with each of ``seeds``. A model trains up to ``max_epochs``, is evaluated on the validation
    split every ``eval_every`` steps (None: once per epoch) and stops once its validation
    metric has not improved for ``patience`` evaluations (None: never early); its best
    evaluation's parameters are tested.
    """

    name: str
    dataset: str  # a name in experiments.data, or npz:PATH
    model: str  # a name in experiments.models
    widths: tuple[int, ...]  # the model's sizes, see experiments.models.get
    losses: tuple[str, ...] = losses.COMPARED
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    tuning_seeds: tuple[int, ...] = (100, 101)  # at least 2, none of them a final seed
    batch_size: int = 128
    max_epochs: int = 10
    patience: Optional[int] = None
    eval_every: Optional[int] = None  # steps between validations; None: at each epoch's end
    optimizer: str = "adam"  # a name in OPTIMIZERS
    schedule: str = "constant"  # or "warmup-cosine": linear warmup, cosine decay to max_epochs
    warmup_epochs: float = 0.0
    clip_norm: Optional[float] = None  # clip the gradient to this global norm
    train_subset: Optional[int] = None  # train on the first N training examples only
    # "linear": every loss that has one trains through softfam's linear loss, without the
    # logits; "factored": the losses of the spherical family train their output layer by
    # softfam's exact factored SGD (optimizer "sgd"); the other losses stay dense.
    output_layer: str = "dense"
    tuning: str = "grid"  # a name in TUNINGS
    # A comparison's results directory: each loss trains with the point chosen there (its final
    # models' hyperparameters), tuned on that comparison's data; nothing is tuned here.
    points_from: Optional[str] = None
    trials: int = 16  # points per loss of the random search
    search: dict[str, tuple[float, ...]] = field(default_factory=dict)  # values by hyperparameter
    search_bounds: dict[str, tuple[float, ...]] = field(default_factory=dict)
    description: str = ""

    def values(self, name: str) -> tuple[float, ...]:
        """The values of hyperparameter ``name``: one is fixed; several are a grid, or the
        span of a random search's range (``tuning``)."""
        return tuple(self.search.get(name, HYPERPARAMETERS[name].values))

    def bounds(self, name: str) -> tuple[float, float]:
        return tuple(self.search_bounds.get(name, HYPERPARAMETERS[name].bounds))

    def space(self, loss: str) -> dict[str, dict]:
        """The hyperparameters ``loss`` takes: ``{name: {"values", "bounds", "log"}}``."""
        return {name: {"values": list(self.values(name)), "bounds": list(self.bounds(name)),
                       "log": h.log}
                for name, h in HYPERPARAMETERS.items() if h.taken_by(loss)}

    def uses(self, name: str) -> bool:
        """Whether hyperparameter ``name`` can be other than 0 in any model of this config."""
        return any(v != 0 for v in self.values(name))

    def fingerprint(self) -> str:
        """A hash of the fields that change how a model trains, those at their defaults left
        out: a new field with a default, or another description, keeps the fingerprint."""
        defaults = {f.name: f.default for f in dataclasses.fields(Config)
                    if f.default is not dataclasses.MISSING}
        training = {name: value for name, value in _plain(self).items()
                    if name not in NOT_TRAINING
                    and (name not in defaults or _plain_value(defaults[name]) != value)}
        text = json.dumps(training, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def check(self) -> "Config":
        """The config itself, or a ConfigError naming the field that is wrong."""
        for loss in self.losses:
            _choose("losses", loss, tuple(losses.LOSSES))
        try:
            models.get(self.model, self.widths)
        except ValueError as error:
            raise ConfigError(f"config.model={self.model!r}: {error}") from None
        for name, allowed in (("optimizer", OPTIMIZERS), ("output_layer", OUTPUT_LAYERS),
                              ("schedule", SCHEDULES), ("tuning", TUNINGS)):
            _choose(name, getattr(self, name), allowed)
        for name in ("batch_size", "max_epochs", "patience", "train_subset", "eval_every", "trials"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"config.{name}={value}: must be at least 1")
        for name in ("losses", "seeds", "tuning_seeds"):
            if not getattr(self, name):
                raise ConfigError(f"config.{name} is empty")
        if len(set(self.tuning_seeds)) < 2 or set(self.tuning_seeds) & set(self.seeds):
            raise ConfigError(f"config.tuning_seeds={list(self.tuning_seeds)}: give at least 2 "
                              f"seeds, none of them in config.seeds={list(self.seeds)}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ConfigError(f"config.clip_norm={self.clip_norm}: must be positive, or None")
        if not 0 <= self.warmup_epochs <= self.max_epochs:
            raise ConfigError(f"config.warmup_epochs={self.warmup_epochs}: must be in "
                              f"[0, max_epochs={self.max_epochs}]")
        if self.warmup_epochs and self.schedule != "warmup-cosine":
            raise ConfigError(f"config.warmup_epochs={self.warmup_epochs} needs "
                              "config.schedule='warmup-cosine'")
        for name in {*self.search, *self.search_bounds} - set(HYPERPARAMETERS):
            raise ConfigError(f"config.search: no hyperparameter {name!r}; choose among "
                              f"{', '.join(HYPERPARAMETERS)}")
        for name in HYPERPARAMETERS:
            self._check_hyperparameter(name)
        self._check_output_layer()
        return self

    def _check_hyperparameter(self, name: str) -> None:
        values, bounds = self.values(name), self.bounds(name)
        low, high = bounds if len(bounds) == 2 else (math.nan, math.nan)
        positive = HYPERPARAMETERS[name].log
        if not (low < high and (low > 0 if positive else low >= 0)):
            raise ConfigError(f"config.{name}_bounds={list(bounds)}: give (low, high) with "
                              f"{'0 < low' if positive else '0 <= low'} < high")
        if not values or not all(low <= v <= high for v in values):
            raise ConfigError(f"config.{name}={list(values)}: give values within its bounds "
                              f"{list(bounds)}")
        if name == "dropout" and max(values) >= 1:
            raise ConfigError(f"config.dropout={list(values)}: a rate must be below 1")

    def _check_output_layer(self) -> None:
        if self.output_layer == "factored":
            if self.optimizer != "sgd":
                raise ConfigError("config.output_layer='factored' trains the output layer by exact "
                                  f"SGD: set config.optimizer='sgd' (got {self.optimizer!r})")
            if self.uses("weight_decay"):
                raise ConfigError("config.output_layer='factored' has no weight decay: set "
                                  "config.weight_decay=0")


def _choose(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"config.{name}={value!r}: choose one of {', '.join(allowed)}")


def _plain_value(value):
    return json.loads(json.dumps(value))


def _plain(config: Config) -> dict:
    """The config's fields as JSON values (tuples become lists)."""
    return _plain_value(dataclasses.asdict(config))


def to_json(config: Config) -> dict:
    return _plain(config)


def from_json(saved: dict) -> Config:
    """The config saved by ``to_json`` (fields it does not know are an error)."""
    return Config(**{name: _from_plain(value) for name, value in saved.items()})


def _from_plain(value):
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return {k: tuple(v) for k, v in value.items()}
    return value


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
        raise ConfigError(f"--config.{name}={text}: not a valid {kind.__name__}") from None


def override(config: Config, assignments: list[str]) -> Config:
    """``config`` with each ``KEY=VALUE`` of ``assignments`` applied and checked; a
    ConfigError names an unknown key (and lists the valid ones) or a bad value."""
    kinds = {k: v for k, v in typing.get_type_hints(Config).items()
             if k not in ("name", "search", "search_bounds")}
    changes, search, bounds = {}, dict(config.search), dict(config.search_bounds)
    for assignment in assignments:
        key, equals, text = assignment.partition("=")
        if not equals:
            raise ConfigError(f"--config.{assignment}: expected --config.KEY=VALUE")
        if key in HYPERPARAMETERS:
            search[key] = _parse(key, tuple[float, ...], text)
        elif key.removesuffix("_bounds") in HYPERPARAMETERS:
            bounds[key.removesuffix("_bounds")] = _parse(key, tuple[float, ...], text)
        elif key in kinds:
            changes[key] = _parse(key, kinds[key], text)
        else:
            raise ConfigError(f"--config.{key}: no such field; valid keys: "
                              f"{', '.join([*kinds, *HYPERPARAMETERS])} and <hyperparameter>_bounds")
    return dataclasses.replace(config, **changes, search=search, search_bounds=bounds).check()


def describe(config: Config) -> str:
    """The config's fields and each hyperparameter's values and bounds, one per line."""
    lines = [f"{f.name} = {getattr(config, f.name)!r}" for f in dataclasses.fields(config)
             if f.name not in ("search", "search_bounds")]
    for name, h in HYPERPARAMETERS.items():
        takes = "every loss" if h.takes is None else ", ".join(h.takes)
        lines.append(f"{name} = {config.values(name)!r}  (bounds {config.bounds(name)!r}, "
                     f"{'log' if h.log else 'linear'} scale; taken by {takes})")
    return "\n".join(lines)
