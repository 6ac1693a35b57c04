"""``save``/``load``: checkpoints of state dicts in a NumPy-based format.

A checkpoint is a ``.npz`` (zip) archive holding one ``.npy`` member per
array and a ``__minigrad__`` member: JSON describing the nested structure
(dicts, lists, tuples, numbers, strings, None, Tensors, arrays), a format
version and a SHA-256 of every array's bytes. Writing goes to a temporary
file in the same directory, is flushed to disk, then atomically renamed
over the target, so a crash mid-write leaves any old file intact. Reading
checks the header, the zip CRCs, every digest and every reference before
returning anything, so a truncated, corrupted or foreign file raises
``CheckpointError`` instead of half-loading.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from ._ext._engine import TensorBase, make_tensor
from .backends import get_backend

__all__ = ["save", "load", "CheckpointError"]

_MAGIC = "minigrad-checkpoint"
_VERSION = 1
_HEADER = "__minigrad__.json"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or not a minigrad checkpoint."""


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _encode(obj, arrays: list):
    if isinstance(obj, TensorBase):
        arr = np.ascontiguousarray(obj.backend.to_numpy(obj.array))
        arrays.append(arr)
        return {"__tensor__": len(arrays) - 1, "requires_grad": bool(obj.requires_grad)}
    if isinstance(obj, np.ndarray) or (hasattr(obj, "__cuda_array_interface__") and hasattr(obj, "get")):
        arr = np.ascontiguousarray(obj.get() if hasattr(obj, "__cuda_array_interface__") else obj)
        arrays.append(arr)
        return {"__array__": len(arrays) - 1}
    if isinstance(obj, dict):
        keys = list(obj.keys())
        if all(isinstance(k, str) for k in keys):
            return {"__dict__": [[k, _encode(obj[k], arrays)] for k in keys]}
        if all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            return {"__intdict__": [[k, _encode(obj[k], arrays)] for k in keys]}
        raise TypeError("save: dict keys must be all strings or all ints")
    if isinstance(obj, (list, tuple)):
        return {"__tuple__" if isinstance(obj, tuple) else "__list__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, np.generic):
        return {"__scalar__": obj.item(), "dtype": obj.dtype.str}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"save: cannot store an object of type {type(obj).__name__}")


def save(obj, path) -> None:
    """Write ``obj`` (a state dict or any nesting of dicts/lists/tuples/numbers/str/Tensors) to ``path``.

    The write is atomic: either the new file is complete or the old one stays.
    """
    arrays: list[np.ndarray] = []
    tree = _encode(obj, arrays)
    header = {
        "magic": _MAGIC,
        "version": _VERSION,
        "tree": tree,
        "arrays": [{"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _digest(a)} for a in arrays],
    }
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr(_HEADER, json.dumps(header))
                for i, a in enumerate(arrays):
                    buf = io.BytesIO()
                    np.lib.format.write_array(buf, a, allow_pickle=False)
                    zf.writestr(f"a{i}.npy", buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _decode(node, arrays, backend):
    if isinstance(node, dict):
        if "__tensor__" in node:
            arr = arrays[node["__tensor__"]]
            data = backend.from_numpy(arr) if backend.name != "cpu" else arr
            return make_tensor(data, backend, bool(node.get("requires_grad", False)) and arr.dtype.kind == "f")
        if "__array__" in node:
            return arrays[node["__array__"]]
        if "__dict__" in node:
            return {k: _decode(v, arrays, backend) for k, v in node["__dict__"]}
        if "__intdict__" in node:
            return {int(k): _decode(v, arrays, backend) for k, v in node["__intdict__"]}
        if "__list__" in node:
            return [_decode(v, arrays, backend) for v in node["__list__"]]
        if "__tuple__" in node:
            return tuple(_decode(v, arrays, backend) for v in node["__tuple__"])
        if "__scalar__" in node:
            return np.dtype(node["dtype"]).type(node["__scalar__"])
        raise CheckpointError(f"unknown node in checkpoint structure: {sorted(node)}")
    return node


def _check_refs(node, n):
    if isinstance(node, dict):
        for key in ("__tensor__", "__array__"):
            if key in node and not (isinstance(node[key], int) and 0 <= node[key] < n):
                raise CheckpointError(f"checkpoint refers to array {node[key]!r}, but it holds {n}")
        for v in node.values():
            _check_refs(v, n)
    elif isinstance(node, list):
        for v in node:
            _check_refs(v, n)


def load(path, device=None):
    """Read a checkpoint written by ``save`` (or a PyTorch ``.pt``/``.safetensors`` file, see
    ``minigrad.utils.weights``); tensors are placed on ``device`` (default: CPU).

    Raises ``FileNotFoundError`` if the file does not exist and
    ``CheckpointError`` if it is truncated, corrupted or not a minigrad
    checkpoint.
    """
    path = os.fspath(path)
    backend = get_backend(device if device is not None else "cpu")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    from .utils import weights  # PyTorch .pt and .safetensors files load too, recognised by content

    foreign = weights.file_format(path)
    if foreign is not None:
        return weights.load_pt(path, device) if foreign == "pt" else weights.load_safetensors(path, device)
    try:
        zf = zipfile.ZipFile(path, "r")
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{path!r} is not a minigrad checkpoint or is truncated ({exc})") from None
    with zf:
        names = set(zf.namelist())
        if _HEADER not in names:
            raise CheckpointError(f"{path!r} is not a minigrad checkpoint (no {_HEADER} member)")
        try:
            header = json.loads(zf.read(_HEADER))
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            raise CheckpointError(f"{path!r}: corrupted checkpoint header ({exc})") from None
        if not isinstance(header, dict) or header.get("magic") != _MAGIC:
            raise CheckpointError(f"{path!r} is not a minigrad checkpoint")
        if header.get("version") != _VERSION:
            raise CheckpointError(
                f"{path!r} has checkpoint format version {header.get('version')}, this minigrad reads {_VERSION}"
            )
        meta = header.get("arrays", [])
        arrays = []
        for i, m in enumerate(meta):
            name = f"a{i}.npy"
            if name not in names:
                raise CheckpointError(f"{path!r} is truncated: array {i} of {len(meta)} is missing")
            try:
                arr = np.lib.format.read_array(io.BytesIO(zf.read(name)), allow_pickle=False)
            except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
                raise CheckpointError(f"{path!r}: array {i} is corrupted ({exc})") from None
            if arr.dtype.str != m["dtype"] or list(arr.shape) != m["shape"] or _digest(arr) != m["sha256"]:
                raise CheckpointError(f"{path!r}: array {i} does not match its recorded dtype/shape/checksum")
            arrays.append(arr)
        tree = header.get("tree")
        _check_refs(tree, len(arrays))
        return _decode(tree, arrays, backend)
