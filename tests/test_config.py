"""The config: overrides, every rule of ``Config.check`` with the message a user sees, the
fingerprint that decides whether a directory resumes, and the command line's answers."""

import dataclasses
import re

import pytest

from experiments import __main__ as cli
from experiments import configs
from experiments.config import HYPERPARAMETERS, ConfigError, override


def digits(**fields):
    return dataclasses.replace(configs.digits_mlp(), **fields)


def test_overrides_change_fields_and_hyperparameters():
    config = configs.get("digits-mlp", ["losses=log-softmax,log-taylor-2", "seeds=0,1",
                                        "max_epochs=3", "patience=none", "learning_rate=0.1",
                                        "dropout=0.2", "epsilon_bounds=1e-4,1", "clip_norm=1.5"])
    assert config.losses == ("log-softmax", "log-taylor-2") and config.seeds == (0, 1)
    assert config.max_epochs == 3 and config.patience is None and config.clip_norm == 1.5
    assert config.values("learning_rate") == (0.1,) and config.values("dropout") == (0.2,)
    assert config.bounds("epsilon") == (1e-4, 1.0) and config.values("margin") == (0.3, 0.6, 1.0)


@pytest.mark.parametrize("assignment, message", [
    ("epochs=3", "--config.epochs: no such field; valid keys: dataset"),
    ("seeds=a", "--config.seeds=a: not a valid int"),
    ("dropout", "expected --config.KEY=VALUE"),
    ("losses=log-softmaks", "config.losses='log-softmaks': choose one of log-softmax"),
    ("optimizer=rmsprop", "config.optimizer='rmsprop': choose one of adam, sgd"),
    ("output_layer=sparse", "choose one of dense, factored, linear"),
    ("schedule=step", "config.schedule='step': choose one of constant, warmup-cosine"),
    ("tuning=bayes", "config.tuning='bayes': choose one of grid, random"),
    ("model=rnn", "config.model='rnn'"),
    ("batch_size=0", "config.batch_size=0: must be at least 1"),
    ("eval_every=0", "config.eval_every=0: must be at least 1"),
    ("trials=0", "config.trials=0: must be at least 1"),
    ("seeds=", "config.seeds is empty"),
    ("tuning_seeds=0", "config.tuning_seeds=[0]: give at least 2 seeds, none of them in config.seeds"),
    ("clip_norm=0", "config.clip_norm=0.0: must be positive"),
    ("warmup_epochs=1", "config.warmup_epochs=1.0 needs config.schedule='warmup-cosine'"),
    ("warmup_epochs=500", "config.warmup_epochs=500.0: must be in [0, max_epochs=200]"),
    ("dropout=1.5", "config.dropout=[1.5]: give values within its bounds [0.0, 0.9]"),
    ("learning_rate=0", "config.learning_rate=[0.0]: give values within its bounds"),
    ("epsilon_bounds=1,0.1", "config.epsilon_bounds=[1.0, 0.1]: give (low, high) with 0 < low < high"),
    ("weight_decay_bounds=-1,1", "with 0 <= low < high"),
])
def test_every_invalid_config_is_refused_naming_the_field(assignment, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        configs.get("digits-mlp", [assignment])


def test_the_dropout_bound_of_one_is_refused_once_a_rate_reaches_it():
    with pytest.raises(ConfigError, match="a rate must be below 1"):
        configs.get("digits-mlp", ["dropout_bounds=0,1", "dropout=1"])




@pytest.mark.parametrize("fields, message", [
    ({"output_layer": "factored"}, "config.output_layer='factored' trains the output layer by "
                                   "exact SGD: set config.optimizer='sgd'"),
    ({"output_layer": "factored", "optimizer": "sgd", "search": {"weight_decay": (0.1,)}},
     "config.output_layer='factored' has no weight decay"),
    ({"search": {"temperature": (1.0,)}}, "config.search: no hyperparameter 'temperature'"),
])
def test_combinations_a_run_cannot_honour_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        digits(**fields).check()


def test_the_fingerprint_holds_the_fields_that_change_training_only():
    config = configs.digits_mlp()
    same = [dataclasses.replace(config, description="reworded", seeds=(7,), tuning_seeds=(8, 9),
                                losses=("log-softmax",), tuning="random", trials=4,
                                search={"learning_rate": (0.5,)}),
            dataclasses.replace(config, eval_every=None, clip_norm=None)]  # fields at their defaults
    assert all(c.fingerprint() == config.fingerprint() for c in same)
    other = [dataclasses.replace(config, batch_size=32), dataclasses.replace(config, eval_every=5),
             dataclasses.replace(config, schedule="warmup-cosine"),
             dataclasses.replace(config, clip_norm=1.0), dataclasses.replace(config, widths=(64,))]
    assert len({c.fingerprint() for c in other} | {config.fingerprint()}) == len(other) + 1


def test_each_hyperparameter_is_declared_once_with_the_losses_that_take_it():
    config = configs.digits_mlp()
    assert set(config.space("log-spherical")) == {"learning_rate", "dropout", "weight_decay", "epsilon"}
    assert set(config.space("log-softmax")) == {"learning_rate", "dropout", "weight_decay"}
    assert set(config.space("label-smoothed-log-softmax")) == {"learning_rate", "dropout",
                                                               "weight_decay", "label_smoothing"}
    assert set(config.space("z-loss")) >= {"a", "b"} and "epsilon" not in config.space("z-loss")
    for name, hyperparameter in HYPERPARAMETERS.items():  # the defaults pass their own bounds
        low, high = hyperparameter.bounds
        assert all(low <= v <= high for v in hyperparameter.values), name
    assert override(config, ["dropout=0.1"]).space("log-taylor-2")["dropout"]["values"] == [0.1]


def test_show_lists_the_regularization_fields(capsys):
    assert cli.main(["show", "digits-mlp"]) == 0
    shown = capsys.readouterr().out
    for name in ("dropout = (0.0,)", "weight_decay = (0.0,)", "label_smoothing = (0.0,)",
                 "clip_norm = None", "schedule = 'constant'", "eval_every = None"):
        assert name in shown


def test_a_bad_override_is_a_message_and_nothing_is_written(tmp_path, capsys):
    output = tmp_path / "out"
    assert cli.main(["run", "digits-mlp", "--output", str(output),
                     "--config.output_layer=factored"]) == 2
    assert "set config.optimizer='sgd'" in capsys.readouterr().err
    assert not output.exists()


def test_tables_of_a_directory_without_records_is_a_message(tmp_path, capsys):
    assert cli.main(["tables", "digits-mlp", "--output", str(tmp_path / "none")]) == 2
    assert "holds no comparison or study" in capsys.readouterr().err


def test_a_config_round_trips_through_its_json():
    from experiments.config import from_json, to_json

    config = digits(search={"dropout": (0.0, 0.5)}, search_bounds={"epsilon": (1e-6, 1e3)})
    assert from_json(to_json(config)) == config


def test_an_output_path_that_cannot_be_a_directory_is_a_message(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert cli.main(["run", "digits-mlp", "--output", str(blocker / "out"),
                     "--config.losses=log-softmax", "--config.max_epochs=1"]) == 2
    assert str(blocker) in capsys.readouterr().err
