"""Time one jitted optimizer step of an MLP with each loss against optax's softmax cross-entropy.

What a user feels: the loss inside a training step, not alone. The model is an MLP
(``--inputs`` -> ``--hidden`` -> ``--hidden`` -> classes, ReLU, He initialization) trained by
``optax.adam``; one step is the ``value_and_grad`` of the batch's mean loss and the update,
jitted, with the parameters and optimizer state donated and returned as a training loop does.
For each number of classes (``--classes``, default 10 and 10,000) each softfam loss is timed in
triples, interleaved: the step with a loss-free stand-in (``mean(logits * c)`` for a fixed
``c``: the same matmuls forward and backward, a loss of one multiply), the step with optax's
softmax cross-entropy (integer labels, or one-hot labels for the probability-label losses), and
the step with the softfam loss. A cell gives the median over the triples of optax's step time
over softfam's (>= 1: softfam's step is no slower), its quartiles, softfam's median step time,
and the loss's share of the step, ``1 - stand-in time / step time`` (median), for softfam's
loss and for optax's.

Command: ``python -m experiments benchmark step`` (about 5 minutes on 2 CPU cores); writes
``results/benchmarks/step.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.benchmark_normalizers import (
    INTEGER_LABEL_LOSSES,
    PROBABILITY_LABEL_LOSSES,
    calls_lasting,
    header,
    seconds_per_call,
)
from experiments.io import write_text_atomically

DEFAULT_OUTPUT = Path("results/benchmarks/step.md")
BASELINES = {
    "integer": ("optax.losses.softmax_cross_entropy_with_integer_labels",
                optax.losses.softmax_cross_entropy_with_integer_labels),
    "probability": ("optax.losses.softmax_cross_entropy", optax.losses.softmax_cross_entropy),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="the Markdown table to write")
    parser.add_argument("--classes", type=str, default="10,10000",
                        help="comma-separated class counts")
    parser.add_argument("--batch", type=int, default=128, help="examples per step")
    parser.add_argument("--inputs", type=int, default=784, help="input features")
    parser.add_argument("--hidden", type=int, default=512, help="width of the two hidden layers")
    parser.add_argument("--triples", type=int, default=15, help="interleaved triples per loss")
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per timing, at least")


def init_mlp(key, sizes):
    """He-initialized ``(weights, bias)`` per layer."""
    params = []
    for key, (fan_in, fan_out) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes, sizes[1:])):
        weights = jax.random.normal(key, (fan_in, fan_out), jnp.float32) * np.sqrt(2 / fan_in)
        params.append((weights, jnp.zeros((1, fan_out), jnp.float32)))
    return params


def mlp(params, x):
    for weights, bias in params[:-1]:
        x = jax.nn.relu(x @ weights + bias)
    weights, bias = params[-1]
    return x @ weights + bias


def make_step(loss_fn, optimizer):
    """One jitted training step ``(params, opt_state, x, y) -> (params, opt_state, loss)``."""

    def mean_loss(params, x, y):
        return jnp.mean(loss_fn(mlp(params, x), y))

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(mean_loss)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


class _Timed:
    """A step run as a training loop runs it: each call continues from the last state."""

    def __init__(self, step, params, opt_state, x, y):
        self.step, self.state, self.batch = step, (params, opt_state), (x, y)

    def __call__(self):
        params, opt_state, loss = self.step(*self.state, *self.batch)
        self.state = (params, opt_state)
        return loss


def stand_in_loss(num_classes):
    """``mean(logits * c)`` per example: the model's own work, and a loss of one multiply."""
    c = jax.random.normal(jax.random.key(1), (1, num_classes), jnp.float32) / num_classes

    def loss(logits, _):
        return jnp.sum(logits * c, -1)

    return loss


