"""Weights in other frameworks' files: PyTorch ``.pt``/``.pth`` state dicts and ``.safetensors``.

* ``load_pt(path)`` reads a file written by ``torch.save`` (the zip format
  PyTorch has used since 1.6) **without PyTorch**: a restricted unpickler
  rebuilds tensors from the archive's raw storages and allows nothing but
  tensors, numbers, strings and containers (dicts, ``OrderedDict``, lists,
  tuples), so a file cannot run code. Tensors come back as minigrad Tensors.
* ``load_safetensors(path)`` / ``save_safetensors(tensors, path)`` read and
  write the ``safetensors`` format through the ``safetensors`` library.

``minigrad.load`` recognises both kinds of file by their content. A model
trained with PyTorch loads into the same minigrad architecture with
``model.load_state_dict(minigrad.load("model.pt"))``; the other way,
``save_safetensors(model.state_dict(), "model.safetensors")`` is read by
``safetensors.torch.load_file``.

Example::

    from minigrad.utils.weights import load_pt, save_safetensors

    model.load_state_dict(load_pt("resnet.pth"))
    save_safetensors(model.state_dict(), "resnet.safetensors")
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile

import numpy as np

from .._ext._engine import TensorBase, make_tensor
from ..backends import get_backend

__all__ = ["load_pt", "load_safetensors", "save_safetensors", "WeightsError", "file_format"]


class WeightsError(ValueError):
    """A weights file is not in a format minigrad reads, or holds something it refuses to load."""


# torch's storage classes and dtypes as they are named in a pickle -> NumPy dtype ("bfloat16" is widened).
_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool",
}
_DTYPES = {"float32": "float32", "float": "float32", "float64": "float64", "double": "float64",
           "float16": "float16", "half": "float16", "bfloat16": "bfloat16", "int64": "int64", "long": "int64",
           "int32": "int32", "int": "int32", "int16": "int16", "short": "int16", "int8": "int8", "uint8": "uint8",
           "bool": "bool"}


class _DType(str):
    """A torch storage class or dtype named in a pickle, standing for a NumPy dtype name."""


def _numpy(buf: bytes, dtype: str, little: bool) -> np.ndarray:
    if dtype == "bfloat16":
        # bfloat16 is the top half of a float32: widen exactly (minigrad has no bfloat16).
        raw = np.frombuffer(buf, dtype="<u2" if little else ">u2").astype(np.uint32) << 16
        return raw.view(np.float32)
    dt = np.dtype(dtype).newbyteorder("<" if little else ">")
    return np.frombuffer(buf, dtype=dt).astype(np.dtype(dtype), copy=False)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    if not isinstance(storage, np.ndarray):
        raise WeightsError("corrupted .pt file: a tensor refers to something that is not a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size + stride) or storage_offset < 0:
        raise WeightsError(f"corrupted .pt file: tensor of size {size} with stride {stride}")
    if all(size):
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:
            raise WeightsError(f"corrupted .pt file: a tensor of size {size} reads past its storage of "
                               f"{storage.size} elements")
    base = storage[storage_offset:] if storage.size else storage
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(base, shape=size, strides=tuple(s * item for s in stride))
    return make_tensor(np.array(view, order="C"), get_backend("cpu"), False)


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, *rest):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a PyTorch ``data.pkl``, allowing only tensors and plain containers."""

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch", "Size"): tuple,
    }

    def __init__(self, file, archive, prefix, little):
        super().__init__(file)
        self.archive, self.prefix, self.little = archive, prefix, little
        self.storages = {}

    def find_class(self, module, name):
        allowed = self._ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and name in _STORAGES:
            return _DType(_STORAGES[name])
        if module == "torch" and name in _DTYPES:
            return _DType(_DTYPES[name])
        raise WeightsError(f"refusing to load {module}.{name} from a .pt file: only tensors, numbers, strings and "
                           f"containers are allowed (a pickle can run arbitrary code)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _DType)):
            raise WeightsError(f"unsupported persistent id in .pt file: {pid!r:.80}")
        _, dtype, key, _location, numel = pid
        if key not in self.storages:
            name = f"{self.prefix}data/{key}"
            try:
                buf = self.archive.read(name)
            except KeyError:
                raise WeightsError(f"corrupted .pt file: storage {key!r} is missing") from None
            arr = _numpy(buf, str(dtype), self.little)
            if arr.size < int(numel):
                raise WeightsError(f"corrupted .pt file: storage {key!r} has {arr.size} elements, "
                                   f"{numel} expected")
            self.storages[key] = arr
        return self.storages[key]


def file_format(path) -> str | None:
    """``"pt"`` for a PyTorch zip checkpoint, ``"safetensors"``, or None (say, a minigrad checkpoint)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:8] and len(head) >= 9 and head[8:9] == b"{" and not zipfile.is_zipfile(path):
        return "safetensors"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if any(n.endswith("data.pkl") and n.count("/") == 1 for n in zf.namelist()):
                return "pt"
    return None


def _to_device(obj, device):
    if device is None or str(device) == "cpu":
        return obj
    if isinstance(obj, TensorBase):
        return obj.to(device)
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        out.update((k, _to_device(v, device)) for k, v in obj.items())
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def load_pt(path, device=None):
    """Read a ``torch.save`` file (zip format) without PyTorch; tensors become minigrad Tensors on ``device``.

    Raises ``WeightsError`` for a legacy (pre-1.6) or TorchScript file, a
    truncated or corrupted archive, or a pickle that names anything but
    tensors and containers (e.g. a whole pickled ``nn.Module``: save its
    ``state_dict()`` instead).
    """
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise WeightsError(f"{path!r} is not a PyTorch zip checkpoint (files written by torch.save since PyTorch "
                           f"1.6); re-save it with torch.save(obj, path) from a recent PyTorch")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if not pkl:
                kind = "a TorchScript archive" if any(n.endswith("constants.pkl") for n in names) else "not one"
                raise WeightsError(f"{path!r} is {kind}: expected a torch.save checkpoint with <name>/data.pkl")
            prefix = pkl[0][: -len("data.pkl")]
            little = True
            if f"{prefix}byteorder" in names:
                little = zf.read(f"{prefix}byteorder").strip() == b"little"
            unpickler = _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), zf, prefix, little)
            obj = unpickler.load()
    except WeightsError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError) as exc:
        raise WeightsError(f"{path!r}: corrupted PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    return _to_device(obj, device)


def load_safetensors(path, device=None) -> dict:
    """Read a ``.safetensors`` file into a dict of minigrad Tensors on ``device`` (needs ``safetensors``)."""
    from safetensors.numpy import load_file

    try:
        import ml_dtypes  # noqa: F401 -- teaches NumPy the name "bfloat16", which such files may use
    except ImportError:
        pass
    try:
        arrays = load_file(os.fspath(path))
    except TypeError as exc:
        raise WeightsError(f"{os.fspath(path)!r}: {exc} (bfloat16 tensors need the ml_dtypes package)") from None
    cpu = get_backend("cpu")
    out = {}
    for key, arr in arrays.items():
        if arr.dtype.name == "bfloat16":  # minigrad has no bfloat16: widen exactly
            arr = arr.astype(np.float32)
        out[key] = make_tensor(np.ascontiguousarray(arr) if arr.ndim else np.array(arr), cpu)
    return _to_device(out, device)


def save_safetensors(tensors, path, metadata=None) -> None:
    """Write a dict of Tensors (a ``state_dict()``) to a ``.safetensors`` file (needs ``safetensors``).

    ``metadata`` is an optional dict of strings stored in the header.
    """
    from safetensors.numpy import save_file

    if not hasattr(tensors, "items"):
        raise TypeError(f"save_safetensors expects a dict of Tensors, got {type(tensors).__name__}")
    arrays = {}
    for key, t in tensors.items():
        if not isinstance(key, str):
            raise TypeError(f"save_safetensors: keys must be strings, got {key!r}")
        host = t.backend.to_numpy(t.array) if isinstance(t, TensorBase) else np.asarray(t)
        arrays[key] = np.array(host, order="C")
    save_file(arrays, os.fspath(path), metadata=metadata)
