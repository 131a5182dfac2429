"""The linear losses on 8 host CPU devices, a 2 x 4 mesh (examples over ``data``, classes
over ``model``), under GSPMD and under ``shard_map``, against the single-device call.

The devices exist only in a process started with XLA_FLAGS set before JAX starts
(tests/sharding_worker.py, run once for this module); the assertions are here."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import sharding_worker

ROOT = Path(__file__).resolve().parents[1]
WAYS = ("gspmd", "shard_map", "gspmd-auto", "shard_map-auto")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    output = tmp_path_factory.mktemp("sharding") / "report.json"
    environment = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
                       JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-m", "tests.sharding_worker", str(output)], cwd=ROOT,
                   env=environment, check=True, timeout=900)
    return json.loads(output.read_text())


def test_the_worker_ran_on_eight_devices(report):
    assert report["devices"] == 8


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("name", sharding_worker.LOSSES)
def test_values_and_gradients_equal_the_single_device_call(report, name, way):
    errors = report["losses"][name][way]["errors"]
    assert set(errors) == {"values", "hidden", "weights", "bias"}
    assert max(errors.values()) < 1e-10, errors


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("name", sharding_worker.LOSSES)
def test_no_device_gathers_the_kernel_and_its_gradient_is_sharded_like_it(report, name, way):
    result = report["losses"][name][way]
    assert result["collectives"]["all-gather"] == []
    assert result["collectives"]["all-to-all"] == []
    assert result["weights_grad_spec"] == result["weights_spec"] == "P(None, 'model')"
    d, v = sharding_worker.HIDDEN, sharding_worker.CLASSES
    assert result["weights_grad_shard_shape"] == [d, v // 4] and result["devices"] == 8


def elements(shapes: str) -> int:
    """The number of elements of an HLO result shape such as ``(f64[4]{0}, f64[4,6]{1,0})``."""
    total = 0
    for dims in re.findall(r"[a-z0-9]+\[([0-9,]*)\]", shapes):
        size = 1
        for dim in filter(None, dims.split(",")):
            size *= int(dim)
        total += size
    return total


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("name", sharding_worker.LOSSES)
def test_the_devices_exchange_what_the_docstring_states(report, name, way):
    """softfam._linear's notes: per device, at most 3 n numbers forward (n more with label
    smoothing, n more with class_where; the spherical softmax and the squared error do not use
    s), n d for hidden's gradient, (d + 1) v for the kernel's and the bias's, and the scalar
    loss this test sums; a scalar or two besides (class counts)."""
    n, d, v = sharding_worker.EXAMPLES // 2, sharding_worker.HIDDEN, sharding_worker.CLASSES // 4
    _, keywords = sharding_worker.LOSSES[name]
    forward = 3 * n + n * ("label_smoothing" in keywords) + n * ("class_where" in keywords)
    stated = forward + n * d + (d + 1) * v + 1
    exchanged = sum(elements(s) for s in report["losses"][name][way]["collectives"]["all-reduce"])
    assert forward - n + n * d + (d + 1) * v <= exchanged <= stated + 2


def test_the_tied_embedding_train_step_learns_keeps_its_sharding_and_its_padding(report):
    """sharding_worker.train_step_example, the docs' example: a 1000-word vocabulary padded to
    1024, soft-capped, log Z penalized, adam on a 2 x 4 mesh."""
    result = report["train_step"]
    losses = result["losses"]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert result["embedding_spec"] == "P('model', None)"
    assert result["padding_moved"] == 0 < result["vocabulary_moved"]
    assert result["all_gathers"] == []


def test_classes_sharded_over_a_tuple_of_mesh_axes(report):
    """On a 2 x 2 x 2 mesh, the classes over ("m1", "m2"): the device's place along both
    axes gives its first class."""
    errors = report["two_axes"]
    assert set(errors) == {f"{name}-{way}" for name in ("softmax", "spherical") for way in ("gspmd", "shard_map")}
    assert max(errors.values()) < 1e-10, errors


def test_a_forgotten_axis_name_inside_shard_map_is_refused(report):
    assert "weights vary over the shard_map axes ('model',)" in report["forgotten_axis_name"]
    assert "pass them as axis_name" in report["forgotten_axis_name"]
