"""Time and memory of the linear losses against the dense path and against tokamax.

Every path is the jitted ``jax.value_and_grad`` of the mean loss for hidden and weights,
float32, no bias (tokamax has none):

- tokamax: ``tokamax.linear_softmax_cross_entropy_loss(..., implementation="xla")``, the JAX
  peer (log-softmax only). An optional dependency: ``pip install tokamax==0.0.12`` (the version
  checked with jax 0.10.2); without it its rows say "not installed".
- dense: ``hidden @ weights``, then softfam's dense loss.
- softfam: softfam's linear loss (blocks of ``DEFAULT_BLOCK_SIZE`` classes for log-softmax and
  log-Taylor-4, the statistics for the spherical family).
- matmul: the plain ``(N, d) @ (d, V)`` product, ``2 N d V`` flops: its speed is the machine's
  speed for this work, against which each path's flop count is set.

Flop counts (multiply-adds count 2): dense and tokamax ``6 N d V`` (the logits, then the
gradients for hidden and weights, each a product of the logits' size); softfam blocked
``8 N d V`` (the backward pass forms each block's logits again); softfam statistics
``4 V d^2 + 4 N d^2`` (the Gram matrix ``W W^T`` and ``(H^T diag(g) H) W``; ``H W W^T`` and
``H^T diag(g) H``). "at matmul speed" is that count divided by the matmul's measured rate:
the time the path would take if it ran as fast as a plain matrix product.

Within one size, all programs take turns (matmul, tokamax, then dense and softfam of each
loss, again and again), ``repeats`` times after a warm-up. A turn times back-to-back calls of its
program for at least ``--min-time`` seconds (one call for a program slower than that), as a
training loop calls its step: a single call right after another program's measures that
program's freed memory being faulted in again.
The table gives the median time per call over the turns with its quartiles, the peak temporary memory of each compiled program
(``memory_analysis().temp_size_in_bytes``) and the mean loss of each path (the paths agree to
float32 rounding). A program whose compiled temporary memory, arguments and outputs exceed 3/4
of the machine's physical memory (cgroup limits are not read) is compiled but not run.

Command: ``python -m experiments benchmark linear`` writes ``results/benchmarks/linear.md``:
about 13 minutes on 2 idle CPU cores at about 230 GFLOP/s (2026-12-07), most of it in the largest size's
dense paths. Smaller: ``--sizes 512,4096,64 --repeats 2``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import softfam
from experiments.io import write_text_atomically

SIZES = ((2048, 32768, 256), (4096, 65536, 256), (8192, 131072, 512))
DEFAULT_OUTPUT = Path("results/benchmarks/linear.md")
TOKAMAX_VERSION = "0.0.12"
LOSSES = {  # name: (linear loss, dense loss, whether softfam computes it from the statistics)
    "log-softmax": (softfam.linear_softmax_cross_entropy_with_integer_labels,
                    softfam.softmax_cross_entropy_with_integer_labels, False),
    "log-taylor-2": (softfam.linear_taylor_softmax_cross_entropy_with_integer_labels,
                     softfam.taylor_softmax_cross_entropy_with_integer_labels, True),
    "log-taylor-4": (functools.partial(softfam.linear_taylor_softmax_cross_entropy_with_integer_labels, order=4),
                     functools.partial(softfam.taylor_softmax_cross_entropy_with_integer_labels, order=4), False),
    "log-spherical": (softfam.linear_spherical_softmax_cross_entropy_with_integer_labels,
                      softfam.spherical_softmax_cross_entropy_with_integer_labels, True),
    "squared-error": (softfam.linear_squared_error_with_integer_labels,
                      softfam.squared_error_with_integer_labels, True),
    "z-loss": (softfam.linear_z_loss_with_integer_labels, softfam.z_loss_with_integer_labels, True),
}


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer of at least 1")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the Markdown table to write")
    parser.add_argument("--repeats", type=positive_int, default=3, help="turns of each program per size")
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="seconds of back-to-back calls per turn, at least")
    parser.add_argument("--sizes", type=str, default=";".join(",".join(map(str, s)) for s in SIZES),
                        help="N,V,d triples separated by ';'")
    parser.add_argument("--losses", type=str, default=",".join(LOSSES))


def flops(path: str, loss: str, n: int, v: int, d: int) -> float:
    """The multiply-add work of one call (module docstring), 2 flops per multiply-add."""
    if path == "matmul":
        return 2.0 * n * d * v
    if path == "softfam" and LOSSES[loss][2]:
        return 4.0 * v * d * d + 4.0 * n * d * d
    return (8.0 if path == "softfam" else 6.0) * n * d * v


def tokamax_loss():
    """tokamax's linear cross-entropy, or None when it is not installed."""
    try:
        import tokamax
        from absl import flags
    except ImportError:
        return None
    if not flags.FLAGS.is_parsed():  # else tokamax parses sys.argv, this command's, as its flags
        flags.FLAGS.mark_as_parsed()
    return functools.partial(tokamax.linear_softmax_cross_entropy_loss, reduction="mean",
                             implementation="xla")


