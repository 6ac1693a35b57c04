"""``save``/``load``: checkpoints of state dicts in a NumPy-based format.

A checkpoint is a ``.npz`` (zip, stored) archive holding one ``.npy`` member
per array and a ``__minigrad__.json`` member: JSON describing the nested
structure (dicts, lists, tuples, numbers, strings, None, Tensors, arrays),
a format version and the dtype, shape and SHA-256 of every array.

Writing behaves like writing the file in place, but atomically: the data
goes to a temporary file next to the target (``.<name>.tmp-<random>``),
is flushed to disk, then renamed over the target, so a crash mid-write
leaves any old file intact. The new file gets the permission bits an
ordinary ``open(path, "w")`` would give it (the old file's, or
``0o666`` less the umask), and a symlink is written through to its target
(the link stays). While it writes, a save holds an exclusive ``flock`` on
its temporary; a later save of the same target removes the temporaries
nobody holds (left by a process that was killed), so they never pile up
(on systems without ``fcntl`` they are left alone).

Reading checks the header, every member against it (storage, size, dtype,
shape before anything is allocated), the zip CRCs, every digest and every
reference before returning anything: a truncated, corrupted, hand-edited
or foreign file raises ``CheckpointError``, never another exception and
never wrong data.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import stat
import zipfile

import numpy as np

from ._dtypes import is_floating
from ._ext._engine import TensorBase, make_tensor
from .backends import backend_of, get_backend, to_host

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so temporaries are never cleaned up by others
    fcntl = None

__all__ = ["save", "load", "CheckpointError"]

_MAGIC = "minigrad-checkpoint"
_VERSION = 1
_HEADER = "__minigrad__.json"
# The dtypes an array member may have: numbers and booleans (never objects).
_ARRAY_KINDS = "biufc"


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupted, hand-edited into nonsense or not a minigrad checkpoint."""


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(_c_order(arr).tobytes()).hexdigest()


def _c_order(arr) -> np.ndarray:
    """A C-contiguous host array of the same shape (``np.ascontiguousarray`` would make a 0-d array 1-d)."""
    return np.require(arr, requirements="C")


# ---------------------------------------------------------------- writing
def _encode(obj, arrays: list):
    if isinstance(obj, TensorBase):
        arr = _c_order(obj.backend.to_numpy(obj.array))
        arrays.append(arr)
        return {"__tensor__": len(arrays) - 1, "requires_grad": bool(obj.requires_grad)}
    if isinstance(obj, np.ndarray) or backend_of(obj) is not None:
        arr = _c_order(to_host(obj))
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

    The write is atomic (either the new file is complete or the old one
    stays), keeps the permission bits of a file it replaces (a new file
    gets ``0o666`` less the umask), and writes through a symlink to its
    target. Temporaries of killed saves of the same target are removed.

    Example::

        minigrad.save(model.state_dict(), "model.npz")
        model.load_state_dict(minigrad.load("model.npz"))
    """
    arrays: list[np.ndarray] = []
    tree = _encode(obj, arrays)
    header = {
        "magic": _MAGIC,
        "version": _VERSION,
        "tree": tree,
        "arrays": [{"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _digest(a)} for a in arrays],
    }
    target = os.path.realpath(os.fspath(path))  # through symlinks, as open(path, "w") would write
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    _remove_abandoned_temporaries(target)
    fd, tmp = _locked_temporary(target)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr(_HEADER, json.dumps(header))
                for i, a in enumerate(arrays):
                    # Streamed into the archive (no second copy in memory); zip64 only where needed.
                    with zf.open(f"a{i}.npy", "w", force_zip64=a.nbytes >= zipfile.ZIP64_LIMIT - 65536) as member:
                        np.lib.format.write_array(member, a, allow_pickle=False)
            f.flush()
            os.fsync(fd)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)  # after the rename: releases the lock
    _sync_directory(directory)


def _temporary_pattern(target):
    return re.compile(r"\." + re.escape(os.path.basename(target)) + r"\.tmp-[0-9a-f]{16}\Z")


def _locked_temporary(target):
    """Create, with the permission bits the target would get, and lock a fresh temporary next to it."""
    directory, base = os.path.split(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None  # a new file: 0o666 less the umask, which os.open applies
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(directory, f".{base}.tmp-{secrets.token_hex(8)}")
        fd = os.open(tmp, flags, 0o666)
        try:
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            elif mode is not None:
                os.chmod(tmp, mode)
            if fcntl is None:
                return fd, tmp
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A cleaner may have removed the file between its creation and the lock: then take another.
            if os.path.samestat(os.fstat(fd), os.stat(tmp)):
                return fd, tmp
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        os.close(fd)


def _remove_abandoned_temporaries(target):
    """Delete the temporaries of earlier saves of ``target`` that no process holds (killed saves)."""
    if fcntl is None:
        return
    directory = os.path.dirname(target)
    pattern = _temporary_pattern(target)
    try:
        entries = [e for e in os.scandir(directory) if pattern.match(e.name)]
    except OSError:
        return
    for entry in entries:
        try:
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: a save in progress
            if os.path.samestat(os.fstat(fd), os.stat(entry.path, follow_symlinks=False)):
                os.unlink(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _sync_directory(directory):
    """Make the rename durable (a no-op where directories cannot be opened or synced)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading
