"""The linear benchmark command, run tiny: every loss's dense and softfam rows, the matmul row
and rate, and the paths agreeing on the mean loss. (Its timings decide nothing here.)"""

from experiments import __main__ as cli
from experiments.benchmark_linear import LOSSES


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_benchmark_writes_every_path_and_the_paths_agree(tmp_path):
    output = tmp_path / "linear.md"
    cli.main(["benchmark", "linear", "--sizes", "16,64,8", "--repeats", "2", "--output", str(output)])
    table = output.read_text()
    assert "python -m experiments benchmark linear" in table
    rows = [cells(line) for line in table.splitlines() if line.startswith("| 16, 64, 8 |")]
    paths = {(row[1], row[2]): row for row in rows}
    assert ("-", "matmul") in paths and any(row[1] == "matmul rate" for row in rows)
    for name in LOSSES:
        dense, softfam = paths[(name, "dense")], paths[(name, "softfam")]
        assert abs(float(dense[-1]) - float(softfam[-1])) <= 1e-4 * abs(float(dense[-1]))
        for row in (dense, softfam):
            median, quartiles = row[3].split("[")
            low, high = (float(q) for q in quartiles.rstrip("]").split(","))
            assert 0 <= low <= float(median) <= high
    if ("log-softmax", "tokamax") in paths:
        assert abs(float(paths[("log-softmax", "tokamax")][-1]) - float(paths[("log-softmax", "dense")][-1])) < 1e-4
    else:
        assert "tokamax not installed" in table
