"""The benchmark command, run tiny: a table with every function, its ratio and quartiles."""

from experiments import __main__ as cli
from experiments.benchmark_normalizers import SECTIONS


def test_benchmark_writes_a_row_for_every_function_and_section(tmp_path):
    output = tmp_path / "normalizers.md"
    cli.main(["benchmark", "normalizers", "--shapes", "8x10", "--pairs", "3",
              "--min-time", "0", "--output", str(output)])
    table = output.read_text()
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
