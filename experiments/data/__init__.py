"""The experiments' data sets, loaded by name into NumPy arrays: ``load(name, data_dir)``.

One module per source, each registered in ``LOADERS`` by data set name or name prefix:

- ``images``: image classification, ``digits``, ``fashion-mnist``, ``mnist``, ``cifar10`` and
  ``cifar100``;
- ``text``: word-level language modelling, ``wordnet-<K>``, ``wordnet-full`` and ``ptb``;
- ``synthetic``: the teacher task with D classes, ``teacher-<D>``, ``softmax-teacher-<D>``
  and ``taylor-teacher-<D>``;
- ``npz``: the user's own arrays, ``npz:PATH``.

Files are looked for in ``search_dirs(name, data_dir)`` and checked against their SHA-256
before they are parsed; nothing is cached. ``common`` holds what the sources share
(``Dataset``, ``Split``, ``DataError``, ``search_dirs``, ``check_sha256``, ``carve``); each
source module imports ``common`` only.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from experiments.data import images, npz, synthetic, text
from experiments.data.common import VALIDATION_FRACTION, DataError, Dataset, Split, search_dirs

__all__ = ["LOADERS", "DataError", "Dataset", "Split", "load", "search_dirs"]

Loader = Callable[[str, str | os.PathLike | None, float], Dataset]

# Loaders by data set name or name prefix; a name goes to the first key it starts with, and the
# loader checks the rest of the name. Each is called with (name, data_dir,
# validation_fraction); text and synthetic data sets come with their own validation splits.
LOADERS: dict[str, Loader] = {
    **dict.fromkeys(images.DATASETS, images.load),
    "wordnet-": lambda name, data_dir, validation_fraction: text.load(name, data_dir),
    "ptb": lambda name, data_dir, validation_fraction: text.load(name, data_dir),
    **dict.fromkeys((f"{kind}-" for kind in synthetic.KINDS),
                    lambda name, data_dir, validation_fraction: synthetic.load(name)),
    "npz:": lambda name, data_dir, validation_fraction: npz.load(name, validation_fraction),
}


def load(name: str, data_dir: str | os.PathLike | None = None, *,
         validation_fraction: float = VALIDATION_FRACTION) -> Dataset:
    """Loads data set ``name``. Image data sets, and npz files without a validation split,
    have ``round(validation_fraction * N_train)`` training examples carved into a validation
    split with a fixed permutation; the test split is untouched. Language-modelling
    (``text.load``) and synthetic (``synthetic.load``) data sets come with their own splits.

    Raises:
      DataError: the name is unknown, or a file is missing or corrupt.
    """
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    loader = next((loader for key, loader in LOADERS.items() if name.startswith(key)), None)
    if loader is None:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(images.DATASETS)}, "
                        "wordnet-<K>, wordnet-full, ptb, [softmax-|taylor-]teacher-<D> or npz:PATH")
    return loader(name, data_dir, validation_fraction)
