"""The many-class experiments: the synthetic teacher task, the language-model data sets, the
sign changes and crossover of the output-size study, and a tiny language-model study end to end."""

import dataclasses
import math
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import __main__ as cli
from experiments import data, records, statistics, study, tables
from experiments.config import Config
from experiments.data import synthetic, text

WORDNET = Path("/usr/share/wordnet/data.noun")


@pytest.fixture(autouse=True)
def standard_dtype_promotion():
    """optax's Adam mixes integer and float types; see test_experiments.py."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def paired(mean, resolved):
    return statistics.Paired(10, mean, mean - 0.1, mean + 0.1, 0.01 if resolved else 0.5, 0.2, resolved)


def test_sign_changes_are_listed_in_both_directions_with_their_resolution():
    sizes = [2, 10, 100, 1000, 10000]
    # Taylor lower (resolved), then softmax lower (resolved), Taylor lower (not resolved),
    # softmax lower (resolved) twice.
    results = [paired(-1.0, True), paired(2.0, True), paired(-0.1, False), paired(3.0, True),
               paired(4.0, True)]
    assert study.sign_changes(sizes, results) == [(2, 10, "log-softmax", True),
                                                  (10, 100, "log-taylor-2", False),
                                                  (100, 1000, "log-softmax", False)]
    assert study.ahead_from(sizes, results) == 1000  # resolved lower at 1000 and 10000


def test_softmax_ahead_from_no_size_when_the_largest_is_not_resolved():
    sizes = [2, 10, 100]
    assert study.ahead_from(sizes, [paired(1.0, True), paired(2.0, True), paired(0.5, False)]) is None
    assert study.ahead_from(sizes, [paired(1.0, True)] * 3) == 2
    assert study.sign_changes(sizes, [paired(1.0, True)] * 3) == []


def test_teacher_labels_follow_the_zipf_prior_and_nest_across_sizes():
    small, large = synthetic.teacher_dataset(10), synthetic.teacher_dataset(100)
    np.testing.assert_array_equal(small.train.images, large.train.images)  # only D changes
    for split in ("train", "valid", "test"):
        assert len(getattr(small, split).labels) == synthetic.SIZES[split]
    # The first 10 classes' scores are the same at both sizes, so a D = 100 label below 10 is
    # the argmax of those 10 scores too.
    head = large.train.labels < 10
    np.testing.assert_array_equal(large.train.labels[head], small.train.labels[head])
    assert large.train.labels.max() < 100 and small.num_classes == 10


def test_teacher_prior_favours_the_first_classes():
    labels = synthetic.teacher_dataset(1000).train.labels
    assert labels.mean() < 0.3 * 999 / 2  # a uniform label would average 499.5
    counts = np.sort(np.bincount(labels, minlength=1000))[::-1]
    assert counts[:10].sum() > 0.5 * labels.size and (counts == 0).sum() > 500  # head and tail


def test_teacher_dataset_is_deterministic_and_checks_its_arguments():
    np.testing.assert_array_equal(synthetic.teacher_dataset(30).test.labels,
                                  synthetic.teacher_dataset(30).test.labels)
    with pytest.raises(ValueError, match="num_classes"):
        synthetic.teacher_dataset(1)
    with pytest.raises(data.DataError, match="teacher-<D>"):
        data.load("teacher-ten")


@pytest.mark.parametrize("num_classes", [4, 100])
def test_softmax_teacher_errs_from_its_argmax_at_the_bayes_error(num_classes):
    """For labels drawn from softmax(s), the Bayes classifier is argmax s, which is the
    deterministic teacher's label: their disagreement rate estimates the Bayes error."""
    sampled = data.load(f"softmax-teacher-{num_classes}")
    argmax = synthetic.teacher_dataset(num_classes)
    np.testing.assert_array_equal(sampled.test.images, argmax.test.images)
    bayes = sampled.bayes_error
    assert 0 < bayes < 1 - 1 / num_classes
    disagreement = np.mean(sampled.test.labels != argmax.test.labels)
    standard_error = np.sqrt(bayes * (1 - bayes) / sampled.test.labels.size)
    assert abs(disagreement - bayes) < 4 * standard_error
    assert argmax.bayes_error == 0


def test_taylor_teacher_cannot_be_predicted_below_its_bayes_error():
    sampled = data.load("taylor-teacher-10")
    bayes = sampled.bayes_error
    argmax_error = np.mean(sampled.test.labels != synthetic.teacher_dataset(10).test.labels)
    standard_error = np.sqrt(bayes * (1 - bayes) / sampled.test.labels.size)
    assert argmax_error > bayes - 4 * standard_error  # argmax s is no better than the Bayes rule
    assert not np.array_equal(sampled.test.labels, data.load("softmax-teacher-10").test.labels)
    with pytest.raises(data.DataError, match="taylor-teacher-<D>"):
        data.load("taylor-teacher-0")