def programs(names, hidden, weights, labels, peer):
    """The jitted programs of one size, keyed by (loss, path): each returns (mean loss, grads)."""
    def gradients(mean_loss):
        return jax.jit(jax.value_and_grad(mean_loss, (0, 1)))

    found = {("", "matmul"): jax.jit(lambda h, w: h @ w)}
    if peer is not None and "log-softmax" in names:
        found[("log-softmax", "tokamax")] = gradients(lambda h, w: peer(h, labels, w))
    for name in names:
        linear, dense, _ = LOSSES[name]
        found[(name, "dense")] = gradients(lambda h, w, dense=dense: jnp.mean(dense(h @ w, labels)))
        found[(name, "softfam")] = gradients(lambda h, w, linear=linear: jnp.mean(linear(h, w, labels)))
    return found


def physical_memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def measure(size: tuple[int, int, int], names, repeats: int, peer, min_time: float) -> dict:
    """{(loss, path): {"temp": bytes, "seconds": [...], "loss": float or None}} for one size."""
    n, v, d = size
    keys = jax.random.split(jax.random.key(0), 3)
    hidden = jax.random.normal(keys[0], (n, d), jnp.float32)
    weights = jax.random.normal(keys[1], (d, v), jnp.float32) / np.sqrt(d)
    labels = jax.random.randint(keys[2], (n,), 0, v)
    rows, runnable, calls = {}, {}, {}
    for key, program in programs(names, hidden, weights, labels, peer).items():
        compiled = program.lower(hidden, weights).compile()
        memory = compiled.memory_analysis()
        rows[key] = dict(temp=memory.temp_size_in_bytes, seconds=[], loss=None)
        needed = memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
        if needed > 0.75 * physical_memory_bytes():
            continue  # it would swap or be killed: reported as not fitting
        start = time.perf_counter()
        output = jax.block_until_ready(compiled(hidden, weights))  # warm-up
        calls[key] = max(1, int(np.ceil(min_time / (time.perf_counter() - start))))
        if key[1] != "matmul":
            rows[key]["loss"] = float(output[0])
        runnable[key] = compiled
    for _ in range(repeats):
        for key, compiled in runnable.items():
            start = time.perf_counter()
            for _ in range(calls[key]):
                output = compiled(hidden, weights)
            jax.block_until_ready(output)
            rows[key]["seconds"].append((time.perf_counter() - start) / calls[key])
    return rows


