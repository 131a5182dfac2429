"""Choosing a loss's hyperparameters on the validation split: grid widening or random search.

A point is a learning rate and a value of every other hyperparameter the loss takes (its
search space, ``Config.space``). Each point is trained on every tuning seed; a point that
diverged on any of them is out; of the rest, the one with the lowest mean over the tuning
seeds of the loss's stopping metric (validation NLL, or error where the loss has no
meaningful distribution) is chosen, the first on ties. The test set plays no part.

- Grid (``search_grid``): every combination of the starting values is tried; while the chosen
  point sits at an end of the values tried along some axis (that coordinate varied, the
  others fixed), the point one step past that end is tried too (the step is the ratio of the
  two end values, 3 for a single value), unless it lies outside the bounds; then the choice
  is made again.
- Random (``random_points``): ``trials`` points of a scrambled Halton sequence (seed 0) over
  the hyperparameters given several values, each drawn from the range its values span, on a
  log or linear scale as declared; a hyperparameter with one value is fixed. Every loss gets the same number of
  trials. A chosen value within 10 % of its range's end (in log space for a log range) is
  marked "near edge" (``near_edge``).

Pure Python and NumPy, no JAX: the tables use it to mark the choices.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Optional

import numpy as np
from scipy.stats import qmc

from experiments.records import point_name

NEAR_EDGE = 0.1  # share of a range's width, at either end, that counts as near its edge


def same(a: float, b: float) -> bool:
    """Whether two values of a coordinate name the same setting (``point_name``'s 6 digits):
    a learning rate stepped down to 0.009 / 3 = 0.0030000000000000005 is the grid's 0.003."""
    return f"{a:g}" == f"{b:g}"


def grid_points(space: dict[str, dict]) -> list[dict[str, float]]:
    """Every combination of the starting values of ``space``."""
    values = {name: axis["values"] for name, axis in space.items()}
    return [dict(zip(values, combination)) for combination in itertools.product(*values.values())]


def span(axis: dict) -> tuple[float, float]:
    """The range a random search draws an axis from: its values' least to their greatest."""
    return min(axis["values"]), max(axis["values"])


def random_points(space: dict[str, dict], trials: int) -> list[dict[str, float]]:
    """``trials`` quasi-random points: each hyperparameter with several values drawn from
    their span on its scale, each other one fixed at its value."""
    ranged = [name for name, axis in space.items() if len(axis["values"]) > 1]
    unit = (qmc.Halton(len(ranged), scramble=True, seed=0).random(trials) if ranged
            else np.zeros((1, 0)))
    points = []
    for row in unit:
        point = {name: axis["values"][0] for name, axis in space.items()}
        for name, u in zip(ranged, row):
            low, high = span(space[name])
            point[name] = (float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
                           if space[name]["log"] else float(low + u * (high - low)))
        points.append(point)
    return points


def near_edge(value: float, axis: dict) -> bool:
    """Whether ``value`` lies within 10 % of its range's width of either end."""
    low, high = span(axis)
    scale = math.log if axis["log"] else (lambda v: v)
    position = (scale(value) - scale(low)) / (scale(high) - scale(low))
    return position < NEAR_EDGE or position > 1 - NEAR_EDGE


def line(points: list[dict], chosen: dict, axis: str) -> list[float]:
    """The values of ``axis`` tried with every other coordinate at its chosen value, sorted,
    one per setting."""
    values = {f"{p[axis]:g}": p[axis] for p in points
              if all(same(p[k], v) for k, v in chosen.items() if k != axis)}
    return sorted(values.values())


def within(value: float, bounds) -> bool:
    """Whether ``value`` lies in the (low, high) ``bounds``, up to rounding (1e-9 relative): a
    step computed as 0.15 / 3 = 0.04999... is at a bound of 0.05, not beyond it."""
    low, high = bounds
    return low * (1 - 1e-9) <= value <= high * (1 + 1e-9)


def beyond_edge(values: list[float], value: float, bounds) -> Optional[tuple[float, bool]]:
    """``(next value, whether it is within bounds)`` one step past the end of the sorted
    ``values`` that ``value`` sits at, or None when it is interior. The step is the ratio of
    the two values at that end (3 for a single value, which sits at both ends: the upper one
    first, the lower one once the upper is out of bounds)."""
    if not same(value, values[0]) and not same(value, values[-1]):
        return None
    if same(value, values[-1]):
        upper = value * (values[-1] / values[-2] if len(values) > 1 else 3.0)
        if within(upper, bounds) or len(values) > 1:
            return upper, within(upper, bounds)
    if values[0] == 0:  # no step leads below 0
        return None
    lower = value / (values[1] / values[0] if len(values) > 1 else 3.0)
    return lower, within(lower, bounds)


def widened(space: dict[str, dict]) -> list[str]:
    """The axes a grid search widens: those it varies or may vary (not a single value of 0)."""
    return [name for name, axis in space.items() if axis["values"] != [0.0]]


def widening(points: list[dict], chosen: dict, space: dict[str, dict]) -> list[dict]:
    """The points one step past each end of the grid that ``chosen`` sits at, within bounds."""
    new = []
    for axis in widened(space):
        edge = beyond_edge(line(points, chosen, axis), chosen[axis], space[axis]["bounds"])
        if edge is not None and edge[1]:
            new.append({**chosen, axis: edge[0]})
    return new


def choose(tuned: list[tuple[dict, list[dict]]], metric: Callable[[dict], float]) -> dict:
    """The point of ``tuned`` (each with its tuning seeds' model records) with the lowest mean
    best-validation ``metric``; a point that diverged on any seed is never chosen; first wins
    ties."""
    def score(item):
        _, models = item
        if any(m["diverged"] for m in models):
            return (True, math.inf)
        return (False, float(np.mean([metric(m["best"]) for m in models])))

    point, models = min(tuned, key=score)
    if score((point, models))[0]:
        raise RuntimeError("every point diverged on some tuning seed")
    return point


def search_grid(space: dict[str, dict], tune: Callable[[dict], list[dict]],
                metric: Callable[[dict], float]) -> dict:
    """Tunes the grid of ``space`` (``tune(point)``: the tuning seeds' model records), chooses
    by ``metric``, and widens past the ends the choice sits at until it is interior or
    bounded; returns the chosen point."""
    tuned: dict[str, tuple[dict, list[dict]]] = {}
    points = grid_points(space)
    while points:
        tuned.update({point_name(point): (point, tune(point)) for point in points})
        chosen = choose(list(tuned.values()), metric)
        tried = [point for point, _ in tuned.values()]
        points = [p for p in widening(tried, chosen, space) if point_name(p) not in tuned]
    return chosen


def search_random(space: dict[str, dict], trials: int, tune: Callable[[dict], list[dict]],
                  metric: Callable[[dict], float]) -> dict:
    """Tunes ``trials`` random points of ``space`` and returns the chosen one."""
    return choose([(point, tune(point)) for point in random_points(space, trials)], metric)
