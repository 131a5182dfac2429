"""What the data sources share: the ``Dataset`` and ``Split`` types, ``DataError``, where
files are looked for (``search_dirs``), SHA-256 verification (``check_sha256``) and the fixed
permutation that carves a split (``carve``). It imports nothing else of ``experiments``."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

SYSTEM_DATA_DIR = Path("/usr/share/datasets")

# The seed of the fixed permutation that carves the validation split (and the digits test
# split). It is a constant on purpose: every run, whatever its seed, sees the same splits.
_SPLIT_SEED = 0
VALIDATION_FRACTION = 0.1  # share of the training examples carved off when a source has none


class DataError(Exception):
    """A data set is unknown, missing or corrupt; the message says what to do."""


@dataclass(frozen=True)
class Split:
    """Inputs and their int32 class labels (N,). ``images`` is float32 (N, H, W, C) in [0, 1]
    for the image data sets, float32 (N, ...) for the teacher task and npz files, and int32
    token ids (N, context) for the language models."""

    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Dataset:
    """A data set's train, validation and test splits, and the test split's Bayes error (the
    error of the best possible classifier) where it is known, as for the synthetic teachers."""

    name: str
    train: Split
    valid: Split
    test: Split
    num_classes: int
    bayes_error: Optional[float] = None


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched for the files of data set ``name``, in lookup order: the
    ``data_dir`` argument (``--data-dir``), then ``$SOFTFAM_DATA``, each of them itself and its
    subdirectory named after the data set (``~/data/mnist/...`` works with ``--data-dir
    ~/data``), then ``/usr/share/datasets/<name>``, where Debian's ``dataset-fashion-mnist``
    package installs Fashion-MNIST. Each file is taken from the first directory that has it."""
    dirs = []
    for root in (data_dir, os.environ.get("SOFTFAM_DATA")):
        if root:
            root = Path(root).expanduser()
            dirs += [root, root / name]
    dirs.append(SYSTEM_DATA_DIR / name)
    return dirs


def not_found(name: str, what: str, dirs: list[Path], hint: str) -> DataError:
    """The error for ``what`` of data set ``name`` missing from every one of ``dirs``."""
    looked = "\n".join(f"  {d}" for d in dirs)
    return DataError(f"{name}: {what} not found. Looked in:\n{looked}\n{hint}")


def check_sha256(path: Path, content: bytes, expected: str, what: str) -> None:
    """Raises ``DataError`` unless the SHA-256 of ``content`` (``what`` of the file ``path``)
    is ``expected``."""
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise DataError(f"{path}: SHA-256 of {what} is {actual}, expected {expected}. "
                        "The file is corrupt or not the official one; fetch it again.")


def carve(split: Split, n: int) -> tuple[Split, Split]:
    """Splits off ``n`` examples chosen by a fixed permutation; both parts keep file order."""
    perm = np.random.default_rng(_SPLIT_SEED).permutation(len(split.labels))
    rest, taken = np.sort(perm[n:]), np.sort(perm[:n])
    return (Split(split.images[rest], split.labels[rest]),
            Split(split.images[taken], split.labels[taken]))
