"""Time every normalizer's forward pass and every integer-label loss's value_and_grad.

Baselines measured in the same run: ``x * 1.0`` (an elementwise copy, the memory-bandwidth
limit), ``jax.nn.softmax`` and ``optax.losses.softmax_cross_entropy_with_integer_labels``.
Each timing is the best of several repeats of a jitted call (inputs already on the device,
result blocked on), the functions taking turns in every repeat: the least noisy estimate on
a shared machine.

Command: ``python -m experiments benchmark normalizers`` (about 3 minutes on 2 CPU cores);
writes ``results/benchmarks/normalizers.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import softfam
from experiments.io import write_text_atomically

SHAPES = ((4096, 10), (4096, 1000), (256, 100_000))
DEFAULT_OUTPUT = Path("results/benchmarks/normalizers.md")

FORWARD = {
    "copy x * 1.0 (baseline)": lambda x: x * 1.0,
    "jax.nn.softmax (baseline)": jax.nn.softmax,
    "softmax": softfam.softmax,
    "log_softmax": softfam.log_softmax,
    "taylor_softmax (order 2)": softfam.taylor_softmax,
    "log_taylor_softmax (order 2)": softfam.log_taylor_softmax,
    "spherical_softmax": softfam.spherical_softmax,
    "log_spherical_softmax": softfam.log_spherical_softmax,
}

LOSSES = {
    "optax softmax_cross_entropy_with_integer_labels (baseline)":
        optax.losses.softmax_cross_entropy_with_integer_labels,
    "softmax_cross_entropy_with_integer_labels": softfam.softmax_cross_entropy_with_integer_labels,
    "soft_margin_softmax_cross_entropy_with_integer_labels (margin 0.6)":
        lambda x, y: softfam.soft_margin_softmax_cross_entropy_with_integer_labels(x, y, margin=0.6),
    "taylor_softmax_cross_entropy_with_integer_labels (order 2)":
        softfam.taylor_softmax_cross_entropy_with_integer_labels,
    "taylor_softmax_cross_entropy_with_integer_labels (order 4)":
        lambda x, y: softfam.taylor_softmax_cross_entropy_with_integer_labels(x, y, order=4),
    "soft_margin_taylor_softmax_cross_entropy_with_integer_labels (order 2, margin 0.6)":
        lambda x, y: softfam.soft_margin_taylor_softmax_cross_entropy_with_integer_labels(x, y, margin=0.6),
    "spherical_softmax_cross_entropy_with_integer_labels":
        softfam.spherical_softmax_cross_entropy_with_integer_labels,
    "squared_error_with_integer_labels": softfam.squared_error_with_integer_labels,
    "z_loss_with_integer_labels": softfam.z_loss_with_integer_labels,
    "softmax_cross_entropy_upper_bound_with_integer_labels":
        softfam.softmax_cross_entropy_upper_bound_with_integer_labels,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the Markdown table to write")
    parser.add_argument("--repeats", type=int, default=15, help="repeats per timing (the best is kept)")
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per repeat, at least")
    parser.add_argument(
        "--shapes", type=str, default=",".join(f"{b}x{d}" for b, d in SHAPES),
        help="comma-separated BATCHxCLASSES shapes",
    )


def calls_per_timing(fn, args, min_time: float) -> int:
    """Compiles ``fn`` and returns how many back-to-back calls take at least ``min_time``."""
    jax.block_until_ready(fn(*args))
    calls = 1
    while timed(fn, args, calls) * calls < min_time:
        calls *= 2
    return calls


def timed(fn, args, calls: int) -> float:
    """Seconds per call of ``calls`` back-to-back calls, blocked on the last result."""
    start = time.perf_counter()
    for _ in range(calls):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


def best_seconds(fns: dict, args, repeats: int, min_time: float) -> dict:
    """The best time per call of each function; the functions take turns in every repeat, so
    that a slow spell of the machine hits them all alike."""
    calls = {name: calls_per_timing(fn, args, min_time) for name, fn in fns.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], timed(fn, args, calls[name]))
    return best


def loss_value_and_grad(loss):
    return jax.jit(jax.value_and_grad(lambda x, y: jnp.mean(loss(x, y))))


def measure(shapes, repeats, min_time, log=print):
    rows = []
    for batch, classes in shapes:
        key_x, key_y = jax.random.split(jax.random.key(0))
        x = jax.random.normal(key_x, (batch, classes), jnp.float32)
        y = jax.random.randint(key_y, (batch,), 0, classes)
        traffic = 2 * x.size * x.dtype.itemsize  # read x, write the output
        forward = best_seconds({n: jax.jit(f) for n, f in FORWARD.items()}, (x,), repeats, min_time)
        losses = best_seconds(
            {n: loss_value_and_grad(f) for n, f in LOSSES.items()}, (x, y), repeats, min_time
        )
        for kind, times in (("forward", forward), ("value_and_grad", losses)):
            for name, seconds in times.items():
                rows.append((kind, (batch, classes), name, seconds, traffic / seconds / 1e9))
                log(f"{batch}x{classes} {kind} {name}: {seconds * 1e3:.3f} ms")
    return rows


def render(rows, command: str) -> str:
    by_key = {(kind, shape, name): seconds for kind, shape, name, seconds, _ in rows}
    lines = [
        "# Normalizer and loss benchmark",
        "",
        f"Generated by `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.processor() or 'cpu'}; "
        f"devices {jax.devices()}; Python {platform.python_version()}, jax {jax.__version__}, "
        f"optax {optax.__version__}, numpy {np.__version__}. float32, jitted, best of the repeats.",
        "",
        "GB/s counts reading the logits and writing one array of their size. Forward ratios: the "
        "copy's time over this time (the fraction of the copy's bandwidth reached); "
        "`vs jax.nn` is this time over `jax.nn.softmax`'s. value_and_grad ratio: optax's time over "
        "this time (>= 1 means no slower than optax).",
        "",
    ]
    for kind, baseline in (("forward", "copy x * 1.0 (baseline)"),
                           ("value_and_grad", "optax softmax_cross_entropy_with_integer_labels (baseline)")):
        shapes = sorted({shape for k, shape, *_ in rows if k == kind}, key=lambda s: (s[1], s[0]))
        lines.append(f"## {kind}")
        lines.append("")
        header = "| function | " + " | ".join(f"{b}x{d}: ms, GB/s, ratio" for b, d in shapes) + " |"
        lines += [header, "|---" * (len(shapes) + 1) + "|"]
        names = [name for k, shape, name, *_ in rows if k == kind and shape == shapes[0]]
        for name in names:
            cells = []
            for shape in shapes:
                seconds = by_key[(kind, shape, name)]
                gbps = 2 * shape[0] * shape[1] * 4 / seconds / 1e9
                ratio = by_key[(kind, shape, baseline)] / seconds
                cell = f"{seconds * 1e3:.3f}, {gbps:.1f}, {ratio:.2f}"
                if kind == "forward" and name != "jax.nn.softmax (baseline)" and "softmax" in name:
                    cell += f" ({seconds / by_key[(kind, shape, 'jax.nn.softmax (baseline)')]:.2f} vs jax.nn)"
                cells.append(cell)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    rows = measure(shapes, args.repeats, args.min_time, log=lambda m: print(m, file=sys.stderr, flush=True))
    command = args.command_line
    if os.environ.get("XLA_FLAGS"):  # it changes the numbers: part of the command
        command = f"XLA_FLAGS={os.environ['XLA_FLAGS']} {command}"
    write_text_atomically(args.output, render(rows, command) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