def quartiles(values, scale=1.0, digits=1) -> str:
    low, median, high = np.percentile(np.asarray(values) * scale, [25, 50, 75])
    return f"{median:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def render(results, command: str, repeats: int, min_time: float, peer_note: str) -> str:
    lines = [
        "# Linear losses against the dense path and tokamax",
        "",
        f"Generated by `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; devices {jax.devices()}; "
        f"Python {platform.python_version()}, jax {jax.__version__}; {peer_note}.",
        "`jax.value_and_grad` of the mean loss for hidden and weights, float32, no bias, jitted. "
        "tokamax: `linear_softmax_cross_entropy_loss(implementation=\"xla\")`. Dense: "
        "`hidden @ weights`, then softfam's dense loss. softfam: its linear loss (blocks of "
        f"{softfam._linear.DEFAULT_BLOCK_SIZE} classes for log-softmax and log-Taylor-4, the "
        "statistics for the others). Within a size every program takes its turn, "
        f"{repeats} times after a warm-up, each turn back-to-back calls for at least {min_time:g} s "
        "(one call for a slower program). Time: median [quartiles] per call. Temp: the "
        "compiled program's `memory_analysis().temp_size_in_bytes`. Flops: dense and tokamax "
        "6 N d V, softfam blocked 8 N d V, softfam statistics 4 V d^2 + 4 N d^2; at matmul "
        "speed: those flops at the rate of the plain `(N, d) @ (d, V)` product timed in the "
        "same turns (its row). Speedup: tokamax's median time over the path's. \"does not "
        "fit\": the program needs more than 3/4 of the machine's memory, so it was not run.",
        "",
        "| N, V, d | loss | path | ms | temp MiB | temp / tokamax | GFLOP | ms at matmul speed "
        "| time / matmul-speed time | speedup over tokamax | mean loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, rows in results:
        n, v, d = size
        matmul = rows[("", "matmul")]
        rate = flops("matmul", "", n, v, d) / np.median(matmul["seconds"]) if matmul["seconds"] else None
        peer = rows.get(("log-softmax", "tokamax"))
        for (name, path), row in rows.items():
            work = flops(path, name, n, v, d)
            median = np.median(row["seconds"]) if row["seconds"] else None
            ideal = work / rate if rate else None
            cells = [
                ", ".join(f"{x:,}" for x in size), name or "-", path,
                quartiles(row["seconds"], 1e3) if median else "does not fit",
                f"{row['temp'] / 2**20:,.1f}",
                f"{row['temp'] / peer['temp']:.4f}" if peer and path != "matmul" else "-",
                f"{work / 1e9:,.1f}",
                f"{ideal * 1e3:,.1f}" if ideal else "-",
                f"{median / ideal:.2f}" if median and ideal else "-",
                f"{np.median(peer['seconds']) / median:.2f}"
                if median and peer and peer["seconds"] and path != "matmul" else "-",
                f"{row['loss']:.6f}" if row["loss"] is not None else "-",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if rate:
            lines.append(f"| {', '.join(f'{x:,}' for x in size)} | matmul rate | | "
                         f"{rate / 1e9:,.0f} GFLOP/s | | | | | | | |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> None:
    sizes = [tuple(int(x) for x in part.split(",")) for part in args.sizes.split(";")]
    names = args.losses.split(",")
    unknown = sorted(set(names) - set(LOSSES))
    if unknown:
        raise SystemExit(f"unknown losses {unknown}; choose among {list(LOSSES)}")
    peer = tokamax_loss()
    if peer is None:
        peer_note = f"tokamax not installed (`pip install tokamax=={TOKAMAX_VERSION}`): no tokamax rows"
    else:
        from importlib.metadata import version
        peer_note = f"tokamax {version('tokamax')}"
    results = []
    for size in sizes:
        rows = measure(size, names, args.repeats, peer, args.min_time)
        results.append((size, rows))
        for (name, path), row in rows.items():
            print(f"{size} {name} {path}: seconds {row['seconds']}", file=sys.stderr, flush=True)
    write_text_atomically(args.output, render(results, args.command_line, args.repeats, args.min_time, peer_note))
    print(f"wrote {args.output}", file=sys.stderr)
