"""The one entry point: ``python -m experiments <command> ...``.

  list                          the experiments and what each writes
  run <experiment>              tune and train every loss, then write the table and plots
  tables <experiment>           regenerate the table and plots from the run directories
  benchmark normalizers         time the normalizers and losses against their baselines
  benchmark factored            time the factored output layer against the dense layer
"""

import argparse
import sys
from pathlib import Path

from experiments import benchmark_factored, benchmark_normalizers, configs


def _output(args) -> Path:
    return args.output if args.output is not None else Path("results") / args.experiment


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the experiments")
    run = commands.add_parser("run", help="run an experiment (resumes where it stopped)")
    tables = commands.add_parser("tables", help="regenerate an experiment's table and plots")
    for sub in (run, tables):
        sub.add_argument("experiment", choices=sorted(configs.CONFIGS))
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
    for name, module in (("normalizers", benchmark_normalizers), ("factored", benchmark_factored)):
        module.add_arguments(bench_targets.add_parser(name, help=module.__doc__.splitlines()[0]))
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.command_line = " ".join(["python -m experiments", *argv])

    if args.command == "list":
        for name, get_config in configs.CONFIGS.items():
            print(f"{name}\n    {get_config.__doc__.strip()}\n")
    elif args.command == "run":
        from experiments import comparison, data, study, tables

        if args.distributed:
            import jax

            jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
        config = configs.get(args.experiment)
        try:
            if isinstance(config, study.StudyConfig):
                print(study.run(config, _output(args), args.data_dir))
            else:
                comparison.run(config, _output(args), data.load(config.dataset, args.data_dir))
                print(tables.write(_output(args)))
        except data.DataError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    elif args.command == "tables":
        from experiments import study, tables

        if isinstance(configs.get(args.experiment), study.StudyConfig):
            print(study.write(_output(args), with_comparisons=True))
        else:
            print(tables.write(_output(args)))
    elif args.command == "benchmark":
        {"normalizers": benchmark_normalizers, "factored": benchmark_factored}[args.target].run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
