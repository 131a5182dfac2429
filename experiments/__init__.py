"""Experiments and benchmarks around softfam: ``python -m experiments --help``."""