def load(path, device=None):
    """Read a checkpoint written by ``save`` (or a PyTorch ``.pt``/``.safetensors`` file, see
    ``minigrad.utils.weights``); tensors are placed on ``device`` (default: CPU).

    Raises ``FileNotFoundError`` (or another ``OSError``) if the file cannot
    be opened and ``CheckpointError`` if it is truncated, corrupted,
    hand-edited or not a minigrad checkpoint.

    Example::

        state = minigrad.load("model.npz", device="cpu")
    """
    path = os.fspath(path)
    backend = get_backend(device if device is not None else "cpu")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    from .utils import weights  # PyTorch .pt and .safetensors files load too, recognised by content

    with open(path, "rb") as f:
        try:
            foreign = weights.file_format(path)
            if foreign is None:
                header, arrays = _read(f, os.fstat(f.fileno()).st_size)
                return _decode(header["tree"], arrays, backend)
        except CheckpointError as exc:
            raise CheckpointError(f"{path!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - anything a damaged file provokes is the documented error
            raise CheckpointError(f"{path!r} is corrupted or not a minigrad checkpoint "
                                  f"({type(exc).__name__}: {exc})") from exc
    return weights.load_pt(path, device) if foreign == "pt" else weights.load_safetensors(path, device)


def _read(f, file_size):
    try:
        zf = zipfile.ZipFile(f, "r")
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"not a minigrad checkpoint or truncated ({exc})") from None
    with zf:
        members = {info.filename: info for info in zf.infolist()}
        if _HEADER not in members:
            raise CheckpointError(f"not a minigrad checkpoint (no {_HEADER} member)")
        header = json.loads(_member_bytes(zf, members[_HEADER], file_size))
        _check_header(header)
        arrays = []
        for i, meta in enumerate(header["arrays"]):
            info = members.get(f"a{i}.npy")
            if info is None:
                raise CheckpointError(f"truncated: array {i} of {len(header['arrays'])} is missing")
            arrays.append(_read_array(zf, info, meta, i, file_size))
        _check_refs(header["tree"], len(arrays))
        return header, arrays


