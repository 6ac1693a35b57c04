"""IDX reader/writer: round trips and a clear error for every way a file can be broken."""

import gzip


import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minigrad.data import IDXError, read_idx, read_idx_pair, write_idx

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def _write_raw(path, data: bytes, gz=False):
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if gz else data)
    return path


def _header(code, dims):
    return bytes([0, 0, code, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes()


@given(arr=hnp.arrays(st.sampled_from(IDX_DTYPES), hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)),
       gz=st.booleans())
def test_round_trip(tmp_path_factory, arr, gz):
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, arr)
    back = read_idx(path)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    assert back.dtype.byteorder in ("=", "|")  # native, ready for arithmetic


def test_gzip_is_recognised_by_content_not_name(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = _write_raw(tmp_path / "no-suffix", _header(0x08, arr.shape) + arr.tobytes(), gz=True)
    np.testing.assert_array_equal(read_idx(path), arr)


def test_big_endian_payload(tmp_path):
    vals = np.array([1, -2, 300000], dtype=np.int32)
    path = _write_raw(tmp_path / "x", _header(0x0C, vals.shape) + vals.astype(">i4").tobytes())
    np.testing.assert_array_equal(read_idx(path), vals)


def test_write_is_deterministic(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "b.gz", arr)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "too short for an IDX header"),
        (b"\x00\x00", "too short for an IDX header"),
        (b"\x01\x02\x08\x01" + b"\x00" * 8, "bad magic number 0x01020801"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX element type 0x07"),
        (b"\x00\x00\x08\x00", "declares 0 dimensions"),
        (b"\x00\x00\x08\x11" + b"\x00" * 80, "declares 17 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header: 3 dimensions need 16 bytes, the file has 8"),
        (_header(0x08, (2, 28, 28)) + b"\x00" * 1000, r"truncated: dimensions \(2, 28, 28\) of uint8 need 1568"),
        (_header(0x0B, (3,)) + b"\x00" * 5, "need 6 data bytes, the file has 5"),
        (_header(0x08, (3,)) + b"\x00" * 4, "1 unexpected trailing bytes"),
    ],
    ids=["empty", "2-bytes", "magic", "type", "0-dims", "17-dims", "short-header", "short-data", "short-int16",
         "trailing"],
)
def test_malformed_files_raise_clear_errors(tmp_path, data, match, gz):
    path = _write_raw(tmp_path / "bad", data, gz=gz)
    with pytest.raises(IDXError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)  # the message names the file


def test_truncated_gzip_stream(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", arr)
    full = (tmp_path / "a.gz").read_bytes()
    _write_raw(tmp_path / "cut.gz", full[: len(full) // 2])
    with pytest.raises(IDXError, match="gzip stream is truncated"):
        read_idx(tmp_path / "cut.gz")


def test_corrupted_gzip_stream(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", arr)
    data = bytearray((tmp_path / "a.gz").read_bytes())
    for i in range(20, 60):  # garble the deflate stream (and so the CRC)
        data[i] ^= 0xA5
    _write_raw(tmp_path / "bad.gz", bytes(data))
    with pytest.raises(IDXError, match="corrupted gzip data|gzip stream is truncated"):
        read_idx(tmp_path / "bad.gz")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        read_idx(tmp_path / "nope.gz")


def test_write_rejects_what_idx_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="IDX cannot store dtype int64"):
        write_idx(tmp_path / "a", np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="1 to 16 dimensions, got 0"):
        write_idx(tmp_path / "a", np.uint8(3))


# ------------------------------------------------------- images + labels
def _pair(tmp_path, images, labels):
    write_idx(tmp_path / "img.gz", images)
    write_idx(tmp_path / "lab.gz", labels)
    return tmp_path / "img.gz", tmp_path / "lab.gz"


def test_pair_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    x, y = read_idx_pair(*_pair(tmp_path, images, labels))
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert y.dtype == np.int64


def test_pair_count_mismatch(tmp_path):
    paths = _pair(tmp_path, np.zeros((5, 4, 4), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(IDXError, match="holds 5 images but .* holds 4 labels"):
        read_idx_pair(*paths)


def test_pair_label_out_of_range(tmp_path):
    paths = _pair(tmp_path, np.zeros((3, 4, 4), np.uint8), np.array([0, 10, 2], np.uint8))
    with pytest.raises(IDXError, match="label 10 at index 1 is out of range"):
        read_idx_pair(*paths)


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (np.zeros((3, 16), np.uint8), np.zeros(3, np.uint8), "expected images as a 3-D uint8 array"),
        (np.zeros((3, 4, 4), np.float32), np.zeros(3, np.uint8), "expected images as a 3-D uint8"),
        (np.zeros((3, 4, 4), np.uint8), np.zeros((3, 1), np.uint8), "expected labels as a 1-D uint8"),
    ],
)
def test_pair_wrong_dimensions(tmp_path, images, labels, match):
    with pytest.raises(IDXError, match=match):
        read_idx_pair(*_pair(tmp_path, images, labels))


def test_swapped_files_are_caught(tmp_path):
    img, lab = _pair(tmp_path, np.zeros((3, 4, 4), np.uint8), np.zeros(3, np.uint8))
    with pytest.raises(IDXError, match="expected images as a 3-D"):
        read_idx_pair(lab, img)


def test_idx_error_is_a_value_error():
    assert issubclass(IDXError, ValueError)