@pytest.mark.parametrize("name", ["wordnet-", "wordnet-0", "wordnet-10k", "ptb-10000"])
def test_a_malformed_language_model_name_is_refused_by_name(name):
    with pytest.raises(data.DataError, match=re.escape(repr(name))):
        data.load(name)


@pytest.mark.skipif(not WORDNET.exists(), reason="needs apt-get install wordnet-base")
def test_wordnet_dataset_reorders_training_windows_and_samples_validation():
    full = text.language_model_data("wordnet", 100, text.CONTEXT)
    loaded = data.load("wordnet-100")
    assert loaded.num_classes == 102
    rows = lambda split: np.column_stack([split.images, split.labels])  # noqa: E731
    # The same training windows, in another order.
    assert not np.array_equal(loaded.train.labels, full.train.labels)
    np.testing.assert_array_equal(np.unique(rows(loaded.train), axis=0), np.unique(rows(full.train), axis=0))
    assert len(loaded.valid.labels) == text.VALID_WINDOWS
    assert np.isin(loaded.valid.labels, full.valid.labels).all()
    np.testing.assert_array_equal(rows(loaded.test), rows(full.test))


def test_throughput_and_epoch_time_describe_the_same_run():
    # 1,000 examples per epoch; each model's first epoch (compilation) is left out; the
    # second model validates twice an epoch.
    models = [{"curve": [{"epoch": epoch, "train_examples": 1000, "train_seconds": seconds}
                         for epoch, seconds in enumerate((9.0, 2.0, 2.5), 1)]},
              {"curve": [{"epoch": epoch / 2, "train_examples": 500, "train_seconds": seconds}
                         for epoch, seconds in enumerate((4.0, 4.0, 1.5, 1.5, 1.25, 1.25), 1)]}]
    assert tables.seconds_per_epoch(models) == 2.5
    assert tables.throughput(models) == 400.0  # examples per second that each model advanced
    assert tables.throughput(models) * tables.seconds_per_epoch(models) == 1000