def _check_member(info, file_size):
    """A member as ``save`` writes it: stored (not compressed, not encrypted), no larger than the file."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        raise CheckpointError(f"member {info.filename!r} is compressed or encrypted; save never writes that")
    if not 0 <= info.file_size == info.compress_size <= file_size:
        raise CheckpointError(f"member {info.filename!r} claims {info.file_size} bytes in a {file_size}-byte file")


def _member_bytes(zf, info, file_size):
    _check_member(info, file_size)
    return zf.read(info)  # checks the CRC


def _check_header(header):
    if not isinstance(header, dict) or header.get("magic") != _MAGIC:
        raise CheckpointError("not a minigrad checkpoint")
    if header.get("version") != _VERSION:
        raise CheckpointError(f"has checkpoint format version {header.get('version')!r}, this minigrad reads "
                              f"{_VERSION}")
    metas = header.get("arrays")
    if not isinstance(metas, list) or "tree" not in header:
        raise CheckpointError("the header has no array list or no tree")
    for i, meta in enumerate(metas):
        if not (isinstance(meta, dict) and isinstance(meta.get("dtype"), str) and isinstance(meta.get("sha256"), str)
                and isinstance(meta.get("shape"), list)
                and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in meta["shape"])):
            raise CheckpointError(f"the header's entry for array {i} is malformed: {meta!r}")


def _read_array(zf, info, meta, i, file_size):
    """Array ``i``, checked against its header entry before its memory is allocated."""
    _check_member(info, file_size)
    with zf.open(info) as member:  # reading to the end checks the CRC
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise CheckpointError(f"array {i} has .npy format version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(member, max_header_size=10_000)
        if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or fortran:
            raise CheckpointError(f"array {i} has dtype {dtype} (order {'F' if fortran else 'C'}), which save "
                                  f"never writes")
        if dtype.str != meta["dtype"] or list(shape) != meta["shape"]:
            raise CheckpointError(f"array {i} is {dtype.str} {list(shape)} but the header says "
                                  f"{meta['dtype']} {meta['shape']}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != info.file_size - member.tell():
            raise CheckpointError(f"array {i} should hold {nbytes} bytes, its member has "
                                  f"{info.file_size - member.tell()}")
        arr = np.empty(shape, dtype=dtype)
        if nbytes and member.readinto(memoryview(arr.reshape(-1).view(np.uint8))) != nbytes:
            raise CheckpointError(f"truncated: array {i} is short")
        if member.read(1):
            raise CheckpointError(f"array {i} has trailing bytes")
    if _digest(arr) != meta["sha256"]:
        raise CheckpointError(f"array {i} does not match its recorded checksum")
    return arr


def _decode(node, arrays, backend):
    if isinstance(node, dict):
        if "__tensor__" in node:
            arr = arrays[node["__tensor__"]]
            return make_tensor(backend.asarray(arr), backend,
                               node.get("requires_grad", False) is True and is_floating(arr.dtype))
        if "__array__" in node:
            return arrays[node["__array__"]]
        if "__dict__" in node:
            return {_key(k, str): _decode(v, arrays, backend) for k, v in node["__dict__"]}
        if "__intdict__" in node:
            return {_key(k, int): _decode(v, arrays, backend) for k, v in node["__intdict__"]}
        if "__list__" in node:
            return [_decode(v, arrays, backend) for v in _node_list(node["__list__"])]
        if "__tuple__" in node:
            return tuple(_decode(v, arrays, backend) for v in _node_list(node["__tuple__"]))
        if "__scalar__" in node:
            dtype = np.dtype(node["dtype"])
            if dtype.kind not in _ARRAY_KINDS:
                raise CheckpointError(f"a scalar of dtype {dtype} in the tree, which save never writes")
            return dtype.type(node["__scalar__"])
        raise CheckpointError(f"unknown node in checkpoint structure: {sorted(node)}")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise CheckpointError(f"a {type(node).__name__} in the tree where a node was expected")


def _node_list(value):
    if not isinstance(value, list):
        raise CheckpointError(f"a {type(value).__name__} where the tree has a list")
    return value


def _key(key, kind):
    if type(key) is not kind:
        raise CheckpointError(f"a dict key {key!r} where the tree has {kind.__name__} keys")
    return key


def _check_refs(node, n):
    if isinstance(node, dict):
        for key in ("__tensor__", "__array__"):
            if key in node and not (type(node[key]) is int and 0 <= node[key] < n):
                raise CheckpointError(f"refers to array {node[key]!r}, but it holds {n}")
        for v in node.values():
            _check_refs(v, n)
    elif isinstance(node, list):
        for v in node:
            _check_refs(v, n)
