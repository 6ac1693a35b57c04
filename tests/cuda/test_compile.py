"""The CUDA sources compile, for every instantiation, without a GPU.

* nvcc: each kernel file, as the exact text the backend hands to NVRTC
  (headers inlined), is compiled to PTX for sm_80 with every name
  expression instantiated; every kernel<float>/<double> (and
  <__half>/<__nv_bfloat16> of the normalization files) must appear as an
  entry. A second pass through ptxas checks that no kernel spills to local
  memory and that static shared memory fits in 48 KiB. Skipped without nvcc.
* NVRTC (the compiler CuPy uses): where libnvrtc and the CUDA headers
  (cuda_fp16.h, which CuPy puts on NVRTC's include path) can be found, the
  sources are compiled with the backend's options and name expressions,
  and every name expression must resolve to a lowered (mangled) name,
  exactly as ``cupy.RawModule.get_function`` will ask. Skipped without them.
* The kernel table of the Python side (``KERNEL_FILES``), the templates in
  the sources and the names the wrappers launch cannot drift apart.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from minigrad.backends import cuda_backend, cuda_launch
from minigrad._dtypes import bfloat16
from minigrad.backends.cuda_launch import (COMPILE_OPTIONS, KERNEL_FILES, file_types, kernel_source,
                                           name_expressions)

KERNEL_DIR = Path(cuda_launch.__file__).resolve().parent / "kernels"
NVCC = shutil.which("nvcc") or next(iter(glob.glob("/usr/local/cuda*/bin/nvcc")), None)
TEMPLATE = re.compile(
    r"template\s*<\s*typename\s+T\s*>\s*__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s*)?(\w+)\s*\("
)
ANY_KERNEL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s*)?(\w+)\s*\(")
FILES = sorted(KERNEL_FILES)


def mangled_fragment(expr: str) -> str:
    """Itanium mangling of ``name<float>`` contains ``<len>name`` + ``IfE`` (``IdE`` for double, a class
    type such as ``__half`` as ``I6__halfE``)."""
    name, t = re.fullmatch(r"(\w+)<(\w+)>", expr).groups()
    arg = {"float": "f", "double": "d"}.get(t, f"{len(t)}{t}")
    return f"{len(name)}{name}I{arg}E"


# ------------------------------------------------------------ no drift
def test_kernel_table_matches_the_sources():
    on_disk = sorted(p.name for p in KERNEL_DIR.glob("*.cu"))
    assert on_disk == FILES, "every kernels/*.cu must be listed in KERNEL_FILES (and vice versa)"
    for f in FILES:
        text = (KERNEL_DIR / f).read_text()
        templates = TEMPLATE.findall(text)
        assert sorted(templates) == sorted(KERNEL_FILES[f]), f
        # Every kernel is a template over exactly T (no float/double copies, no extra parameters).
        assert sorted(ANY_KERNEL.findall(text)) == sorted(templates), f"{f}: a kernel that is not template<T>"


def test_launched_names_are_in_the_table():
    source = Path(cuda_backend.__file__).read_text()
    launched = set(re.findall(r'\.(?:launch|flat|rows|per_channel|_window_kernel)\(\s*"(\w+)"', source))
    for kind in set(re.findall(r'\.channel_partials\(\s*"(\w+)"', source)):  # the two layouts' kernels
        launched |= set(cuda_launch.Launcher._REDUCTIONS[kind][:2])
    table = {k for ks in KERNEL_FILES.values() for k in ks}
    assert launched, "no launches found: the pattern is stale"
    assert launched <= table, launched - table
    assert table <= launched, f"kernels in the table that no wrapper launches: {table - launched}"


# The only headers left for the compiler to find: CUDA's half types, which CuPy puts on NVRTC's include path.
CUDA_HEADERS = {"cuda_fp16.h", "cuda_bf16.h"}


def test_headers_are_inlined_for_nvrtc():
    for f in FILES:
        src = kernel_source(f)
        left = re.findall(r"^\s*#\s*include\s*(\S+)", src, re.MULTILINE)
        assert {h.strip("<>") for h in left} <= CUDA_HEADERS, f"{f}: local headers must be inlined, got {left}"
        assert all(h.startswith("<") for h in left), f"{f}: {left}"
        assert src.count("MINIGRAD_KERNELS_COMMON_CUH") == 3  # the guard, inlined once


# ---------------------------------------------------------------- nvcc
requires_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (CUDA toolkit not installed)")


def _instantiating_unit(f: str) -> str:
    refs = "\n".join(f"    (void*)&{expr}," for expr in name_expressions(f))
    return f"{kernel_source(f)}\n// Taking the addresses instantiates every template.\nvoid* mg_instantiate[] = {{\n{refs}\n}};\n"


@requires_nvcc
@pytest.mark.parametrize("f", FILES)
def test_nvcc_compiles_every_instantiation_to_ptx(f, tmp_path):
    unit = tmp_path / f"{Path(f).stem}_all.cu"
    unit.write_text(_instantiating_unit(f))
    ptx = tmp_path / "out.ptx"
    cmd = [NVCC, "-ptx", "-arch=sm_80", *COMPILE_OPTIONS, "-Werror=all-warnings", str(unit), "-o", str(ptx)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    entries = re.findall(r"\.entry\s+(\S+?)\(", ptx.read_text())
    assert len(entries) == len(name_expressions(f)), entries
    for expr in name_expressions(f):
        assert any(mangled_fragment(expr) in e for e in entries), f"{expr} missing from the PTX entries {entries}"


@requires_nvcc
@pytest.mark.parametrize("f", FILES)
def test_ptxas_resources(f, tmp_path):
    """No register spills or local-memory arrays; static shared memory under 48 KiB."""
    unit = tmp_path / f"{Path(f).stem}_all.cu"
    unit.write_text(_instantiating_unit(f))
    cmd = [NVCC, "-cubin", "-arch=sm_80", *COMPILE_OPTIONS, "-Xptxas", "-v", str(unit), "-o",
           str(tmp_path / "out.cubin")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    report = res.stderr
    functions = re.split(r"Compiling entry function", report)[1:]
    assert len(functions) == len(name_expressions(f))
    for block in functions:
        name = block.split("'")[1]
        frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", block)
        assert frame and frame.groups() == ("0", "0", "0"), f"{name}: {frame.group(0) if frame else block}"
        smem = re.search(r"(\d+) bytes smem", block)
        assert smem is None or int(smem.group(1)) <= 48 * 1024, name
        regs = int(re.search(r"Used (\d+) registers", block).group(1))
        assert regs <= 255, name


# --------------------------------------------------------------- NVRTC
def _find_nvrtc() -> "str | None":
    candidates = [os.environ.get("MINIGRAD_NVRTC")]
    for root in filter(None, [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]):
        candidates += sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")))
    try:  # pip's nvidia-cuda-nvrtc(-cu12) wheels
        import nvidia  # type: ignore

        for base in nvidia.__path__:
            candidates += sorted(glob.glob(os.path.join(base, "cu*", "lib", "libnvrtc.so*")))
            candidates += sorted(glob.glob(os.path.join(base, "cuda_nvrtc", "lib", "libnvrtc.so*")))
    except ImportError:
        pass
    found = ctypes.util.find_library("nvrtc")
    candidates.append(found)
    for c in candidates:
        if c and "builtins" not in c and "alt" not in os.path.basename(c):
            try:
                ctypes.CDLL(c)
            except OSError:
                continue
            return c
    return None


NVRTC = _find_nvrtc()


def _find_cuda_include() -> "str | None":
    """A directory holding cuda_fp16.h, as CuPy would find one (CUDA_PATH, the toolkit, nvcc's, a wheel's)."""
    roots = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    if NVCC:
        roots.append(str(Path(NVCC).resolve().parent.parent))
    dirs = [os.path.join(r, "include") for r in roots if r]
    try:  # pip's nvidia-cuda-runtime wheels (CuPy's [ctk] extra)
        import nvidia  # type: ignore

        for base in nvidia.__path__:
            dirs += sorted(glob.glob(os.path.join(base, "cu*", "include"))) + sorted(
                glob.glob(os.path.join(base, "cuda_runtime", "include")))
    except ImportError:
        pass
    return next((d for d in dirs if os.path.isfile(os.path.join(d, "cuda_fp16.h"))), None)


CUDA_INCLUDE = _find_cuda_include()
requires_nvrtc = pytest.mark.skipif(
    NVRTC is None or CUDA_INCLUDE is None,
    reason="libnvrtc or the CUDA headers not found (set MINIGRAD_NVRTC / CUDA_PATH, or pip install "
           "nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12)")
NVRTC_OPTIONS = [*COMPILE_OPTIONS, "-arch=compute_80", f"-I{CUDA_INCLUDE}"]


class _Nvrtc:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def check(self, rc, what):
        if rc != 0:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(rc).decode()}")

    def compile(self, src: str, options, names):
        prog = ctypes.c_void_p()
        self.check(self.lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"minigrad.cu", 0, None, None),
                   "nvrtcCreateProgram")
        try:
            for n in names:
                self.check(self.lib.nvrtcAddNameExpression(prog, n.encode()), "nvrtcAddNameExpression")
            opts = [o.encode() for o in options]
            argv = (ctypes.c_char_p * len(opts))(*opts)
            rc = self.lib.nvrtcCompileProgram(prog, len(opts), argv)
            size = ctypes.c_size_t()
            self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            self.lib.nvrtcGetProgramLog(prog, log)
            if rc != 0:
                raise AssertionError(f"NVRTC failed:\n{log.value.decode(errors='replace')}")
            lowered = {}
            for n in names:
                out = ctypes.c_char_p()
                self.check(self.lib.nvrtcGetLoweredName(prog, n.encode(), ctypes.byref(out)), f"lowered name of {n}")
                lowered[n] = out.value.decode()
            return lowered, log.value.decode(errors="replace")
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


@requires_nvrtc
@pytest.mark.parametrize("f", FILES)
def test_nvrtc_resolves_every_name_expression(f):
    nvrtc = _Nvrtc(NVRTC)
    names = name_expressions(f)
    lowered, log = nvrtc.compile(kernel_source(f), NVRTC_OPTIONS, names)
    assert "warning" not in log.lower(), log
    for n in names:
        assert mangled_fragment(n) in lowered[n], (n, lowered[n])


@requires_nvrtc
def test_nvrtc_compiles_the_availability_probe():
    """The kernel ``is_available()`` compiles and runs, compiled as the backend compiles it."""
    lowered, log = _Nvrtc(NVRTC).compile(kernel_source("common.cuh") + cuda_launch._PROBE_SOURCE,
                                         NVRTC_OPTIONS, [cuda_launch._PROBE_KERNEL])
    assert "warning" not in log.lower(), log
    assert mangled_fragment(cuda_launch._PROBE_KERNEL) in lowered[cuda_launch._PROBE_KERNEL]


def test_name_expressions_cover_every_dtype():
    """float and double everywhere; the normalization kernels also take float16 (and bfloat16 with ml_dtypes)."""
    half = {"__half"} | ({"__nv_bfloat16"} if bfloat16 is not None else set())
    for f in FILES:
        names = name_expressions(f)
        types = {"float", "double"} | (half if f in ("batchnorm.cu", "groupnorm.cu") else set())
        assert len(names) == len(types) * len(KERNEL_FILES[f])
        assert {n.split("<")[1][:-1] for n in names} == types
        assert set(file_types(f).values()) == types
    assert set(cuda_launch.C_TYPES) == {np.dtype(np.float32), np.dtype(np.float64)}
