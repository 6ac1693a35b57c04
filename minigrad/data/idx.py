"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``00 00 TT DD`` (``TT`` the element
type, ``DD`` the number of dimensions), then ``DD`` big-endian uint32
dimension sizes, then the elements in C order, big-endian. Files may be
gzipped (recognised by their content, not their name).

Every way a file can be broken (truncated, corrupted gzip stream, bad magic
number, a payload that does not match the declared dimensions, trailing
bytes) raises ``IDXError`` naming the file and what was expected.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

__all__ = ["IDXError", "read_idx", "write_idx", "IDX_DTYPES"]

#: IDX type code -> big-endian NumPy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
# No real IDX file has more dimensions; a larger count means a corrupted header.
_MAX_DIMS = 16


class IDXError(ValueError):
    """An IDX file is malformed, truncated, or not what the caller expected."""


def _read_bytes(path) -> bytes:
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file not found: {path}") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise IDXError(f"{path}: the gzip stream is truncated (the file ends before the compressed data does)") from None
    except (OSError, zlib.error) as exc:
        raise IDXError(f"{path}: corrupted gzip data ({exc})") from None


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzipped) into a native-endian NumPy array.

    Args:
        path: the file (``str`` or ``os.PathLike``).

    Returns:
        An array with the file's dimensions and element type
        (``uint8`` for MNIST images and labels).

    Raises:
        IDXError: the file is not a well-formed IDX file.
        FileNotFoundError: there is no such file.

    Example::

        images = read_idx("train-images-idx3-ubyte.gz")   # (60000, 28, 28) uint8
    """
    raw = _read_bytes(path)
    name = os.fspath(path)
    if len(raw) < 4:
        raise IDXError(f"{name}: {len(raw)} bytes is too short for an IDX header (expected at least 4)")
    if raw[0] != 0 or raw[1] != 0:
        raise IDXError(
            f"{name}: bad magic number 0x{raw[:4].hex()}: an IDX file starts with two zero bytes "
            f"(is it an IDX file?)"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise IDXError(f"{name}: unknown IDX element type 0x{code:02x} (expected one of {known})")
    if ndim == 0 or ndim > _MAX_DIMS:
        raise IDXError(f"{name}: the header declares {ndim} dimensions (expected 1 to {_MAX_DIMS})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"{name}: truncated header: {ndim} dimensions need {header} bytes, the file has {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header
    if payload < expected:
        raise IDXError(
            f"{name}: truncated: dimensions {dims} of {dtype.newbyteorder('=')} need {expected} data bytes, "
            f"the file has {payload}"
        )
    if payload > expected:
        raise IDXError(
            f"{name}: {payload - expected} unexpected trailing bytes after the data of dimensions {dims} "
            f"(corrupted or mislabelled file)"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=int(np.prod(dims, dtype=np.int64)), offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path, array) -> None:
    """Write ``array`` as an IDX file; gzipped when ``path`` ends in ``.gz``.

    The element type must be one IDX can hold (uint8, int8, int16, int32,
    float32, float64) and the array must have at least one dimension.
    """
    arr = np.asarray(array)
    native = arr.dtype.newbyteorder("=")
    if native not in _CODES:
        raise TypeError(f"IDX cannot store dtype {arr.dtype}; expected uint8, int8, int16, int32, float32 or float64")
    if not 1 <= arr.ndim <= _MAX_DIMS:
        raise ValueError(f"IDX stores arrays with 1 to {_MAX_DIMS} dimensions, got {arr.ndim}")
    code = _CODES[native]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()
    path = os.fspath(path)
    if path.endswith(".gz"):
        # mtime=0: the same array always gives the same bytes.
        data = gzip.compress(data, mtime=0)
    with open(path, "wb") as f:
        f.write(data)
