"""The records and what reads them: every committed table regenerates from the compact records
with the numbers it had when each model had a run directory of its own; the readers need no
JAX; the modules of experiments/ import each other without cycles; results/ stays small."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import records, study, tables

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
# The tables as the code before the compact records generated them from the run directories
# (one file per table, its path under results/ with "--" for "/").
BEFORE = Path(__file__).parent / "data" / "tables-before"
NUMBER = re.compile(r"[-+]?\d[\d,]*\.?\d*(?:e[-+]?\d+)?")


def numbers_by_line(table: str) -> dict[tuple, list[list[str]]]:
    """The numbers of each result row (keyed by its first cell) and of each verdict line
    (keyed by its text before the first colon); the paper's numbers, which the tables no
    longer print, are left out."""
    found = {}
    for line in table.split("## The paper's numbers")[0].splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            first = line.strip("|").split("|")[0].strip()
            if first != "loss":
                found.setdefault(("row", first), []).append(NUMBER.findall(line.split("|", 2)[2]))
        elif line.lstrip().startswith(("- ", "Per test example")):
            key, _, rest = line.partition(":")
            found.setdefault(("line", key.strip()), []).append(NUMBER.findall(rest))
    return found


@pytest.mark.parametrize("before", sorted(BEFORE.glob("*.md")), ids=lambda p: p.stem)
def test_every_table_has_the_numbers_it_had_before_the_compact_records(before):
    directory = RESULTS / before.stem.replace("--", "/")
    if (directory / "study.json").exists():
        table = study.render(*study.collect(directory))
    else:
        table = tables.render(records.read_comparison(directory), records.read(directory))
    old, new = numbers_by_line(before.read_text()), numbers_by_line(table)
    assert len(old) > 5
    for key, numbers in old.items():
        assert new.get(key) == numbers, key


def test_results_are_compact():
    """What is committed: the working files of a run in progress (``work/``, ignored by git)
    are left out."""
    files = [p for p in RESULTS.rglob("*")
             if p.is_file() and "work" not in p.relative_to(RESULTS).parts]
    assert len(files) <= 600
    assert sum(p.stat().st_size for p in files) <= 15 * 2**20
    assert not [p for p in files if p.name in ("metrics.jsonl", "env.json")]


def test_the_readers_of_records_need_no_jax():
    code = ("import sys; from experiments import records, tables, study, plots, tuning; "
            "from experiments import statistics; assert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def experiments_imports() -> dict[str, set[str]]:
    """For each module of experiments/, the modules of experiments/ it imports (anywhere in
    the module, functions included)."""
    graph = {}
    for path in (ROOT / "experiments").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("experiments"):
                imported |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("experiments")}
        graph[name] = imported
    return {name: {m for m in imported if m in graph and m != name} for name, imported in graph.items()}


def test_no_module_of_experiments_imports_one_that_imports_it_back():
    graph = experiments_imports()
    assert "experiments.train" in graph and "experiments.output_layers" in graph["experiments.train"]

    def reachable(start):
        seen, stack = set(), [start]
        while stack:
            for module in graph[stack.pop()] - seen:
                seen.add(module)
                stack.append(module)
        return seen

    cycles = [name for name in graph if name in reachable(name) and name != "experiments"]
    assert cycles == []


def test_the_records_file_is_the_same_bytes_for_the_same_records(tmp_path):
    models = [{"loss": "x", "stage": "final", "point": {"learning_rate": 0.1}, "seed": 0}]
    records.write(tmp_path, models)
    first = (tmp_path / records.RECORDS).read_bytes()
    records.write(tmp_path, models)
    assert (tmp_path / records.RECORDS).read_bytes() == first and records.read(tmp_path) == models