def measure(class_counts, batch, inputs, hidden, triples, min_time, log=print):
    rows = []  # (name, num_classes, result)
    optimizer = optax.adam(1e-3)
    key_x, key_y, key_p = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key_x, (batch, inputs), jnp.float32)
    for num_classes in class_counts:
        params = init_mlp(key_p, (inputs, hidden, hidden, num_classes))
        labels = jax.random.randint(key_y, (batch,), 0, num_classes)
        targets = {"integer": labels, "probability": jax.nn.one_hot(labels, num_classes)}

        def timed(loss_fn, kind):
            # Fresh copies: the benchmark never feeds one step's output to another's input.
            copied = jax.tree.map(jnp.array, params)
            return _Timed(make_step(loss_fn, optimizer), copied, optimizer.init(copied), x,
                          targets[kind])

        for kind, losses in (("integer", INTEGER_LABEL_LOSSES),
                             ("probability", PROBABILITY_LABEL_LOSSES)):
            base_name, baseline = BASELINES[kind]
            for name, loss_fn in losses.items():
                steps = [timed(stand_in_loss(num_classes), kind), timed(baseline, kind),
                         timed(loss_fn, kind)]
                calls = max(calls_lasting(s, (), min_time) for s in steps)
                times = np.array([[seconds_per_call(s, (), calls) for s in steps]
                                  for _ in range(triples)])
                stand_in, base, cand = times.T
                ratios = base / cand
                q1, median, q3 = np.percentile(ratios, [25, 50, 75])
                result = {"median": median, "q1": q1, "q3": q3, "ms": 1e3 * np.median(cand),
                          "share": np.median(1 - stand_in / cand),
                          "base_share": np.median(1 - stand_in / base), "baseline": base_name}
                rows.append((name, num_classes, result))
                log(f"{num_classes} classes, {name}: {median:.2f} of {base_name}; loss "
                    f"{100 * result['share']:.0f} % of the step "
                    f"(optax's {100 * result['base_share']:.0f} %)")
    return rows


def render(rows, command: str, triples: int, batch: int, inputs: int, hidden: int) -> str:
    class_counts = sorted({n for _, n, _ in rows})
    lines = header("Training-step benchmark", command) + [
        f"One `optax.adam` step of an MLP {inputs} -> {hidden} -> {hidden} -> classes (ReLU), "
        f"batch {batch}. Each cell: the median over {triples} interleaved triples of the optax "
        "baseline's step time over the step time with the softfam loss (>= 1: no slower), "
        "[first quartile, third quartile], softfam's median step time, and the loss's share of "
        "the step (1 - the time of the step with a one-multiply stand-in loss / the step's "
        "time), softfam's and, after the slash, optax's.",
        "",
    ]
    for title, baseline in (("Integer-label losses", BASELINES["integer"][0]),
                            ("Probability-label losses", BASELINES["probability"][0])):
        names = [n for n, _, r in rows if r["baseline"] == baseline]
        lines += [f"## {title}", "", f"Baseline: `{baseline}`.", "",
                  "| loss | " + " | ".join(f"{n} classes" for n in class_counts) + " |",
                  "|---" * (len(class_counts) + 1) + "|"]
        for name in dict.fromkeys(names):
            cells = []
            for n in class_counts:
                r = next(r for m, c, r in rows if (m, c) == (name, n))
                cells.append(f"{r['median']:.2f} [{r['q1']:.2f}, {r['q3']:.2f}], {r['ms']:.2f} ms, "
                             f"share {100 * r['share']:.0f} % / {100 * r['base_share']:.0f} %")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    class_counts = [int(n) for n in args.classes.split(",")]
    rows = measure(class_counts, args.batch, args.inputs, args.hidden, args.triples, args.min_time,
                   log=lambda m: print(m, file=sys.stderr, flush=True))
    command = getattr(args, "command_line", "python -m experiments benchmark step")
    write_text_atomically(args.output, render(rows, command, args.triples, args.batch, args.inputs,
                                              args.hidden) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
