"""Image classification data sets for the experiments, loaded into NumPy arrays.

Data sets (``DATASETS``); images come back as float32 in [0, 1], shape (N, H, W, C):

- ``digits``: the 1,797 8x8 handwritten digits shipped inside scikit-learn (no file needed);
  values 0..16 are divided by 16. It has no official test split, so a fixed 20 % is held out.
- ``fashion-mnist``: Zalando's 70,000 28x28 grey images of clothes, 10 classes.
- ``mnist``: LeCun, Cortes and Burges' 70,000 28x28 handwritten digits, 10 classes.
  Both MNIST-like sets are four IDX files (``train-images-idx3-ubyte`` and so on), each
  gzipped (``.gz``) or not.
- ``cifar10``, ``cifar100``: 60,000 32x32 colour images in 10 or 100 classes (CIFAR-100
  uses its 100 fine labels), read from the *binary* distribution only: the official tarball
  (``cifar-10-binary.tar.gz``, ``cifar-100-binary.tar.gz``, read in memory, never extracted)
  or its extracted directory (``cifar-10-batches-bin/``, ``cifar-100-binary/``). Nothing is
  ever unpickled.

Files are looked for in ``search_dirs(name, data_dir)``: ``--data-dir``, then
``$SOFTFAM_DATA``, then ``/usr/share/datasets/<name>``, where Debian's
``dataset-fashion-mnist`` package installs Fashion-MNIST.

Checksum policy: every file is checked against the SHA-256 in ``SHA256`` before it is
parsed. For Fashion-MNIST the hash is of the decompressed IDX content, because Debian's
``.gz`` files differ byte for byte from upstream's while holding the same data; so a gzipped
or a raw copy from either source passes. For MNIST only the published SHA-256 of the
upstream ``.gz`` files is known, so a ``.gz`` file is checked and an uncompressed copy
gets structural checks only (magic number, sizes, label range). For CIFAR only the tarball
is checksummed; the files of an extracted directory get structural checks only (whole
records, labels in range). The splits are carved with fixed seeds and nothing is cached.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.data.common import (
    VALIDATION_FRACTION,
    DataError,
    Dataset,
    Split,
    carve,
    check_sha256,
    not_found,
    search_dirs,
)

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100")

_DIGITS_TEST_FRACTION = 0.2  # held out by the fixed permutation of ``carve``

# Expected SHA-256 per data set and file name. A name ending in ".gz" is the hash of the
# file's bytes as stored; an IDX name without ".gz" is the hash of the decompressed content.
SHA256: dict[str, dict[str, str]] = {
    # Computed here from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1
    # (/usr/share/datasets/fashion-mnist/*.gz, decompressed with zcat | sha256sum).
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    # Published by tensorflow/datasets, tensorflow_datasets/url_checksums/mnist.txt.
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    # Published by tensorflow/datasets, tensorflow_datasets/url_checksums/cifar10.txt and
    # cifar100.txt (upstream publishes only the MD5s c32a1d4ab5d03f1284b67883e8d87530 and
    # 03b5dce01913d631647c71ecec9e9cb8).
    "cifar10": {
        "cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    },
    "cifar100": {
        "cifar-100-binary.tar.gz": "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
    },
}

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

_HINTS = {
    "fashion-mnist": "Install it with `apt-get install dataset-fashion-mnist` (Debian, Ubuntu), "
                     "or download the four .gz files from "
                     "https://github.com/zalandoresearch/fashion-mnist "
                     "and put them in --data-dir or $SOFTFAM_DATA.",
    "mnist": "Download the four .gz files from https://storage.googleapis.com/cvdf-datasets/mnist/ "
             "(a mirror of http://yann.lecun.com/exdb/mnist/) "
             "and put them in --data-dir or $SOFTFAM_DATA.",
    "cifar10": "Download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz "
               "and put it in --data-dir or $SOFTFAM_DATA.",
    "cifar100": "Download https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz "
                "and put it in --data-dir or $SOFTFAM_DATA.",
}


@dataclass(frozen=True)
class _Cifar:
    tarball: str
    directory: str
    train: tuple[str, ...]
    test: str
    label_bytes: int  # 1 (CIFAR-10: label) or 2 (CIFAR-100: coarse then fine label)
    num_classes: int


_CIFAR = {
    "cifar10": _Cifar("cifar-10-binary.tar.gz", "cifar-10-batches-bin",
                      tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin", 1, 10),
    "cifar100": _Cifar("cifar-100-binary.tar.gz", "cifar-100-binary",
                       ("train.bin",), "test.bin", 2, 100),
}
_CIFAR_PIXELS = 3 * 32 * 32


def load(name: str, data_dir: str | os.PathLike | None = None,
         validation_fraction: float = VALIDATION_FRACTION) -> Dataset:
    """Loads image data set ``name`` (``DATASETS``) and carves
    ``round(validation_fraction * N_train)`` training examples into a validation split with a
    fixed permutation (``carve``); the test split is untouched.

    Raises:
      DataError: the name is unknown, or a file is missing or corrupt.
    """
    if name == "digits":
        train, test, num_classes = _load_digits()
    elif name in ("fashion-mnist", "mnist"):
        train, test, num_classes = _load_idx(name, search_dirs(name, data_dir))
    elif name in _CIFAR:
        train, test, num_classes = _load_cifar(name, search_dirs(name, data_dir))
    else:
        raise DataError(f"unknown image data set {name!r}; choose one of {', '.join(DATASETS)}")
    train, valid = carve(train, round(validation_fraction * len(train.labels)))
    return Dataset(name, train, valid, test, num_classes)


def _split(pixels: np.ndarray, scale: float, labels: np.ndarray) -> Split:
    images = pixels.astype(np.float32)
    images /= np.float32(scale)
    return Split(images, labels.astype(np.int32))


def _load_digits() -> tuple[Split, Split, int]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    everything = _split(digits.images[..., None], 16, digits.target)
    n_test = round(_DIGITS_TEST_FRACTION * len(everything.labels))
    train, test = carve(everything, n_test)
    return train, test, 10


def _load_idx(name: str, dirs: list[Path]) -> tuple[Split, Split, int]:
    arrays = {}
    for stem in _IDX_FILES:
        path = next((d / f for d in dirs for f in (stem + ".gz", stem) if (d / f).is_file()), None)
        if path is None:
            raise not_found(name, f"file {stem}.gz (or {stem})", dirs, _HINTS[name])
        arrays[stem] = _read_idx(name, path, stem)
    splits = []
    for prefix in ("train", "t10k"):
        images = arrays[f"{prefix}-images-idx3-ubyte"]
        labels = arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{name}: {prefix} images {images.shape} and labels {labels.shape} "
                            "do not match")
        _check_labels(f"{name} {prefix}-labels-idx1-ubyte", labels, 10)
        splits.append(_split(images[..., None], 255, labels))
    return splits[0], splits[1], 10


def _read_idx(name: str, path: Path, stem: str) -> np.ndarray:
    """Reads an IDX file of unsigned bytes after checking its SHA-256 (see module docstring)."""
    sums = SHA256.get(name, {})
    try:
        content = path.read_bytes()
        if path.name in sums:  # the file as stored: raw IDX, or .gz with a published hash
            check_sha256(path, content, sums[path.name], "the file")
        if path.suffix == ".gz":
            content = gzip.decompress(content)
            if stem in sums:
                check_sha256(path, content, sums[stem], "the decompressed IDX content")
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read it ({e}); fetch it again.") from e
    # Header: two zero bytes, type code 0x08 (unsigned byte), number of dims, then each
    # dim as a big-endian uint32.
    if len(content) < 4 or content[:3] != b"\x00\x00\x08" or content[3] == 0:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {content[:4].hex()})")
    header = 4 + 4 * content[3]
    dims = struct.unpack(f">{content[3]}I", content[4:header]) if len(content) >= header else ()
    if not dims or len(content) != header + math.prod(dims):
        raise DataError(f"{path}: size {len(content)} bytes does not match its header "
                        f"(dims {dims}); the file is truncated or corrupt")
    return np.frombuffer(content, np.uint8, offset=header).reshape(dims)


def _check_labels(where: str, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and labels.max() >= num_classes:
        raise DataError(f"{where}: label {labels.max()} out of range 0..{num_classes - 1}")


def _load_cifar(name: str, dirs: list[Path]) -> tuple[Split, Split, int]:
    spec = _CIFAR[name]
    for d in dirs:
        if (d / spec.tarball).is_file():
            files = _read_cifar_tarball(name, d / spec.tarball, spec)
            break
        if (d / spec.directory).is_dir():
            files = _read_cifar_directory(name, d / spec.directory, spec)
            break
    else:
        raise not_found(name, f"{spec.tarball} (or the directory {spec.directory}/)", dirs,
                        _HINTS[name])
    *train, test = [_parse_cifar(where, content, spec) for where, content in files]
    train = Split(np.concatenate([s.images for s in train]),
                  np.concatenate([s.labels for s in train]))
    return train, test, spec.num_classes


def _read_cifar_tarball(name: str, path: Path, spec: _Cifar) -> list[tuple[str, bytes]]:
    """(where, content) of the training files then the test file, read from the tarball in
    memory after its SHA-256 check."""
    members = [f"{spec.directory}/{f}" for f in (*spec.train, spec.test)]
    try:
        content = path.read_bytes()
        expected = SHA256.get(name, {}).get(path.name)
        if expected is not None:
            check_sha256(path, content, expected, "the file")
        found = {}
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as tar:
            for member in tar:  # one pass in archive order: no seeking back in the gzip stream
                if member.name in members and member.isfile():
                    found[member.name] = tar.extractfile(member).read()
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise DataError(f"{path}: cannot read it ({e}); fetch it again.") from e
    for m in members:
        if m not in found:
            raise DataError(f"{path}: member {m} is missing; fetch the tarball again.")
    return [(f"{path}:{m}", found[m]) for m in members]


def _read_cifar_directory(name: str, directory: Path, spec: _Cifar) -> list[tuple[str, bytes]]:
    """(where, content) of the training files then the test file of an extracted tarball."""
    files = []
    for f in (*spec.train, spec.test):
        path = directory / f
        if not path.is_file():
            raise DataError(f"{name}: file {f} not found in {directory} (incomplete). "
                            f"{_HINTS[name]}")
        try:
            files.append((str(path), path.read_bytes()))
        except OSError as e:
            raise DataError(f"{path}: cannot read it ({e})") from e
    return files


def _parse_cifar(where: str, content: bytes, spec: _Cifar) -> Split:
    """Parses records of label byte(s) then 3x32x32 channel-major pixels."""
    record = spec.label_bytes + _CIFAR_PIXELS
    if len(content) % record:
        raise DataError(f"{where}: size {len(content)} bytes is not a multiple of the "
                        f"{record}-byte record; the file is truncated or corrupt")
    records = np.frombuffer(content, np.uint8).reshape(-1, record)
    labels = records[:, spec.label_bytes - 1]  # CIFAR-100: the fine label, after the coarse one
    _check_labels(where, labels, spec.num_classes)
    pixels = records[:, spec.label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return _split(pixels, 255, labels)