@pytest.mark.skipif(not WORDNET.exists(), reason="needs apt-get install wordnet-base")
def test_tiny_language_model_study_end_to_end(tmp_path, capsys):
    assert cli.main(["run", "tiny-lm", "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "D = 12" in printed and "D = 102" in printed and "Sign changes of the mean:" in printed
    for vocabulary, num_classes in (("10", 12), ("100", 102)):
        directory = tmp_path / f"wordnet-{vocabulary}"
        table = (directory / "table.md").read_text()
        ends_by_seed = {}
        finals = [m for m in records.read(directory) if m["stage"] == "final"]
        for loss in ("log-softmax", "log-taylor-2"):
            ends = [m for m in finals if m["loss"] == loss]
            perplexities = [math.exp(m["test"]["nll"]) for m in ends]
            assert len(perplexities) == 2  # one per seed
            assert all(1 < p < num_classes for p in perplexities)  # better than uniform
            row = next(line for line in table.splitlines() if line.startswith(f"| {loss} |"))
            shown = f"{np.mean(perplexities):.1f} +- {np.std(perplexities, ddof=1):.1f}"
            assert shown in row
            by_epoch = [f"{np.mean([math.exp(m['curve'][e - 1]['nll']) for m in ends]):.1f}"
                        for e in (1, 2)]
            assert f"| {loss} | {' | '.join(by_epoch)} |" in table.split("## Validation perplexity")[1]
            frequent = [math.exp(m["test"]["bucket_nll"][0]) for m in ends]  # the 10 most frequent words
            by_frequency = table.split("## Test perplexity by frequency of the next word")[1].split("##")[0]
            row = next(line for line in by_frequency.splitlines() if line.startswith(f"| {loss} |"))
            assert row.split("|")[2].strip() == f"{np.mean(frequent):.1f} +- {np.std(frequent, ddof=1):.1f}"
            assert sum(ends[0]["test"]["bucket_count"]) == ends[0]["test"]["examples"]
            ends_by_seed[loss] = {m["seed"]: m for m in ends}
        claim = table.split("## Paired comparisons")[1].split("##")[0]
        for metrics, what in (("test", "test NLL"), ("test_scaled", "T-scaled test NLL")):
            difference = np.mean([ends_by_seed["log-taylor-2"][seed][metrics]["nll"]
                                  - ends_by_seed["log-softmax"][seed][metrics]["nll"] for seed in (0, 1)])
            assert f"log-taylor-2 minus log-softmax, {what}: {difference:+.4f} nats" in claim
        assert "| *unigram* |" in by_frequency
        squared = next(line for line in table.splitlines() if line.startswith("| squared-error |"))
        assert squared.split("|")[4].strip() == "-"  # no perplexity without a distribution
        assert "tokens/s" in table
        max_epochs = records.read_comparison(directory)["config"]["max_epochs"]
        capped = sum(m["stop_epoch"] == max_epochs for m in finals
                     if m["loss"] in ("log-softmax", "log-taylor-2"))
        flagged = "**Flagged**: " in claim
        assert flagged == (capped > 0)
    perplexity = printed.split("## test perplexity")[1].split("##")[0]
    ends = [m for m in records.read(tmp_path / "wordnet-100")
            if m["stage"] == "final" and m["loss"] == "log-softmax"]
    per_seed = [math.exp(m["test"]["nll"]) for m in ends]
    row = next(line for line in perplexity.splitlines() if line.startswith("| log-softmax |"))
    assert row.split("|")[3].strip() == f"{np.mean(per_seed):.1f} +- {np.std(per_seed, ddof=1):.1f}"
    assert "## Where log-softmax and log-taylor-2 trade places" in printed
    assert (tmp_path / "output_size.png").stat().st_size > 0
    assert cli.main(["tables", "tiny-lm", "--output", str(tmp_path)]) == 0
    assert capsys.readouterr().out == printed.split("# tiny-lm", 1)[1].join(["# tiny-lm", ""])


def test_a_teacher_study_shows_the_bayes_error_beside_the_losses(tmp_path):
    """The Bayes error comes from the data set (checked against the labels above) into each
    comparison's table and the study's error table, at its own D."""
    configs_ = tuple(
        Config(name=f"softmax-teacher-{d}", dataset=f"softmax-teacher-{d}", model="mlp",
               widths=(8,), losses=("log-softmax",), search={"learning_rate": (1e-2,)}, max_epochs=1,
               seeds=(0, 1), batch_size=64, train_subset=512)
        for d in (4, 10))
    table = study.run("tiny-teachers", configs_, tmp_path, None, "test")
    bayes = [data.load(f"softmax-teacher-{d}").bayes_error for d in (4, 10)]
    error_section = table.split("## test error (%)")[1].split("##")[0]
    assert f"| *Bayes error* | {100 * bayes[0]:.2f} | {100 * bayes[1]:.2f} |" in error_section
    comparison_table = (tmp_path / "softmax-teacher-10" / "table.md").read_text()
    assert f"| *Bayes error* | - | - | {100 * bayes[1]:.2f} |" in comparison_table


def test_the_z_loss_is_shown_by_its_temperature_scaled_probabilities_only(tmp_path):
    """The Z-loss's own softmax has an arbitrary temperature: its runs record that NLL, but no
    table shows it, neither the comparison's nor the study's; its T-scaled NLL is shown."""
    configs_ = tuple(
        Config(name=f"teacher-{d}", dataset=f"teacher-{d}", model="mlp", widths=(8,),
               losses=("log-softmax", "z-loss"), search={"learning_rate": (1e-2,)}, max_epochs=1,
               seeds=(0, 1), batch_size=64, train_subset=512)
        for d in (4, 10))
    table = study.run("tiny-teachers", configs_, tmp_path, None, "test")
    nll_section = table.split("## test NLL")[1].split("##")[0]
    assert "| z-loss | - | - |" in nll_section
    assert re.search(r"\| log-softmax \| \d\.\d{3} \+- ", nll_section)
    for d in (4, 10):
        directory = tmp_path / f"teacher-{d}"
        ends = [m for m in records.read(directory) if m["loss"] == "z-loss" and m["stage"] == "final"]
        assert all(r["test"]["nll"] > 0 for r in ends)  # recorded, not shown
        row = next(line for line in (directory / "table.md").read_text().splitlines()
                   if line.startswith("| z-loss |")).split("|")
        scaled = [r["test_scaled"]["nll"] for r in ends]
        assert [cell.strip() for cell in row[5:8]] == ["-", "-", "-"]  # own NLL, ECE, Brier
        assert row[8].strip() == f"{np.mean(scaled):.3f} +- {np.std(scaled, ddof=1):.3f}"


@pytest.mark.skipif(not WORDNET.exists(), reason="needs apt-get install wordnet-base")
def test_a_language_model_table_shows_the_z_loss_by_its_scaled_perplexity_only(tmp_path):
    """A language model's Z-loss: no own perplexity and no row of validation perplexity by
    epoch (its softmax has an arbitrary temperature), its T-scaled test perplexity shown."""
    config = Config(name="wordnet-10", dataset="wordnet-10", model="ngram", widths=(8, 16),
                    max_epochs=2, batch_size=64, search={"learning_rate": (1e-2,)},
                    losses=("log-softmax", "z-loss"), seeds=(0, 1), train_subset=512,
                    output_layer="linear", description="z-loss check")
    table = study.run("tiny-z", (config,), tmp_path, None, "test")
    directory = tmp_path / "wordnet-10"
    scaled = [math.exp(m["test_scaled"]["nll"]) for m in records.read(directory)
              if m["loss"] == "z-loss" and m["stage"] == "final"]
    comparison_table = (directory / "table.md").read_text()
    row = next(line for line in comparison_table.splitlines() if line.startswith("| z-loss |")).split("|")
    assert row[4].strip() == "-"
    assert row[5].strip() == f"{np.mean(scaled):.1f} +- {np.std(scaled, ddof=1):.1f}"
    by_epoch = comparison_table.split("## Validation perplexity")[1].split("##")[0]
    assert "| log-softmax |" in by_epoch and "| z-loss |" not in by_epoch
    assert "| z-loss (T-scaled) |" in comparison_table.split("## Test perplexity by frequency")[1]
    assert "| z-loss | - |" in table.split("## test perplexity")[1]


def test_a_size_whose_models_ran_to_the_cap_is_flagged():
    def row(stops, text):
        return tables.Row("x", {}, [{"stop_epoch": s} for s in stops], [], [], [], [], text, {})

    found = {"log-softmax": row([5, 9], {"learning_rate": "0.01"}),
             "log-taylor-2": row([10, 10], {"learning_rate": "1 (edge, bound)"})}
    assert study.flag(found, 10) == {"log-taylor-2": "2 of 2 log-taylor-2 models ran to the "
                                     "10-epoch cap; log-taylor-2's learning_rate stopped at its bound"}
    assert study.flag({"log-softmax": row([5, 9], {"learning_rate": "0.01"})}, 10) == {}
    # A flag on one loss leaves the others' verdicts standing; one on log-softmax, none.
    collected = {"name": "s", "description": "", "command": "c", "axis": "num_classes",
                 "bayes_error": {}, "points_from": set(), "language_model": False,
                 "reproduced": None,
                 "flags": {10: {"log-taylor-2": "capped"}, 20: {"log-softmax": "bound"}}}
    table = study.render(collected, [10, 20], {})
    assert "**Flagged, D = 10**: capped; no verdict of log-taylor-2 at this D above is" in table
    assert "**Flagged, D = 20**: bound; no verdict at this D above is evidence either way." in table


def test_a_data_size_study_trains_the_points_chosen_by_another_comparison(tmp_path):
    """``points_from``: nothing is tuned, every final model trains the source's chosen point;
    comparisons that differ in ``train_subset`` make a study against N, plotted."""
    source = Config(name="source", dataset="teacher-4", model="mlp", widths=(8,),
                    losses=("log-softmax", "log-taylor-2", "log-spherical"), max_epochs=1, seeds=(0, 1),
                    batch_size=64, train_subset=512, search={"learning_rate": (1e-3, 3e-2)})
    study.run("tiny-source", (source,), tmp_path / "source", None, "test")
    chosen = {loss: records.chosen_point(tmp_path / "source" / "source", loss)
              for loss in source.losses}
    configs_ = tuple(dataclasses.replace(source, name=f"size-{n}", train_subset=n,
                                         points_from=str(tmp_path / "source" / "source"))
                     for n in (256, 512))
    table = study.run("tiny-sizes", configs_, tmp_path / "sizes", None, "test")
    for n in (256, 512):
        directory = tmp_path / "sizes" / f"size-{n}"
        models = records.read(directory)
        assert {m["stage"] for m in models} == {"final"}
        assert all(m["point"] == chosen[m["loss"]] for m in models) and len(models) == 6
        assert records.read_comparison(directory)["num_train"] == n
        assert "none were tuned here" in (directory / "table.md").read_text()
    assert "the losses against the number of training examples N" in table
    assert "| loss | N = 256 | N = 512 |" in table
    assert f"`{tmp_path / 'source' / 'source'}` chose for it" in table and "none were tuned" in table
    # The 512 comparison retrains the source's final models: the same numbers, shown as such.
    largest = float(re.search(r"At N = 512 the 6 models retrain .* at most (\S+) nats", table)[1])
    assert largest < 1e-4
    for loss in ("log-taylor-2", "log-spherical"):
        assert f"## Where log-softmax and {loss} trade places" in table
    assert (tmp_path / "sizes" / "data_size.png").stat().st_size > 0


def test_points_from_a_comparison_without_final_models_is_refused_by_name(tmp_path, capsys):
    assert cli.main(["run", "tiny", "--output", str(tmp_path / "out"),
                     f"--config.points_from={tmp_path / 'nothing'}"]) == 2
    message = capsys.readouterr().err
    assert "holds no final model of" in message and "nothing" in message
