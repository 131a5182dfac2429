"""The benchmark command, run tiny: a table with every function, its ratio and quartiles."""

import jax
import pytest

import softfam
from experiments import __main__ as cli
from experiments import benchmark_normalizers
from experiments.benchmark_normalizers import SECTIONS


def test_benchmark_writes_a_row_for_every_function_and_section(tmp_path):
    output = tmp_path / "normalizers.md"
    cli.main(["benchmark", "normalizers", "--shapes", "8x10", "--pairs", "3",
              "--min-time", "0", "--profile-below", "0", "--output", str(output)])
    table = output.read_text()
    assert "## Where the time goes" not in table  # no cell below 0
    assert "python -m experiments benchmark normalizers" in table
    for section, _, _, candidates, _ in SECTIONS:
        assert f"## {section}" in table
        for name in candidates:
            rows = [line for line in table.splitlines() if line.startswith(f"| {name} |")]
            assert len(rows) == 2  # against its baseline, and against itself without the check
            for row in rows:
                median, quartiles = row.split("|")[2].split("[")
                low, high = (float(q) for q in quartiles.split("]")[0].split(","))
                assert 0 < low <= float(median) <= high


def test_step_benchmark_writes_a_row_for_every_loss_and_class_count(tmp_path):
    import argparse

    from experiments import benchmark_step

    parser = argparse.ArgumentParser()
    benchmark_step.add_arguments(parser)
    output = tmp_path / "step.md"
    args = parser.parse_args(["--classes", "3,5", "--batch", "4", "--inputs", "6", "--hidden", "8",
                              "--triples", "3", "--min-time", "0", "--output", str(output)])
    args.command_line = "python -m experiments benchmark step --classes 3,5"
    with jax.numpy_dtype_promotion("standard"):  # optax.adam mixes int32 counts and floats
        benchmark_step.run(args)
    table = output.read_text()
    assert "python -m experiments benchmark step --classes 3,5" in table
    for losses in (benchmark_step.INTEGER_LABEL_LOSSES, benchmark_step.PROBABILITY_LABEL_LOSSES):
        for name in losses:
            rows = [line for line in table.splitlines() if line.startswith(f"| {name} |")]
            assert len(rows) == 1
            cells = rows[0].split("|")[2:-1]
            assert len(cells) == 2  # one per class count
            for cell in cells:
                median, rest = cell.split("[")
                low, high = (float(q) for q in rest.split("]")[0].split(","))
                assert 0 < low <= float(median) <= high
                assert "share" in cell and "%" in cell


@pytest.mark.parametrize("fn, heavy_operation", [
    (jax.nn.log_softmax, "reduce_max"),
    pytest.param(softfam.log_taylor_softmax, "dot",  # the family's class sums, on CPU only
                 marks=pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU's program")),
])
def test_a_profile_names_the_kernels_of_the_compiled_program_with_their_operations(fn, heavy_operation):
    """The profile's kernels are the compiled program's own (or the executor's work between
    them, never the time spent waiting for threads), each with a positive own time; a heavy
    kernel is named by its operation."""
    fn = jax.jit(fn)
    args = (jax.random.normal(jax.random.key(0), (512, 4096)),)
    operations = benchmark_normalizers.kernel_operations(fn, args)
    _, kernels = benchmark_normalizers.kernel_profile(fn, args, calls=5, top=4)
    assert kernels and all(us > 0 for _, us in kernels)
    assert not any("wait" in name.lower() for name, _ in kernels)
    assert all(name in operations or name.startswith("ThunkExecutor") for name, _ in kernels)
    assert any(operations[name].startswith(heavy_operation) for name, _ in kernels if name in operations)
    text = benchmark_normalizers.profile_text("softfam", fn, args)
    assert text.startswith("softfam ") and " µs: `" in text
