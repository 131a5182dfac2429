"""The user's own data: ``npz:PATH``, a NumPy ``.npz`` archive of features and class labels.

Format: the arrays ``np.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...)``
writes, and optionally ``x_valid`` and ``y_valid``; no other arrays.

- ``x_train``, ``x_test`` (and ``x_valid``): features (N, ...) of a real numeric dtype
  (integers or floats; not bool, complex or object), with one feature shape in every split,
  converted to float32 as they are, not rescaled (scale pixel values to [0, 1] yourself).
  Every value must be finite in float32. The MLP flattens each example, so any feature shape
  works; images (N, H, W, C) also work with the CNN.
- ``y_train``, ``y_test`` (and ``y_valid``): class indices (N,) of an integer dtype,
  converted to int32, at least 0. ``num_classes`` is the largest label of all splits plus 1.
- Every split has at least one example, as many labels as feature rows.
- ``x_valid`` and ``y_valid`` come both or neither. Without them the validation split is
  carved from the training set as for the image data sets (``carve``): the
  ``round(validation_fraction * N_train)`` training examples (10 % by default) that come first
  in a fixed permutation of seed 0, both parts kept in file order, the same in every run.

The file is read with ``np.load(PATH, allow_pickle=False)``: nothing is unpickled. A file that
breaks the format stops with a ``DataError`` naming the file, the array and what was expected.

Example: ``np.savez("mine.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)``, then
``python -m experiments run digits-mlp --config.dataset=npz:mine.npz``.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from experiments.data.common import VALIDATION_FRACTION, DataError, Dataset, Split, carve

PREFIX = "npz:"
REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("x_valid", "y_valid")
_EXPECTED = "x_train, y_train, x_test, y_test and optionally x_valid, y_valid"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive; the second one empty
_UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def load(name: str, validation_fraction: float = VALIDATION_FRACTION) -> Dataset:
    """The data set in the file ``PATH`` of ``name = "npz:PATH"`` (see the module docstring),
    named ``name``.

    Raises:
      DataError: the file is missing, is not an ``.npz`` archive, or breaks the format.
    """
    if not name.startswith(PREFIX) or name == PREFIX:
        raise DataError(f"{name!r}: expected npz:PATH, the path of an .npz file")
    path = Path(name[len(PREFIX):]).expanduser()
    arrays = _read(path)
    splits = {s: _split(path, arrays, s) for s in ("train", "valid", "test") if f"x_{s}" in arrays}
    shape = splits["train"].images.shape[1:]
    for s, split in splits.items():
        if split.images.shape[1:] != shape:
            raise DataError(f"{path}: x_{s} has feature shape {split.images.shape[1:]}; "
                            f"expected x_train's {shape}")
    num_classes = max(int(split.labels.max()) for split in splits.values()) + 1
    if "valid" not in splits:
        n_valid = round(validation_fraction * len(splits["train"].labels))
        splits["train"], splits["valid"] = carve(splits["train"], n_valid)
    return Dataset(name, splits["train"], splits["valid"], splits["test"], num_classes)


def _read(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` file ``path`` by name, after checking the names."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected an .npz file of {_EXPECTED}")
    try:
        # From an open file, not the path: np.load leaves a file it opened itself open when the
        # zip archive is broken.
        with path.open("rb") as file:
            if file.read(4) not in _ZIP_MAGIC:  # else np.load would try .npy, then pickle
                raise DataError(f"{path}: not an .npz file (a zip archive of .npy arrays, as "
                                f"np.savez writes); expected {_EXPECTED}")
            file.seek(0)
            with np.load(file, allow_pickle=False) as archive:
                return _arrays(path, archive)
    except _UNREADABLE as e:
        raise DataError(f"{path}: not a readable .npz file ({e}); expected an archive of "
                        f"{_EXPECTED}, as np.savez writes") from e


def _arrays(path: Path, archive: np.lib.npyio.NpzFile) -> dict[str, np.ndarray]:
    """The arrays of ``archive`` by name, after checking the names."""
    names = sorted(archive.files)
    for key in REQUIRED:
        if key not in names:
            raise DataError(f"{path}: no array {key}; expected {_EXPECTED} "
                            f"(the file has {', '.join(names) or 'no arrays'})")
    if ("x_valid" in names) != ("y_valid" in names):
        given, other = ("x_valid", "y_valid") if "x_valid" in names else ("y_valid", "x_valid")
        raise DataError(f"{path}: {given} without {other}; expected both or neither "
                        "(without them a validation split is carved from the training set)")
    unexpected = [key for key in names if key not in REQUIRED + OPTIONAL]
    if unexpected:
        raise DataError(f"{path}: unexpected array {', '.join(unexpected)}; "
                        f"expected only {_EXPECTED}")
    arrays = {}
    for key in names:
        try:
            arrays[key] = archive[key]
        except _UNREADABLE as e:
            raise DataError(f"{path}: cannot read array {key} ({e}); expected a numeric "
                            "array") from e
        if not isinstance(arrays[key], np.ndarray):  # a zip member that is not a .npy file
            raise DataError(f"{path}: {key} is not a .npy array; expected a numeric array")
    return arrays


def _split(path: Path, arrays: dict[str, np.ndarray], split: str) -> Split:
    """``x_<split>`` as float32 and ``y_<split>`` as int32, after checking them."""
    x_name, y_name = f"x_{split}", f"y_{split}"
    x, y = arrays[x_name], arrays[y_name]
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{path}: {x_name} has dtype {x.dtype}; expected a real numeric dtype "
                        "(integers or floats)")
    if x.ndim < 2:
        raise DataError(f"{path}: {x_name} has shape {x.shape}; expected (N, features...), "
                        "one row per example")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {y_name} has dtype {y.dtype}; expected integer class indices")
    if y.ndim != 1:
        raise DataError(f"{path}: {y_name} has shape {y.shape}; expected class indices (N,), "
                        "not one-hot rows")
    if len(x) != len(y):
        raise DataError(f"{path}: {x_name} has {len(x)} examples but {y_name} has {len(y)} "
                        "labels; expected one label per example")
    if len(y) == 0:
        raise DataError(f"{path}: {x_name} and {y_name} are empty; expected at least one example")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high > np.iinfo(np.int32).max:
        raise DataError(f"{path}: {y_name} has label {low if low < 0 else high}; expected class "
                        "indices 0, 1, 2, ... that fit in int32")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: see below
        features = x.astype(np.float32)
    non_finite = np.size(features) - np.count_nonzero(np.isfinite(features))
    if non_finite:
        raise DataError(f"{path}: {x_name} has {non_finite} values that are NaN or infinite in "
                        "float32; expected finite features")
    return Split(features, y.astype(np.int32))
