"""The one entry point: ``python -m experiments <command> ...``."""

import argparse
import sys

from experiments import benchmark_normalizers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("benchmark", help="time softfam against its baselines")
    bench_targets = bench.add_subparsers(dest="target", required=True)
    benchmark_normalizers.add_arguments(
        bench_targets.add_parser("normalizers", help=benchmark_normalizers.__doc__.splitlines()[0])
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.command_line = " ".join(["python -m experiments", *argv])
    if args.command == "benchmark" and args.target == "normalizers":
        benchmark_normalizers.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
