"""experiments.data.npz on small .npz files written here: good files with and without a
validation split, and one bad file per rule of the format."""

import io
import zipfile

import numpy as np
import pytest

from experiments import data

N_TRAIN, N_TEST = 50, 7
SHAPE = (4, 3, 2)  # any feature shape: here an image (H, W, C)


def good_arrays() -> dict[str, np.ndarray]:
    """uint8 training features whose first value is the example's index in the file, float64
    test features, int64 and uint8 labels; the largest label (6) is in the test split."""
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (N_TRAIN, *SHAPE), dtype=np.uint8)
    x_train[:, 0, 0, 0] = np.arange(N_TRAIN)
    y_test = rng.integers(0, 5, N_TEST, dtype=np.uint8)
    y_test[2] = 6
    return {"x_train": x_train, "y_train": rng.integers(0, 5, N_TRAIN),
            "x_test": rng.standard_normal((N_TEST, *SHAPE)), "y_test": y_test}


def write(tmp_path, arrays: dict) -> str:
    """Saves the arrays with np.savez; returns the data set name npz:PATH."""
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_good_file_without_validation_split_carves_one(tmp_path):
    arrays = good_arrays()
    name = write(tmp_path, arrays)
    ds = data.load(name)
    assert ds.name == name and ds.num_classes == 7
    n_valid = round(0.1 * N_TRAIN)
    assert ds.train.images.shape == (N_TRAIN - n_valid, *SHAPE)
    assert ds.valid.images.shape == (n_valid, *SHAPE)
    for split in (ds.train, ds.valid, ds.test):
        assert split.images.dtype == np.float32 and split.labels.dtype == np.int32
        assert split.labels.shape == split.images.shape[:1]
    # The same carving as the image data sets: the first round(0.1 N) of seed 0's permutation,
    # both parts in file order, disjoint, together the whole training file.
    train_index = ds.train.images[:, 0, 0, 0].astype(int)
    valid_index = ds.valid.images[:, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(
        valid_index, np.sort(np.random.default_rng(0).permutation(N_TRAIN)[:n_valid]))
    np.testing.assert_array_equal(np.sort(np.concatenate([train_index, valid_index])),
                                  np.arange(N_TRAIN))
    assert np.all(np.diff(train_index) > 0)
    for split, index in ((ds.train, train_index), (ds.valid, valid_index)):
        np.testing.assert_array_equal(split.images, arrays["x_train"][index].astype(np.float32))
        np.testing.assert_array_equal(split.labels, arrays["y_train"][index])
    np.testing.assert_array_equal(ds.test.images, arrays["x_test"].astype(np.float32))
    np.testing.assert_array_equal(ds.test.labels, arrays["y_test"])
    # Deterministic: another load carves the same split; the fraction is the caller's.
    again = data.load(name)
    np.testing.assert_array_equal(again.valid.images, ds.valid.images)
    np.testing.assert_array_equal(again.train.labels, ds.train.labels)
    assert len(data.load(name, validation_fraction=0.3).valid.labels) == 15


def test_good_file_with_validation_split_keeps_it(tmp_path):
    arrays = good_arrays()
    rng = np.random.default_rng(1)
    arrays["x_valid"] = rng.standard_normal((5, *SHAPE)).astype(np.float16)
    arrays["y_valid"] = np.array([0, 9, 1, 2, 3], np.int16)  # the largest label is here
    ds = data.load(write(tmp_path, arrays))
    assert ds.num_classes == 10
    np.testing.assert_array_equal(ds.train.images, arrays["x_train"].astype(np.float32))
    np.testing.assert_array_equal(ds.train.labels, arrays["y_train"])
    np.testing.assert_array_equal(ds.valid.images, arrays["x_valid"].astype(np.float32))
    np.testing.assert_array_equal(ds.valid.labels, arrays["y_valid"])
    assert ds.valid.images.dtype == np.float32 and ds.valid.labels.dtype == np.int32


def test_unknown_name_lists_npz():
    with pytest.raises(data.DataError, match=r"npz:PATH"):
        data.load("imagenet")


def _drop(*keys):
    return lambda a: {k: v for k, v in a.items() if k not in keys}


def _set(key, value):
    return lambda a: {**a, key: value(a) if callable(value) else value}


def _nan(a):
    x = a["x_test"].copy()
    x[3, 1, 1, 0] = np.nan
    return {**a, "x_test": x}


def _overflow(a):
    x = a["x_train"].astype(np.float64)
    x[5, 2, 1, 0] = 1e39  # finite in float64, inf in float32
    return {**a, "x_train": x}


def _negative(a):
    y = a["y_test"].astype(np.int8)
    y[4] = -1
    return {**a, "y_test": y}


def _beyond_int32(a):
    y = a["y_train"].copy()
    y[3] = 2**31
    return {**a, "y_train": y}


@pytest.mark.parametrize("change, message", [
    (_drop("y_test"), r"no array y_test; expected x_train, y_train, x_test, y_test"),
    (lambda a: {**_drop("y_test")(a), "y_tset": a["y_test"]},
     r"no array y_test; .*\(the file has x_test, x_train, y_train, y_tset\)"),
    (_set("labels", np.zeros(3, int)), r"unexpected array labels; expected only x_train"),
    (_set("x_valid", np.zeros((5, *SHAPE))), r"x_valid without y_valid; expected both or neither"),
    (_set("y_valid", np.zeros(5, int)), r"y_valid without x_valid; expected both or neither"),
    (_set("x_train", lambda a: a["x_train"] + 1j), r"x_train has dtype complex128; expected a real"),
    (_set("x_test", np.full((N_TEST, *SHAPE), "a")), r"x_test has dtype <U1; expected a real"),
    (_set("x_train", lambda a: a["x_train"] > 9), r"x_train has dtype bool; expected a real"),
    (_set("x_test", np.array([None] * N_TEST)), r"cannot read array x_test \(.*\); expected a num"),
    (_set("x_train", np.arange(N_TRAIN)), r"x_train has shape \(50,\); expected \(N, features"),
    (_set("y_train", lambda a: a["y_train"].astype(float)),
     r"y_train has dtype float64; expected integer class indices"),
    (_set("y_train", lambda a: np.eye(7, dtype=int)[a["y_train"]]),
     r"y_train has shape \(50, 7\); expected class indices \(N,\)"),
    (_set("y_train", lambda a: a["y_train"][:-1]),
     r"x_train has 50 examples but y_train has 49 labels"),
    (_set("x_test", lambda a: a["x_test"][..., 0]),
     r"x_test has feature shape \(4, 3\); expected x_train's \(4, 3, 2\)"),
    (lambda a: {**a, "x_test": a["x_test"][:0], "y_test": a["y_test"][:0]},
     r"x_test and y_test are empty; expected at least one example"),
    (_negative, r"y_test has label -1; expected class indices 0, 1, 2"),
    (_beyond_int32, r"y_train has label 2147483648; expected class indices 0, 1, 2"),
    (_nan, r"x_test has 1 values that are NaN or infinite in float32; expected finite"),
    (_overflow, r"x_train has 1 values that are NaN or infinite in float32"),
], ids=["missing", "misspelt", "unexpected", "x-valid-alone", "y-valid-alone", "complex",
        "string", "bool", "object", "no-feature-axis", "float-labels", "one-hot", "lengths",
        "feature-shapes", "empty", "negative", "beyond-int32", "nan", "overflow"])
def test_a_bad_file_stops_naming_the_array(tmp_path, change, message):
    name = write(tmp_path, change(good_arrays()))
    with pytest.raises(data.DataError, match=message) as info:
        data.load(name)
    assert str(info.value).startswith(f"{tmp_path / 'mine.npz'}: ")


def npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return buffer.getvalue()


@pytest.mark.parametrize("content, message", [
    (b"x_train,y_train\n1,2\n", "not an .npz file"),
    (b"", "not an .npz file"),
    (npy_bytes(), "not an .npz file"),
    (b"PK\x03\x04 truncated", r"not a readable .npz file \(File is not a zip file\)"),
], ids=["text", "empty", "npy", "truncated-zip"])
def test_a_file_that_is_not_an_npz_archive_stops(tmp_path, content, message):
    path = tmp_path / "mine.npz"
    path.write_bytes(content)
    with pytest.raises(data.DataError, match=f"mine.npz: {message}.*; expected .*x_train"):
        data.load(f"npz:{path}")


def test_an_unreadable_array_stops_naming_it(tmp_path):
    name = write(tmp_path, good_arrays())
    path = tmp_path / "mine.npz"
    content = bytearray(path.read_bytes())
    content[500] ^= 0xFF  # inside x_train's data, the first member
    path.write_bytes(bytes(content))
    with pytest.raises(data.DataError, match=r"cannot read array x_train \(Bad CRC-32"):
        data.load(name)
    np.savez(path, **good_arrays())
    with zipfile.ZipFile(path, "a") as archive:  # members that are not .npy files
        archive.writestr("x_valid.npy", b"not an array")
        archive.writestr("y_valid.npy", b"not an array")
    with pytest.raises(data.DataError, match=r"x_valid is not a .npy array; expected a numeric"):
        data.load(name)


def test_a_missing_file_or_no_path_stops(tmp_path):
    with pytest.raises(data.DataError, match=r"nowhere.npz: no such file; expected an .npz file"):
        data.load(f"npz:{tmp_path / 'nowhere.npz'}")
    with pytest.raises(data.DataError, match=r"'npz:': expected npz:PATH"):
        data.load("npz:")
