"""minigrad.distributed in one process: optional engines, errors before init, and the NCCL group's logic.

The NCCL group cannot run without a GPU; here it runs against a stand-in
``cupy`` whose NCCL communicator records each call and acts on host
memory through the array's ``__cuda_array_interface__`` pointer, so the
unique-id exchange, device choice, dtype/op mapping and the dispatch of
device and host arrays are checked everywhere.
"""

import ctypes
import subprocess
import sys
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest

import minigrad
import minigrad.distributed as dist
from minigrad.device import Device
from minigrad.distributed.nccl import NCCLProcessGroup


def test_import_minigrad_does_not_need_mpi4py():
    code = (
        "import sys; sys.modules['mpi4py'] = None\n"  # as if mpi4py were not installed
        "import minigrad, minigrad.distributed as dist\n"
        "from minigrad.nn.parallel import DistributedDataParallel\n"
        "assert not dist.is_mpi_available() and not dist.is_initialized()\n"
        "try:\n"
        "    dist.init_process_group()\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'minigrad-bn[distributed]'" in out.stdout


def test_before_init_everything_says_what_to_do():
    assert not dist.is_initialized() and dist.is_available()
    for call in (dist.get_rank, dist.get_world_size, dist.get_backend, dist.barrier, dist.destroy_process_group,
                 lambda: dist.all_reduce(minigrad.ones(2))):
        with pytest.raises(dist.DistributedError, match="init_process_group"):
            call()
    with pytest.raises(ValueError, match="unknown backend 'gloo'"):
        dist.init_process_group("gloo")
    with pytest.raises(TypeError, match="ProcessGroup"):
        dist.get_rank(group="world")


def test_work_runs_its_finish_steps_once_in_order():
    steps = []
    work = dist.Work(None, lambda: steps.append("finish")).then(lambda: steps.append("then"))
    assert work.is_completed() and work.wait()
    work.then(lambda: steps.append("late"))
    assert steps == ["finish", "then", "late"]


# ----------------------------------------------------------- a stand-in for CuPy's NCCL
class DeviceArray(np.ndarray):
    """A host array that presents itself as a CUDA array (what NCCL receives is its pointer)."""

    @property
    def __cuda_array_interface__(self):
        return {"data": (self.ctypes.data, False), "shape": self.shape, "typestr": self.dtype.str, "version": 3}


def on_device(values, dtype="float64"):
    return np.ascontiguousarray(values, dtype=dtype).view(DeviceArray)


class FakeCommunicator:
    """NCCL of ``world`` identical ranks: a sum multiplies by ``world``, max/min change nothing."""

    def __init__(self, nccl, ndev, uid, rank):
        self.nccl, self.world = nccl, ndev
        nccl.calls.append(("NcclCommunicator", ndev, uid, rank, nccl.current_device))

    def _view(self, ptr, count, dtype):
        ctype = {self.nccl.NCCL_FLOAT32: ctypes.c_float, self.nccl.NCCL_FLOAT64: ctypes.c_double,
                 self.nccl.NCCL_INT32: ctypes.c_int32, self.nccl.NCCL_INT64: ctypes.c_int64}[dtype]
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctype)), shape=(count,))

    def allReduce(self, send, recv, count, dtype, op, stream):
        self.nccl.calls.append(("allReduce", count, dtype, op, stream, send == recv))
        if op == self.nccl.NCCL_SUM:
            self._view(recv, count, dtype)[...] = self._view(send, count, dtype) * self.world

    def bcast(self, buf, count, dtype, root, stream):
        self.nccl.calls.append(("bcast", count, dtype, root, stream))

    def allGather(self, send, recv, count, dtype, stream):
        self.nccl.calls.append(("allGather", count, dtype, stream))
        src = self._view(send, count, dtype).copy()
        self._view(recv, count * self.world, dtype)[...] = np.tile(src, self.world)

    def destroy(self):
        self.nccl.calls.append(("destroy",))


def fake_cupy(device_count=2):
    nccl = SimpleNamespace(NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_INT32=2, NCCL_INT64=4, NCCL_SUM=0, NCCL_PROD=1,
                           NCCL_MAX=2, NCCL_MIN=3, calls=[], current_device=None)
    nccl.get_unique_id = lambda: (11, 22, 33)
    nccl.NcclCommunicator = lambda ndev, uid, rank: FakeCommunicator(nccl, ndev, uid, rank)

    @contextmanager
    def device(index):
        nccl.current_device = index
        yield
        nccl.current_device = None

    stream = SimpleNamespace(ptr=4242, synchronize=lambda: nccl.calls.append(("synchronize",)))
    cuda = SimpleNamespace(nccl=nccl, Device=device, runtime=SimpleNamespace(getDeviceCount=lambda: device_count),
                           get_current_stream=lambda: stream)
    return SimpleNamespace(cuda=cuda)


