"""Time and memory of the linear losses against the dense path through the logits.

For each linear loss, the dense path is ``hidden @ weights + bias`` followed by the dense
softfam loss; both are ``jax.value_and_grad`` of the mean loss for hidden and weights, jitted.
The two take turns (dense, linear, dense, ...), ``repeats`` times after a warm-up; the table
gives the median time per call with its quartiles, the ratio of the medians, the peak
temporary memory of each compiled program (``memory_analysis().temp_size_in_bytes``), and
the process's peak resident memory after each row (it only grows, so it is an upper bound).
Sizes (N, V, d) = (4096, 65536, 256) and (8192, 131072, 512). A path whose compiled temporary
memory, arguments and outputs exceed 3/4 of the machine's physical memory (cgroup limits are
not read) is compiled but not run; its row says so.

Command: ``python -m experiments benchmark linear`` (about 20 minutes on 2 CPU cores);
writes ``results/benchmarks/linear.md``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import resource
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import softfam
from experiments.io import write_text_atomically

SIZES = ((4096, 65536, 256), (8192, 131072, 512))
DEFAULT_OUTPUT = Path("results/benchmarks/linear.md")
LOSSES = {  # name: (linear loss, dense loss)
    "log-softmax": (softfam.linear_softmax_cross_entropy_with_integer_labels,
                    softfam.softmax_cross_entropy_with_integer_labels),
    "log-taylor-2": (softfam.linear_taylor_softmax_cross_entropy_with_integer_labels,
                     softfam.taylor_softmax_cross_entropy_with_integer_labels),
    "log-taylor-4": (functools.partial(softfam.linear_taylor_softmax_cross_entropy_with_integer_labels, order=4),
                     functools.partial(softfam.taylor_softmax_cross_entropy_with_integer_labels, order=4)),
    "log-spherical": (softfam.linear_spherical_softmax_cross_entropy_with_integer_labels,
                      softfam.spherical_softmax_cross_entropy_with_integer_labels),
    "squared-error": (softfam.linear_squared_error_with_integer_labels,
                      softfam.squared_error_with_integer_labels),
    "z-loss": (softfam.linear_z_loss_with_integer_labels, softfam.z_loss_with_integer_labels),
}


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer of at least 1")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the Markdown table to write")
    parser.add_argument("--repeats", type=positive_int, default=3, help="turns of each path per loss")
    parser.add_argument("--sizes", type=str, default=";".join(",".join(map(str, s)) for s in SIZES),
                        help="N,V,d triples separated by ';'")
    parser.add_argument("--losses", type=str, default=",".join(LOSSES))


def gradient_programs(linear_loss, dense_loss, hidden, weights, labels, bias):
    """The jitted value-and-grad of the mean loss for (hidden, weights), both paths."""
    def dense_mean(h, w):
        return jnp.mean(dense_loss(h @ w + bias[None, :], labels))

    def linear_mean(h, w):
        return jnp.mean(linear_loss(h, w, labels, bias))

    return {name: jax.jit(jax.value_and_grad(f, (0, 1)))
            for name, f in (("dense", dense_mean), ("linear", linear_mean))}


def peak_resident_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def physical_memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def measure(name: str, size: tuple[int, int, int], repeats: int) -> dict:
    n, v, d = size
    keys = jax.random.split(jax.random.key(0), 3)
    hidden = jax.random.normal(keys[0], (n, d), jnp.float32)
    weights = jax.random.normal(keys[1], (d, v), jnp.float32) / np.sqrt(d)
    labels = jax.random.randint(keys[2], (n,), 0, v)
    bias = jnp.zeros(v, jnp.float32)
    programs = gradient_programs(*LOSSES[name], hidden, weights, labels, bias)
    row = {"temp": {}, "seconds": {"dense": [], "linear": []}}
    for path, program in list(programs.items()):
        compiled = program.lower(hidden, weights).compile()
        memory = compiled.memory_analysis()
        row["temp"][path] = memory.temp_size_in_bytes
        needed = memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
        if needed > 0.75 * physical_memory_bytes():
            del programs[path]  # it would swap or be killed: reported as not fitting
            continue
        jax.block_until_ready(compiled(hidden, weights))  # warm-up
        programs[path] = compiled
    for _ in range(repeats):
        for path, program in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(program(hidden, weights))
            row["seconds"][path].append(time.perf_counter() - start)
    row["rss"] = peak_resident_gib()
    return row


def quartiles(values, scale=1.0, digits=1) -> str:
    low, median, high = np.percentile(np.asarray(values) * scale, [25, 50, 75])
    return f"{median:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def render(rows, command: str, repeats: int) -> str:
    lines = [
        "# Linear losses against the dense path",
        "",
        f"Generated by `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; devices {jax.devices()}; "
        f"Python {platform.python_version()}, jax {jax.__version__}.",
        "`jax.value_and_grad` of the mean loss for hidden and weights, float32, jitted. Dense: "
        "`hidden @ weights + bias`, then softfam's dense loss. Linear: softfam's linear loss "
        f"(blocks of {softfam._linear.DEFAULT_BLOCK_SIZE} classes for log-softmax and log-Taylor-4). "
        f"The two paths take turns, {repeats} times after a warm-up; time: median [quartiles] "
        "per call; speedup: dense median over linear median; \"does not fit\": the compiled "
        "program needs more than 3/4 of the machine's memory, so it was not run. Temporary memory: the compiled "
        "program's `memory_analysis().temp_size_in_bytes`. Peak RSS: the process's peak resident "
        "memory after the row (it only grows).",
        "",
        "| N, V, d | loss | dense ms | linear ms | speedup | dense temp GiB | linear temp GiB "
        "| temp linear / dense | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size, name, row in rows:
        times = {p: quartiles(row["seconds"][p], 1e3) if row["seconds"][p] else "does not fit"
                 for p in ("dense", "linear")}
        medians = [np.median(row["seconds"][p]) for p in ("dense", "linear") if row["seconds"][p]]
        speedup = f"{medians[0] / medians[1]:.2f}" if len(medians) == 2 else "-"
        temp = {p: row["temp"][p] / 2**30 for p in row["temp"]}
        lines.append(
            f"| {', '.join(f'{x:,}' for x in size)} | {name} | {times['dense']} | {times['linear']} "
            f"| {speedup} | {temp['dense']:.3f} | {temp['linear']:.4f} "
            f"| {temp['linear'] / temp['dense']:.4f} | {row['rss']:.1f} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> None:
    sizes = [tuple(int(x) for x in part.split(",")) for part in args.sizes.split(";")]
    rows = []
    for size in sizes:
        for name in args.losses.split(","):
            row = measure(name, size, args.repeats)
            rows.append((size, name, row))
            print(f"{size} {name}: seconds {row['seconds']}", file=sys.stderr, flush=True)
    write_text_atomically(args.output, render(rows, args.command_line, args.repeats))
    print(f"wrote {args.output}", file=sys.stderr)
