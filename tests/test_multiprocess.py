"""Several hosts, stood in for by two processes on localhost (``--distributed``): they train
the comparison that one process trains, checkpoints go through Orbax in both, and only
process 0 writes the configs, records, tables and plots."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import records

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["--config.losses=log-softmax", "--config.max_epochs=2", "--config.seeds=0",
             "--config.learning_rate=0.01", "--config.learning_rate_bounds=0.0099,0.0101"]
SCRIPT = """
import sys
from experiments import __main__ as cli, train
train.CHECKPOINT_SECONDS = 0.0  # every validation saves a checkpoint through Orbax
sys.exit(cli.main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run(output, *extra):
    command = [sys.executable, "-c", SCRIPT, "run", "digits-mlp", "--output", str(output),
               *OVERRIDES, *extra]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_two_processes_train_what_one_trains_and_only_process_0_writes(tmp_path):
    address = f"localhost:{free_port()}"
    processes = [run(tmp_path / "two", "--distributed", "--coordinator-address", address,
                     "--num-processes", "2", "--process-id", str(i)) for i in (0, 1)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    single = run(tmp_path / "one")
    assert single.communicate(timeout=600)[0] and single.returncode == 0

    two, one = records.read(tmp_path / "two"), records.read(tmp_path / "one")
    assert [records.record_key(m) for m in two] == [records.record_key(m) for m in one]
    assert len(two) == 3  # two tuning seeds and one final seed, each written once
    for a, b in zip(two, one):
        for x, y in zip(a["curve"], b["curve"]):
            assert x["nll"] == pytest.approx(y["nll"], rel=1e-4)
            assert x["error"] == pytest.approx(y["error"], abs=1e-6)
    (environment,) = records.environments(tmp_path / "two")
    assert len(environment["devices"]) == 2  # one device in each process
    written = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert written == ["config.json", "environments.json", "learning_curves.png",
                       "records.jsonl.gz", "reliability.png", "table.md"]
    assert not list((tmp_path / "two").rglob(".*.tmp"))  # no write left half done