class HostGroup(dist.ProcessGroup):
    """The MPI side: ``size`` ranks that all behave like this one; records what it is asked."""

    backend = "mpi"

    def __init__(self, size=2, rank=0):
        self.size, self.rank, self.calls = size, rank, []

    def allgather_object(self, obj):
        self.calls.append(("allgather_object", obj))
        return [obj] * self.size

    def allreduce(self, array, op, backend, async_op=True):
        self.calls.append(("allreduce", op))
        return dist.Work.completed()

    def barrier(self):
        self.calls.append(("barrier",))

    def destroy(self):
        self.calls.append(("destroy",))


CUDA0 = SimpleNamespace(device=Device("cuda:0"))


def nccl_group(size=2, rank=0, device=None, monkeypatch=None, local_rank=None):
    if local_rank is not None:
        monkeypatch.setenv("MPI_LOCALRANKID", str(local_rank))
        monkeypatch.setenv("MPI_LOCALNRANKS", "4")
    cupy = fake_cupy()
    host = HostGroup(size, rank)
    return NCCLProcessGroup(host, device, cupy=cupy), host, cupy.cuda.nccl


def test_nccl_unique_id_comes_from_rank_0_over_mpi():
    group, host, nccl = nccl_group(size=3, rank=0)
    assert host.calls == [("allgather_object", (11, 22, 33))]
    assert nccl.calls == [("NcclCommunicator", 3, (11, 22, 33), 0, 0)]
    group, host, nccl = nccl_group(size=3, rank=2)
    assert host.calls == [("allgather_object", None)]  # only rank 0 creates the id


def test_nccl_device_is_the_local_rank_modulo_the_gpus(monkeypatch):
    group, _, nccl = nccl_group(monkeypatch=monkeypatch, local_rank=3)
    assert group.device_index == 1 and nccl.calls[0][-1] == 1
    assert nccl_group(device="cuda:1")[0].device_index == 1
    with pytest.raises(dist.DistributedError, match="does not exist"):
        nccl_group(device=5)
    with pytest.raises(dist.DistributedError, match="needs a CUDA device"):
        nccl_group(device="cpu")


def test_nccl_reduces_device_arrays_on_the_current_stream():
    group, host, nccl = nccl_group(size=2)
    a = on_device([1.0, 2.0, 3.0])
    work = group.allreduce(a, dist.ReduceOp.SUM, CUDA0)
    assert work.is_completed()
    np.testing.assert_array_equal(a, [2.0, 4.0, 6.0])
    assert nccl.calls[-1] == ("allReduce", 3, nccl.NCCL_FLOAT64, nccl.NCCL_SUM, 4242, True)
    b = on_device([1, 2], dtype="float32")
    group.allreduce(b, dist.ReduceOp.AVG, CUDA0).wait()  # a sum, then divided by the world size
    np.testing.assert_array_equal(b, [1.0, 2.0])
    assert nccl.calls[-1][2:4] == (nccl.NCCL_FLOAT32, nccl.NCCL_SUM)
    group.allreduce(on_device([1, 2], dtype="int64"), dist.ReduceOp.MAX, CUDA0)
    assert nccl.calls[-1][2:4] == (nccl.NCCL_INT64, nccl.NCCL_MAX)
    group.broadcast(on_device([5.0]), 1, CUDA0)
    assert nccl.calls[-1] == ("bcast", 1, nccl.NCCL_FLOAT64, 1, 4242)
    out = on_device(np.zeros((2, 2)))
    group.allgather(on_device([7.0, 8.0]), out, CUDA0)
    np.testing.assert_array_equal(out, [[7.0, 8.0], [7.0, 8.0]])
    assert host.calls == [("allgather_object", (11, 22, 33))], "device arrays never go over MPI"


def test_nccl_sends_host_arrays_over_mpi_and_checks_devices():
    group, host, nccl = nccl_group()
    n = len(nccl.calls)
    group.allreduce(np.ones(3), dist.ReduceOp.SUM, SimpleNamespace(device=Device("cpu")))
    assert host.calls[-1] == ("allreduce", dist.ReduceOp.SUM) and len(nccl.calls) == n
    with pytest.raises(dist.DistributedError, match="cuda:1.*communicator is on cuda:0"):
        group.allreduce(on_device([1.0]), dist.ReduceOp.SUM, SimpleNamespace(device=Device("cuda:1")))
    with pytest.raises(dist.DistributedError, match="float16"):
        group.allreduce(on_device([1.0], dtype="float16"), dist.ReduceOp.SUM, CUDA0)
    group.barrier()
    assert nccl.calls[-1] == ("synchronize",) and host.calls[-1] == ("barrier",)
    group.destroy()
    assert nccl.calls[-1] == ("destroy",) and host.calls[-1] == ("destroy",)


def test_nccl_without_cupy_says_what_to_install():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    with pytest.raises(dist.DistributedError, match=r"minigrad-bn\[cuda\].*backend='mpi'"):
        NCCLProcessGroup(HostGroup())
