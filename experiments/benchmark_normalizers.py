"""Time every normalizer and loss against jax.nn and optax, interleaved, as ratios.

Each softfam function is paired with its baseline: the normalizers with ``jax.nn.softmax``, the
log twins with ``jax.nn.log_softmax``, the integer-label losses' ``value_and_grad`` with optax's
``softmax_cross_entropy_with_integer_labels`` and the probability-label losses' with optax's
``softmax_cross_entropy``. A pair is one timing of the baseline and then one of the candidate
(A B A B ...), each timing enough back-to-back jitted calls to last ``--min-time`` seconds; the
ratio of a pair is the baseline's time over the candidate's (>= 1: softfam is no slower), and the
table gives the median ratio over the pairs with its quartiles. An ablation table times each function
against itself with its overflow check taken out: every ``lax.cond`` traced while it is built
replaced by its first branch (the family's direct way, the plain spherical statistics), so that
neither the predicate nor the branch is run; the ratio is the cost of what remains of the
overflow handling (softmax, which always works in log space, has none). For every cell below
``--profile-below``, a last section says where the time goes: the kernels of softfam's program
and of the baseline's, each with the XLA operation it computes and its CPU time per call, read
from a ``jax.profiler`` trace.

Command: ``python -m experiments benchmark normalizers`` (about 9 minutes on 2 CPU cores);
writes ``results/benchmarks/normalizers.md``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import softfam
from experiments.io import write_text_atomically

SHAPES = ((4096, 10), (4096, 1000), (256, 100_000))
DEFAULT_OUTPUT = Path("results/benchmarks/normalizers.md")

NORMALIZERS = {
    "softmax": softfam.softmax,
    "taylor_softmax (order 2)": softfam.taylor_softmax,
    "taylor_softmax (order 4)": functools.partial(softfam.taylor_softmax, order=4),
    "spherical_softmax": softfam.spherical_softmax,
}
LOG_NORMALIZERS = {
    "log_softmax": softfam.log_softmax,
    "log_taylor_softmax (order 2)": softfam.log_taylor_softmax,
    "log_taylor_softmax (order 4)": functools.partial(softfam.log_taylor_softmax, order=4),
    "log_spherical_softmax": softfam.log_spherical_softmax,
}
INTEGER_LABEL_LOSSES = {
    "softmax_cross_entropy_with_integer_labels": softfam.softmax_cross_entropy_with_integer_labels,
    "soft_margin_softmax_cross_entropy_with_integer_labels (margin 0.6)": functools.partial(
        softfam.soft_margin_softmax_cross_entropy_with_integer_labels, margin=0.6),
    "taylor_softmax_cross_entropy_with_integer_labels (order 2)":
        softfam.taylor_softmax_cross_entropy_with_integer_labels,
    "taylor_softmax_cross_entropy_with_integer_labels (order 4)": functools.partial(
        softfam.taylor_softmax_cross_entropy_with_integer_labels, order=4),
    "soft_margin_taylor_softmax_cross_entropy_with_integer_labels (order 2, margin 0.6)":
        functools.partial(softfam.soft_margin_taylor_softmax_cross_entropy_with_integer_labels,
                          margin=0.6),
    "spherical_softmax_cross_entropy_with_integer_labels":
        softfam.spherical_softmax_cross_entropy_with_integer_labels,
    "squared_error_with_integer_labels": softfam.squared_error_with_integer_labels,
    "z_loss_with_integer_labels": softfam.z_loss_with_integer_labels,
    "softmax_cross_entropy_upper_bound_with_integer_labels":
        softfam.softmax_cross_entropy_upper_bound_with_integer_labels,
}
PROBABILITY_LABEL_LOSSES = {
    "softmax_cross_entropy": softfam.softmax_cross_entropy,
    "taylor_softmax_cross_entropy (order 2)": softfam.taylor_softmax_cross_entropy,
    "spherical_softmax_cross_entropy": softfam.spherical_softmax_cross_entropy,
}
# (section, baseline name, baseline, candidates, kind of call)
SECTIONS = (
    ("Normalizers", "jax.nn.softmax", jax.nn.softmax, NORMALIZERS, "forward"),
    ("Log twins", "jax.nn.log_softmax", jax.nn.log_softmax, LOG_NORMALIZERS, "forward"),
    ("Integer-label losses, value_and_grad", "optax.losses.softmax_cross_entropy_with_integer_labels",
     optax.losses.softmax_cross_entropy_with_integer_labels, INTEGER_LABEL_LOSSES, "integer"),
    ("Probability-label losses, value_and_grad", "optax.losses.softmax_cross_entropy",
     optax.losses.softmax_cross_entropy, PROBABILITY_LABEL_LOSSES, "probability"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the Markdown table to write")
    parser.add_argument("--pairs", type=int, default=30, help="interleaved baseline/candidate pairs")
    parser.add_argument("--min-time", type=float, default=0.02, help="seconds per timing, at least")
    parser.add_argument("--profile-below", type=float, default=0.9,
                        help="profile the kernels of every cell whose median ratio is below this")
    parser.add_argument(
        "--shapes", type=str, default=",".join(f"{b}x{d}" for b, d in SHAPES),
        help="comma-separated BATCHxCLASSES shapes",
    )


def compiled(fn, kind: str):
    """The jitted call timed for ``fn``: the function itself, or the ``value_and_grad`` of its
    mean loss for the logits."""
    if kind == "forward":
        return jax.jit(fn)
    return jax.jit(jax.value_and_grad(lambda x, y: jnp.mean(fn(x, y))))


def seconds_per_call(fn, args, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


def calls_lasting(fn, args, min_time: float) -> int:
    """Compiles ``fn`` and returns how many back-to-back calls last at least ``min_time``."""
    jax.block_until_ready(fn(*args))
    calls = 1
    while seconds_per_call(fn, args, calls) * calls < min_time:
        calls *= 2
    return calls


def interleaved(baseline, candidate, args, pairs: int, min_time: float) -> dict:
    """Median and quartiles of baseline time / candidate time over A B A B ... pairs."""
    calls = max(calls_lasting(baseline, args, min_time), calls_lasting(candidate, args, min_time))
    ratios, times = [], []
    for _ in range(pairs):
        base = seconds_per_call(baseline, args, calls)
        cand = seconds_per_call(candidate, args, calls)
        ratios.append(base / cand)
        times.append(cand)
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return {"median": median, "q1": q1, "q3": q3, "ms": 1e3 * float(np.median(times))}


def inputs(shape, kind):
    key_x, key_y = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, shape, jnp.float32)
    labels = jax.random.randint(key_y, shape[:1], 0, shape[1])
    if kind == "forward":
        return (x,)
    return (x, labels if kind == "integer" else jax.nn.one_hot(labels, shape[1], dtype=x.dtype))


ABLATION = "Cost of the overflow check"


def first_branch(predicate, on_true, on_false, *operands):
    """``lax.cond`` without the check: always its first branch (wrong for huge logits)."""
    return on_true(*operands)


def measure(shapes, pairs, min_time, log=print):
    rows = []  # (section, name, shape, result)
    for shape in shapes:
        for section, base_name, baseline, candidates, kind in SECTIONS:
            args = inputs(shape, kind)
            base = compiled(baseline, kind)
            for name, fn in candidates.items():
                result = interleaved(base, compiled(fn, kind), args, pairs, min_time)
                rows.append((section, name, shape, result))
                with mock.patch.object(lax, "cond", first_branch):
                    unchecked = compiled(fn, kind)
                    jax.block_until_ready(unchecked(*args))  # traced with the patch
                cost = interleaved(unchecked, compiled(fn, kind), args, pairs, min_time)
                rows.append((ABLATION, name, shape, cost))
                log(f"{shape} {name}: {result['median']:.2f} of {base_name}, "
                    f"{cost['median']:.2f} of itself without the overflow check")
    return rows


def kernel_operations(fn, args) -> dict[str, str]:
    """The operation each kernel (fusion, custom call, conditional or dot) of ``fn``'s compiled
    program computes, by its name: its root's ``op_name`` without the ``jit(...)`` prefixes, or
    the HLO instruction where it has none; "YNNPACK" marks the fusions XLA:CPU hands to that
    library."""
    text = fn.lower(*args).compile().as_text()
    operations = {}
    pattern = r"%([\w.\-]+) = [^\n]*? (fusion|custom-call|conditional|dot)\(([^\n]*)"
    for name, instruction, rest in re.findall(pattern, text):
        op_name = re.search(r'op_name="(?:jit\([^)]*\)/)*([^"]*)"', rest)
        operations[name] = ((op_name[1] if op_name else instruction)
                            + (", YNNPACK" if "__ynn_fusion" in rest else ""))
    return operations


def kernel_profile(fn, args, calls: int = 10, top: int = 4) -> tuple[float, list[tuple[str, float]]]:
    """CPU time per call of ``fn`` and its ``top`` kernels by own time (µs per call, summed over
    threads, nested events' time taken out of their parent's), from a ``jax.profiler`` trace
    of ``calls`` calls. Time spent waiting for the worker threads is not counted."""
    jax.block_until_ready(fn(*args))
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory):
            for _ in range(calls):
                jax.block_until_ready(fn(*args))
        trace = jax.profiler.ProfileData.from_file(str(next(Path(directory).rglob("*.xplane.pb"))))
    own = Counter()
    for plane in trace.planes:
        for line in plane.lines:
            if line.name == "python":
                continue
            events = sorted(line.events, key=lambda e: (e.start_ns, -e.duration_ns))
            open_events = []  # (end, name) of the events that enclose the current one
            for event in events:
                if "wait" in event.name.lower() or event.duration_ns == 0 or event.name.startswith("end: "):
                    continue  # waiting for other threads, or a marker
                while open_events and open_events[-1][0] <= event.start_ns:
                    open_events.pop()
                if open_events:
                    own[open_events[-1][1]] -= event.duration_ns
                own[event.name] += event.duration_ns
                open_events.append((event.end_ns, event.name))
    total = sum(own.values()) / calls / 1e3
    return total, [(name, ns / calls / 1e3) for name, ns in own.most_common(top)]


def profile_text(name: str, fn, args) -> str:
    """``name``: its CPU time per call and its heaviest kernels, each with its operation."""
    operations = kernel_operations(fn, args)
    total, kernels = kernel_profile(fn, args)
    shown = "; ".join(f"`{kernel}` ({operations.get(kernel, 'runtime')}) {us:,.0f}" for kernel, us in kernels)
    return f"{name} {total:,.0f} µs: {shown}"


def profiles(rows, below: float) -> list[tuple[str, str, tuple, str, str]]:
    """For each cell whose median ratio is below ``below``: (section, name, shape, softfam's
    profile, the baseline's profile)."""
    found = []
    sections = {section: (base_name, baseline, candidates, kind)
                for section, base_name, baseline, candidates, kind in SECTIONS}
    for section, name, shape, result in rows:
        if section not in sections or result["median"] >= below:
            continue
        base_name, baseline, candidates, kind = sections[section]
        args = inputs(shape, kind)
        found.append((section, name, shape,
                      profile_text("softfam", compiled(candidates[name], kind), args),
                      profile_text(base_name, compiled(baseline, kind), args)))
    return found


def header(title: str, command: str) -> list[str]:
    """A generated table's first lines: its title, the command and the machine."""
    return [
        f"# {title}",
        "",
        f"Generated by `{command}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; devices {jax.devices()}; "
        f"Python {platform.python_version()}, jax {jax.__version__}, optax {optax.__version__}, "
        f"numpy {np.__version__}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '(default)')}. float32, jitted.",
        "",
    ]


def render(rows, command: str, pairs: int, profiled=(), below: float = 0.9) -> str:
    shapes = sorted({shape for _, _, shape, _ in rows}, key=lambda s: (s[1], s[0]))
    baselines = {section: base for section, base, *_ in SECTIONS}
    lines = header("Normalizer and loss benchmark", command) + [
        f"Each cell: the median over {pairs} interleaved pairs of the baseline's time over the "
        "function's time (>= 1: softfam is no slower), [first quartile, third quartile], and "
        f"the function's median time per call. In \"{ABLATION}\" the baseline is the function "
        "itself with its overflow check taken out (its `lax.cond` replaced by the first branch, "
        "which is wrong for overflowing scores): a ratio r means the check costs 1 - r of the "
        "function's time.",
        "",
    ]
    for section in dict.fromkeys(section for section, *_ in rows):
        baseline = baselines.get(section, "the same function without the overflow check")
        lines += [f"## {section}", "", f"Baseline: `{baseline}`.", "",
                  "| function | " + " | ".join(f"{b}x{d}" for b, d in shapes) + " |",
                  "|---" * (len(shapes) + 1) + "|"]
        for name in dict.fromkeys(name for s, name, *_ in rows if s == section):
            cells = []
            for shape in shapes:
                r = next(r for s, n, sh, r in rows if (s, n, sh) == (section, name, shape))
                cells.append(f"{r['median']:.2f} [{r['q1']:.2f}, {r['q3']:.2f}], {r['ms']:.3f} ms")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if profiled:
        lines += ["## Where the time goes", "",
                  f"Each cell with a median ratio below {below:g}, profiled after the timings: the "
                  "CPU time of one call (summed over threads, waiting not counted) and its four "
                  "heaviest kernels in µs per call, each with the XLA operation it computes "
                  "(YNNPACK: a fusion XLA:CPU hands to that library; runtime: the executor's own "
                  "work between kernels), for softfam's program and then the baseline's.", ""]
        for section, name, (b, d), ours, theirs in profiled:
            lines += [f"- {section}, {name}, {b}x{d}:", f"  - {ours}", f"  - {theirs}"]
        lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    rows = measure(shapes, args.pairs, args.min_time,
                   log=lambda m: print(m, file=sys.stderr, flush=True))
    profiled = profiles(rows, args.profile_below)
    write_text_atomically(args.output, render(rows, args.command_line, args.pairs, profiled,
                                              args.profile_below) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
