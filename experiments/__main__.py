"""The one entry point: ``python -m experiments <command> ...``.

  list                          the experiments and what each writes
  show <experiment>             print an experiment's config (after any overrides)
  run <experiment>              tune and train every loss, then write the table and plots
  tables <experiment>           regenerate the table and plots from the run directories
  benchmark normalizers         time the normalizers and losses against their baselines
  benchmark factored            time the factored output layer against the dense layer
  benchmark linear              time and memory of the linear losses against the dense path
  benchmark step                one jitted optimizer step with each loss against optax's

Any config field can be overridden on ``show`` and ``run``, lists separated by commas:
  python -m experiments run digits-mlp --config.losses=log-softmax,log-taylor-2 \\
      --config.seeds=0,1 --config.max_epochs=3 --config.dropout=0.1
  python -m experiments run digits-mlp --config.tuning=random --config.trials=16 \\
      --config.learning_rate=1e-4,1e-1 --config.weight_decay=0,0.1
  python -m experiments run digits-mlp --config.dataset=npz:my_data.npz --output results/mine
``python -m experiments show digits-mlp`` lists the fields and the hyperparameters. Compiled programs are cached in
$SOFTFAM_CACHE (default ~/.cache/softfam/jax), so a command run again compiles nothing.
"""

import argparse
import os
import sys
from pathlib import Path

from experiments import (benchmark_factored, benchmark_linear, benchmark_normalizers,
                         benchmark_step, configs)
from experiments.config import Config, ConfigError, describe
from experiments.data import DataError
from experiments.records import RunError


BENCHMARKS = {"normalizers": benchmark_normalizers, "factored": benchmark_factored,
              "linear": benchmark_linear, "step": benchmark_step}


def _output(args) -> Path:
    return args.output if args.output is not None else Path("results") / args.experiment


def _enable_compilation_cache() -> None:
    """Caches every compiled program on disk, so that a command run again compiles nothing."""
    import jax

    cache = os.environ.get("SOFTFAM_CACHE", Path.home() / ".cache" / "softfam" / "jax")
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _run(args, experiment) -> str:
    """Runs a comparison, or each comparison of a study; returns its table."""
    from experiments import comparison, data, records, study, tables

    if isinstance(experiment, Config):
        comparison.run(experiment, _output(args), data.load(experiment.dataset, args.data_dir),
                       args.command_line)
        return tables.write(_output(args)) if records.writer() else ""
    return study.run(args.experiment, experiment, _output(args), args.data_dir, args.command_line)


def _tables(args) -> str:
    from experiments import study, tables

    output = _output(args)
    if not (output / "config.json").exists() and not (output / "study.json").exists():
        raise FileNotFoundError(f"{output} holds no comparison or study; run it first")
    if (output / "study.json").exists():
        return study.write(output, with_comparisons=True)
    return tables.write(output)


def _distributed(args) -> None:
    """Joins a multi-process run; only process 0 will write (``experiments.records``)."""
    import jax

    jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    os.environ["SOFTFAM_PROCESS_INDEX"] = str(jax.process_index())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the experiments")
    show = commands.add_parser("show", help="print an experiment's config, after --config.KEY=VALUE")
    run = commands.add_parser("run", help="run an experiment (resumes where it stopped); "
                                          "override any field with --config.KEY=VALUE")
    tables = commands.add_parser("tables", help="regenerate an experiment's table and plots")
    for sub in (show, run, tables):
        sub.add_argument("experiment", choices=sorted(configs.CONFIGS))
    for sub in (run, tables):
        sub.add_argument("--output", type=Path, help="its directory (default results/<experiment>)")
    run.add_argument("--data-dir", type=Path, help="where dataset files are (before $SOFTFAM_DATA)")
    run.add_argument("--distributed", action="store_true",
                     help="call jax.distributed.initialize() first (multi-host runs); the three "
                          "options below are auto-detected on SLURM, Open MPI and TPU pods")
    run.add_argument("--coordinator-address", help="host:port of process 0")
    run.add_argument("--num-processes", type=int)
    run.add_argument("--process-id", type=int)
    bench = commands.add_parser("benchmark", help="time softfam against its baselines")
    bench_targets = bench.add_subparsers(dest="target", required=True)
    for name, module in BENCHMARKS.items():
        module.add_arguments(bench_targets.add_parser(name, help=module.__doc__.splitlines()[0]))
    argv = sys.argv[1:] if argv is None else list(argv)
    args, unknown = parser.parse_known_args(argv)
    overrides = [a.removeprefix("--config.") for a in unknown if a.startswith("--config.")]
    if len(overrides) != len(unknown) or (overrides and args.command not in ("show", "run")):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.command_line = " ".join(["python -m experiments", *argv])

    if args.command == "list":
        for name, get_config in configs.CONFIGS.items():
            print(f"{name}\n    {get_config.__doc__.strip()}\n")
        return 0
    if args.command == "benchmark":
        BENCHMARKS[args.target].run(args)
        return 0
    try:
        if args.command == "tables":
            print(_tables(args))
            return 0
        experiment = configs.get(args.experiment, overrides)
        if args.command == "show":
            for config in (experiment,) if isinstance(experiment, Config) else experiment:
                print(f"# {config.name}\n{describe(config)}\n")
            return 0
        _enable_compilation_cache()
        if args.distributed:
            _distributed(args)
        print(_run(args, experiment))
    except (ConfigError, DataError, RunError, OSError) as error:  # a file or path that fails
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
