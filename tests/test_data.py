"""experiments.data.images on tiny IDX and CIFAR binary files written here, plus the real
digits and (where installed) Debian's Fashion-MNIST."""

import gzip
import hashlib
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from experiments import data
from experiments.data import images

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


pytestmark = pytest.mark.usefixtures("hermetic_data")


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# --- IDX ---------------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array, written from the format description."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_idx_arrays(seed: int, n_train: int = 20, n_test: int = 5):
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_idx(directory: Path, arrays: dict, gz: bool) -> dict[str, bytes]:
    """Writes the four files (gzipped or raw); returns each file's bytes by file name."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for stem, array in arrays.items():
        content = idx_bytes(array)
        name, stored = (stem + ".gz", gzip.compress(content)) if gz else (stem, content)
        (directory / name).write_bytes(stored)
        written[name] = stored
    return written


def content_sums(arrays: dict) -> dict[str, str]:
    return {stem: sha256(idx_bytes(array)) for stem, array in arrays.items()}


def assert_idx_round_trip(ds: data.Dataset, arrays: dict) -> None:
    train_images = np.concatenate([ds.train.images, ds.valid.images])
    train_labels = np.concatenate([ds.train.labels, ds.valid.labels])
    order = np.argsort(train_index(ds, arrays))
    expected = arrays["train-images-idx3-ubyte"][..., None] / 255
    np.testing.assert_array_equal(train_images[order], expected.astype(np.float32))
    np.testing.assert_array_equal(train_labels[order], arrays["train-labels-idx1-ubyte"])
    expected = arrays["t10k-images-idx3-ubyte"][..., None] / 255
    np.testing.assert_array_equal(ds.test.images, expected.astype(np.float32))
    np.testing.assert_array_equal(ds.test.labels, arrays["t10k-labels-idx1-ubyte"])


def train_index(ds: data.Dataset, arrays: dict) -> np.ndarray:
    """Index in the training file of each example of train then valid (images are random,
    so unique)."""
    file_images = arrays["train-images-idx3-ubyte"]
    lookup = {image.tobytes(): i for i, image in enumerate(file_images)}
    got = np.concatenate([ds.train.images, ds.valid.images])
    return np.array([lookup[np.rint(img * 255).astype(np.uint8).tobytes()] for img in got])


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_round_trip(tmp_path, monkeypatch, gz):
    arrays = make_idx_arrays(seed=1)
    write_idx(tmp_path, arrays, gz=gz)
    monkeypatch.setitem(images.SHA256, "fashion-mnist", content_sums(arrays))
    ds = data.load("fashion-mnist", tmp_path, validation_fraction=0.25)
    assert ds.name == "fashion-mnist" and ds.num_classes == 10
    assert ds.train.images.shape == (15, 28, 28, 1) and ds.valid.images.shape == (5, 28, 28, 1)
    assert ds.test.images.shape == (5, 28, 28, 1)
    for split in (ds.train, ds.valid, ds.test):
        assert split.images.dtype == np.float32 and split.labels.dtype == np.int32
    assert_idx_round_trip(ds, arrays)


def test_mnist_gz_checked_against_file_hash(tmp_path, monkeypatch):
    arrays = make_idx_arrays(seed=2)
    written = write_idx(tmp_path, arrays, gz=True)
    monkeypatch.setitem(images.SHA256, "mnist", {name: sha256(b) for name, b in written.items()})
    ds = data.load("mnist", tmp_path, validation_fraction=0)
    np.testing.assert_array_equal(ds.train.labels, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.train.images[..., 0],
                                  (arrays["train-images-idx3-ubyte"] / 255).astype(np.float32))
    assert len(ds.valid.labels) == 0

    # The same gz file with one byte of its compressed stream changed fails the file hash.
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    corrupt = bytearray(written[path.name])
    corrupt[-10] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(data.DataError, match="SHA-256") as info:
        data.load("mnist", tmp_path)
    assert str(path) in str(info.value)
    assert sha256(bytes(corrupt)) in str(info.value)
    assert sha256(written[path.name]) in str(info.value)


def test_raw_idx_with_one_byte_flipped_fails_checksum(tmp_path, monkeypatch):
    arrays = make_idx_arrays(seed=3)
    write_idx(tmp_path, arrays, gz=False)
    sums = content_sums(arrays)
    monkeypatch.setitem(images.SHA256, "fashion-mnist", sums)
    path = tmp_path / "t10k-images-idx3-ubyte"
    content = bytearray(path.read_bytes())
    content[100] ^= 0x01
    path.write_bytes(bytes(content))
    with pytest.raises(data.DataError, match="SHA-256") as info:
        data.load("fashion-mnist", tmp_path)
    message = str(info.value)
    assert str(path) in message and sums["t10k-images-idx3-ubyte"] in message
    assert sha256(bytes(content)) in message


def test_gz_with_other_content_fails_content_checksum(tmp_path, monkeypatch):
    """A valid gzip file whose IDX content differs from the recorded one (one pixel)."""
    arrays = make_idx_arrays(seed=14)
    sums = content_sums(arrays)
    monkeypatch.setitem(images.SHA256, "fashion-mnist", sums)
    arrays["train-images-idx3-ubyte"][3, 4, 5] ^= 0x01
    write_idx(tmp_path, arrays, gz=True)
    with pytest.raises(data.DataError, match="SHA-256 of the decompressed") as info:
        data.load("fashion-mnist", tmp_path)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in str(info.value)
    assert sums["train-images-idx3-ubyte"] in str(info.value)


def test_corrupt_gzip_stream_is_a_data_error(tmp_path, monkeypatch):
    arrays = make_idx_arrays(seed=4)
    write_idx(tmp_path, arrays, gz=True)
    monkeypatch.setitem(images.SHA256, "fashion-mnist", content_sums(arrays))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])  # truncated download
    with pytest.raises(data.DataError, match="cannot read") as info:
        data.load("fashion-mnist", tmp_path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b[:3], "magic"),
    (lambda b: bytes([0, 0, 0x0D, 3]) + b[4:], "magic"),  # float type code
    (lambda b: b + b"\x00", "truncated"),
])
def test_malformed_idx_is_a_data_error(tmp_path, monkeypatch, damage, match):
    arrays = make_idx_arrays(seed=5)
    write_idx(tmp_path, arrays, gz=False)
    monkeypatch.setitem(images.SHA256, "mnist", {})  # raw MNIST: structural checks only
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(data.DataError, match=match) as info:
        data.load("mnist", tmp_path)
    assert str(path) in str(info.value)


def test_idx_label_out_of_range_or_count_mismatch(tmp_path, monkeypatch):
    monkeypatch.setitem(images.SHA256, "mnist", {})
    arrays = make_idx_arrays(seed=6)
    arrays["t10k-labels-idx1-ubyte"][2] = 10
    write_idx(tmp_path / "a", arrays, gz=False)
    with pytest.raises(data.DataError, match="out of range"):
        data.load("mnist", tmp_path / "a")
    arrays = make_idx_arrays(seed=6)
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:-1]
    write_idx(tmp_path / "b", arrays, gz=False)
    with pytest.raises(data.DataError, match="do not match"):
        data.load("mnist", tmp_path / "b")


def test_missing_file_names_it_the_dirs_and_the_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTFAM_DATA", str(tmp_path / "env"))
    arrays = make_idx_arrays(seed=7)
    del arrays["t10k-labels-idx1-ubyte"]
    write_idx(tmp_path / "arg", arrays, gz=True)
    monkeypatch.setitem(images.SHA256, "fashion-mnist", {})
    with pytest.raises(data.DataError) as info:
        data.load("fashion-mnist", tmp_path / "arg")
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in message
    for d in (tmp_path / "arg", tmp_path / "arg" / "fashion-mnist", tmp_path / "env",
              tmp_path / "env" / "fashion-mnist", tmp_path / "system" / "fashion-mnist"):
        assert f"  {d}\n" in message
    assert "apt-get install dataset-fashion-mnist" in message

    with pytest.raises(data.DataError) as info:
        data.load("mnist", tmp_path / "nowhere")
    assert "train-images-idx3-ubyte" in str(info.value)
    assert "--data-dir or $SOFTFAM_DATA" in str(info.value)
    assert "https://" in str(info.value)


def test_search_dirs_order(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTFAM_DATA", "/env")
    assert data.search_dirs("mnist", "/arg") == [
        Path("/arg"), Path("/arg/mnist"), Path("/env"), Path("/env/mnist"),
        tmp_path / "system" / "mnist"]
    monkeypatch.delenv("SOFTFAM_DATA")
    assert data.search_dirs("mnist") == [tmp_path / "system" / "mnist"]


def test_data_dir_beats_env_and_subdir_is_found(tmp_path, monkeypatch):
    monkeypatch.setitem(images.SHA256, "mnist", {})
    from_arg, from_env = make_idx_arrays(seed=8), make_idx_arrays(seed=9)
    write_idx(tmp_path / "arg" / "mnist", from_arg, gz=False)  # the <dir>/<name> form
    write_idx(tmp_path / "env", from_env, gz=True)
    monkeypatch.setenv("SOFTFAM_DATA", str(tmp_path / "env"))
    got = data.load("mnist", tmp_path / "arg", validation_fraction=0).test.labels
    np.testing.assert_array_equal(got, from_arg["t10k-labels-idx1-ubyte"])
    got = data.load("mnist", validation_fraction=0).test.labels
    np.testing.assert_array_equal(got, from_env["t10k-labels-idx1-ubyte"])


def test_validation_split_is_deterministic_and_disjoint(tmp_path, monkeypatch):
    monkeypatch.setitem(images.SHA256, "mnist", {})
    arrays = make_idx_arrays(seed=10, n_train=50)
    write_idx(tmp_path, arrays, gz=False)
    first = data.load("mnist", tmp_path, validation_fraction=0.3)
    second = data.load("mnist", tmp_path, validation_fraction=0.3)
    np.testing.assert_array_equal(first.valid.images, second.valid.images)
    np.testing.assert_array_equal(first.train.labels, second.train.labels)
    assert len(first.valid.labels) == 15 and len(first.train.labels) == 35
    index = train_index(first, arrays)
    train_part, valid_part = set(index[:35]), set(index[35:])
    assert not train_part & valid_part and train_part | valid_part == set(range(50))
    assert_idx_round_trip(first, arrays)
    # The test split does not depend on the validation fraction.
    np.testing.assert_array_equal(first.test.images,
                                  data.load("mnist", tmp_path, validation_fraction=0).test.images)


def test_bad_validation_fraction_and_unknown_name():
    with pytest.raises(ValueError, match="validation_fraction"):
        data.load("digits", validation_fraction=1.0)
    with pytest.raises(data.DataError) as info:
        data.load("imagenet")
    for name in images.DATASETS:
        assert name in str(info.value)


# --- CIFAR -------------------------------------------------------------------------------------

def cifar_records(rng, n: int, fine: bool):
    """(bytes, images (n, 32, 32, 3) uint8, labels) of n binary records."""
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100 if fine else 10, n, dtype=np.uint8)
    channel_major = images.transpose(0, 3, 1, 2).reshape(n, -1)
    if fine:  # coarse label first, deliberately unrelated to the fine one
        prefix = np.stack([(labels + 7) % 20, labels], axis=1).astype(np.uint8)
    else:
        prefix = labels[:, None]
    return np.concatenate([prefix, channel_major], axis=1).tobytes(), images, labels


CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-binary.tar.gz", "cifar-10-batches-bin",
                [f"data_batch_{i}.bin" for i in range(1, 6)], "test_batch.bin"),
    "cifar100": ("cifar-100-binary.tar.gz", "cifar-100-binary", ["train.bin"], "test.bin"),
}


def make_cifar(name: str, seed: int):
    """Files by name (train files then test), and the expected train and test arrays."""
    rng = np.random.default_rng(seed)
    _, _, train_files, test_file = CIFAR_LAYOUT[name]
    fine = name == "cifar100"
    files, train_images, train_labels = {}, [], []
    for f in train_files:
        content, images, labels = cifar_records(rng, 3, fine)
        files[f] = content
        train_images.append(images)
        train_labels.append(labels)
    files[test_file], test_images, test_labels = cifar_records(rng, 4, fine)
    train = np.concatenate(train_images), np.concatenate(train_labels)
    return files, train, (test_images, test_labels)


def write_cifar_directory(root: Path, name: str, files: dict) -> Path:
    directory = root / CIFAR_LAYOUT[name][1]
    directory.mkdir(parents=True)
    for f, content in files.items():
        (directory / f).write_bytes(content)
    return directory


def write_cifar_tarball(root: Path, name: str, files: dict) -> Path:
    tarball, directory, _, _ = CIFAR_LAYOUT[name]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for f, content in {"readme.html": b"<html></html>", **files}.items():
            info = tarfile.TarInfo(f"{directory}/{f}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    root.mkdir(parents=True, exist_ok=True)
    (root / tarball).write_bytes(buffer.getvalue())
    return root / tarball


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("form", ["tarball", "directory"])
def test_cifar_round_trip(tmp_path, monkeypatch, name, form):
    files, (train_images, train_labels), (test_images, test_labels) = make_cifar(name, seed=11)
    if form == "tarball":
        path = write_cifar_tarball(tmp_path, name, files)
        monkeypatch.setitem(images.SHA256, name, {path.name: sha256(path.read_bytes())})
    else:
        write_cifar_directory(tmp_path, name, files)
        monkeypatch.setitem(images.SHA256, name, {})
    ds = data.load(name, tmp_path, validation_fraction=0)
    assert ds.num_classes == (100 if name == "cifar100" else 10)
    assert ds.train.images.shape == (len(train_labels), 32, 32, 3)
    assert ds.train.images.dtype == np.float32 and ds.train.labels.dtype == np.int32
    np.testing.assert_array_equal(ds.train.images, (train_images / 255).astype(np.float32))
    np.testing.assert_array_equal(ds.train.labels, train_labels)  # the fine label for CIFAR-100
    np.testing.assert_array_equal(ds.test.images, (test_images / 255).astype(np.float32))
    np.testing.assert_array_equal(ds.test.labels, test_labels)
    if name == "cifar100":
        assert np.all(ds.test.labels != (test_labels + 7) % 20)  # not the coarse label

    split = data.load(name, tmp_path, validation_fraction=0.2)
    n_valid = round(0.2 * len(train_labels))
    assert len(split.valid.labels) == n_valid
    assert len(split.train.labels) == len(train_labels) - n_valid


def test_cifar_tarball_checksum_and_missing_member(tmp_path, monkeypatch):
    files, _, _ = make_cifar("cifar10", seed=12)
    path = write_cifar_tarball(tmp_path / "a", "cifar10", files)
    good = sha256(path.read_bytes())
    monkeypatch.setitem(images.SHA256, "cifar10", {path.name: good})
    corrupt = bytearray(path.read_bytes())
    corrupt[len(corrupt) // 2] ^= 0x10
    path.write_bytes(bytes(corrupt))
    with pytest.raises(data.DataError, match="SHA-256") as info:
        data.load("cifar10", tmp_path / "a")
    assert str(path) in str(info.value) and good in str(info.value)

    del files["data_batch_3.bin"]
    path = write_cifar_tarball(tmp_path / "b", "cifar10", files)
    monkeypatch.setitem(images.SHA256, "cifar10", {path.name: sha256(path.read_bytes())})
    with pytest.raises(data.DataError, match="data_batch_3.bin"):
        data.load("cifar10", tmp_path / "b")


def test_cifar_directory_structural_checks(tmp_path):
    files, _, _ = make_cifar("cifar10", seed=13)
    directory = write_cifar_directory(tmp_path / "a", "cifar10", files)
    (directory / "data_batch_2.bin").write_bytes(files["data_batch_2.bin"][:-1])
    with pytest.raises(data.DataError, match="not a multiple") as info:
        data.load("cifar10", tmp_path / "a")
    assert "data_batch_2.bin" in str(info.value)

    bad_label = bytearray(files["test_batch.bin"])
    bad_label[0] = 10
    files["test_batch.bin"] = bytes(bad_label)
    write_cifar_directory(tmp_path / "b", "cifar10", files)
    with pytest.raises(data.DataError, match="out of range"):
        data.load("cifar10", tmp_path / "b")

    directory = write_cifar_directory(tmp_path / "c", "cifar10", files)
    (directory / "test_batch.bin").unlink()
    with pytest.raises(data.DataError, match="test_batch.bin"):
        data.load("cifar10", tmp_path / "c")


def test_cifar_missing_lists_dirs_and_url(tmp_path):
    with pytest.raises(data.DataError) as info:
        data.load("cifar100", tmp_path)
    message = str(info.value)
    assert "cifar-100-binary.tar.gz" in message and "cifar-100-binary/" in message
    assert f"  {tmp_path}\n" in message and f"  {tmp_path / 'cifar100'}\n" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz" in message


# --- the real data sets ------------------------------------------------------------------------

def test_checksums_cover_every_file():
    assert set(images.SHA256["fashion-mnist"]) == set(IDX_NAMES)
    assert set(images.SHA256["mnist"]) == {n + ".gz" for n in IDX_NAMES}
    assert set(images.SHA256["cifar10"]) == {"cifar-10-binary.tar.gz"}
    assert set(images.SHA256["cifar100"]) == {"cifar-100-binary.tar.gz"}
    for sums in images.SHA256.values():
        for value in sums.values():
            assert len(value) == 64 and set(value) <= set("0123456789abcdef")


def test_digits():
    ds = data.load("digits")
    sizes = [len(s.labels) for s in (ds.train, ds.valid, ds.test)]
    assert sum(sizes) == 1797 and sizes[2] == round(0.2 * 1797)
    assert sizes[1] == round(0.1 * (1797 - sizes[2]))
    assert ds.num_classes == 10 and set(np.unique(ds.train.labels)) == set(range(10))
    assert ds.train.images.shape[1:] == (8, 8, 1) and ds.train.images.dtype == np.float32
    for split in (ds.train, ds.valid, ds.test):
        assert split.images.min() >= 0 and split.images.max() <= 1
    assert ds.train.images.max() == 1  # 16 / 16: values were scaled, not clipped
    np.testing.assert_array_equal(ds.test.labels, data.load("digits").test.labels)


@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    ds = data.load("fashion-mnist", REAL_FASHION_MNIST)
    assert len(ds.train.labels) + len(ds.valid.labels) == 60000 and len(ds.valid.labels) == 6000
    assert ds.test.images.shape == (10000, 28, 28, 1) and ds.num_classes == 10
    counts = np.bincount(np.concatenate([ds.train.labels, ds.valid.labels]), minlength=10)
    np.testing.assert_array_equal(counts, np.full(10, 6000))
    assert ds.train.images.min() == 0 and ds.train.images.max() == 1
