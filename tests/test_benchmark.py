"""The benchmark command, run tiny: it writes a table with every function and its ratios."""

from experiments import __main__ as cli
from experiments.benchmark_normalizers import FORWARD, LOSSES


def test_benchmark_writes_a_row_for_every_function(tmp_path):
    output = tmp_path / "normalizers.md"
    cli.main(["benchmark", "normalizers", "--shapes", "8x10", "--repeats", "1",
              "--min-time", "0", "--output", str(output)])
    table = output.read_text()
    assert "python -m experiments benchmark normalizers" in table
    for name in list(FORWARD) + list(LOSSES):
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        cells = row.strip("|").split("|")[1].split(",")
        assert float(cells[0]) > 0  # ms
        assert float(cells[2].split()[0]) > 0  # ratio against the baseline
