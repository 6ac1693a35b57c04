"""The normalization kernels of every backend (and both CPU builds) against the reference in base.py.

Random inputs, float32 and float64, with and without γ/β, S = 1 and S > 1,
contiguous and non-contiguous views, serial and multithreaded paths.
"""

from __future__ import annotations

import importlib
import pathlib

import numpy as np
import pytest

from minigrad.backends import Backend, get_backend
from minigrad._ext import _parallel
from minigrad.backends import cpu as cpu_backend

REFERENCE = Backend("cpu")  # the NumPy reference implementation itself


def _norm_builds():
    """Every build of the kernels this processor runs (a build it cannot run refuses to import)."""
    builds = []
    for name in ("baseline", "avx2", "avx512"):
        try:
            module = importlib.import_module("minigrad._ext._kernels" + ("" if name == "baseline" else f"_{name}"))
        except ImportError:
            continue
        builds.append(pytest.param(module, id=name))
    return builds


@pytest.fixture(params=["serial", "parallel", "team", "streaming"])
def threading_mode(request):
    """The serial path; the OpenMP path forced on even for small inputs, with a range of channels per
    thread ("parallel") or every channel split over the whole team ("team"); streaming stores forced on
    (automatic split). The knobs live in one module, shared by every build."""
    old = (_parallel.parallel_min_size(), _parallel.get_stream_min_bytes(), _parallel.get_team_mode(),
           _parallel.get_num_threads(), _parallel.adaptive())
    _parallel.set_adaptive(False)  # the team these paths need, even on a busy machine
    _parallel.set_parallel_min_size(1 << 62 if request.param == "serial" else 0)
    _parallel.set_stream_min_bytes(0 if request.param == "streaming" else 1 << 62)
    _parallel.set_team_mode({"parallel": 0, "team": 1}.get(request.param, -1))
    if request.param != "serial":
        _parallel.set_num_threads(max(2, old[3]))  # a team even on a one-core machine
    yield request.param
    _parallel.set_parallel_min_size(old[0])
    _parallel.set_stream_min_bytes(old[1])
    _parallel.set_team_mode(old[2])
    _parallel.set_num_threads(old[3])
    _parallel.set_adaptive(old[4])


@pytest.fixture(params=_norm_builds())
def cpu_build(request, monkeypatch):
    """Route the CPU backend to one compiled build of the kernels."""
    monkeypatch.setattr(cpu_backend, "_KERNELS", request.param)
    return request.param


def _views(rng, shape, dtype):
    """The array itself and non-contiguous views of the same shape."""
    n, c, s = shape
    yield "contiguous", rng.standard_normal(shape).astype(dtype) * 2 + 0.5
    yield "channel_slice", (rng.standard_normal((n, 2 * c, s)).astype(dtype) * 2)[:, 1::2]
    yield "batch_stride", (rng.standard_normal((2 * n, c, s)).astype(dtype) - 1)[::2]
    yield "channels_last", np.ascontiguousarray(rng.standard_normal((n, s, c)).astype(dtype)).transpose(0, 2, 1)
    yield "strided_inner", (rng.standard_normal((n, c, 2 * s)).astype(dtype))[:, :, ::2]


SHAPES = [(4, 3, 1), (7, 5, 1), (3, 300, 1), (2, 3, 17), (5, 4, 64), (1, 2, 9)]


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_forward_train(shape, dtype, affine, device, cpu_build, threading_mode):
    rng = np.random.default_rng(1)
    backend = get_backend(device)
    c = shape[1]
    w = rng.standard_normal(c).astype(dtype) if affine else None
    b = rng.standard_normal(c).astype(dtype) if affine else None
    for name, x in _views(rng, shape, dtype):
        ey, em, ev = REFERENCE.batch_norm_forward_train(x, w, b, 1e-3)
        y, m, v = (backend.to_numpy(a) for a in backend.batch_norm_forward_train(
            backend.from_numpy(x), *(None if a is None else backend.from_numpy(a) for a in (w, b)), 1e-3))
        assert y.shape == x.shape and y.dtype == dtype and m.dtype == dtype and v.dtype == dtype, name
        np.testing.assert_allclose(y, ey, **_tol(dtype), err_msg=name)
        np.testing.assert_allclose(m, em, **_tol(dtype), err_msg=name)
        np.testing.assert_allclose(v, ev, **_tol(dtype), err_msg=name)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_backward(shape, dtype, affine, training, device, cpu_build, threading_mode):
    rng = np.random.default_rng(2)
    backend = get_backend(device)
    c = shape[1]
    w = rng.standard_normal(c).astype(dtype) if affine else None
    xs, gs = list(_views(rng, shape, dtype)), list(_views(rng, shape, dtype))
    for (name, x), (gname, g) in zip(xs, gs[1:] + gs[:1]):  # every layout of x and of grad, paired off
        mean = (x.astype(np.float64).mean(axis=(0, 2)) + rng.uniform(-0.1, 0.1, c)).astype(dtype)
        invstd = rng.uniform(0.5, 2.0, c).astype(dtype)
        expected = REFERENCE.batch_norm_backward(g, x, mean, invstd, w, training)
        got = backend.batch_norm_backward(*(backend.from_numpy(a) for a in (g, x, mean, invstd)),
                                          None if w is None else backend.from_numpy(w), training)
        for label, a, e in zip(("dx", "dweight", "dbias"), got, expected):
            a = backend.to_numpy(a)
            assert a.shape == e.shape and a.dtype == dtype
            scale = max(1.0, float(np.abs(e).max()))
            np.testing.assert_allclose(a, e, rtol=_tol(dtype)["rtol"], atol=_tol(dtype)["atol"] * scale,
                                       err_msg=f"{label}: x {name}, grad {gname}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_channel_affine(shape, dtype, device, cpu_build, threading_mode):
    rng = np.random.default_rng(3)
    backend = get_backend(device)
    scale = rng.standard_normal(shape[1]).astype(dtype)
    shift = rng.standard_normal(shape[1]).astype(dtype)
    for name, x in _views(rng, shape, dtype):
        expected = REFERENCE.channel_affine(x, scale, shift)
        got = backend.to_numpy(backend.channel_affine(*(backend.from_numpy(a) for a in (x, scale, shift))))
        assert got.dtype == dtype
        np.testing.assert_allclose(got, expected, **_tol(dtype), err_msg=name)


# (N, C, S, groups): element mode (S = 1: LayerNorm's (R, K, 1) view, GroupNorm on (N, C)), one group,
# instance norm (groups = C), rows longer than a pipeline block, odd sizes that leave vector tails.
GROUP_CASES = [(3, 8, 1, 1), (5, 6, 1, 3), (2, 1100, 1, 1), (4, 6, 5, 2), (2, 4, 17, 4), (3, 4, 9, 1),
               (2, 6, 700, 3), (1, 3, 1, 3), (6, 2, 64, 2)]


def _group_params(rng, c, dtype, which):
    w = rng.uniform(0.5, 1.5, c).astype(dtype) if which in ("both", "weight") else None
    b = rng.standard_normal(c).astype(dtype) if which in ("both", "bias") else None
    return w, b


@pytest.mark.parametrize("which", ["both", "none", "weight", "bias"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", GROUP_CASES)
def test_group_norm_forward(case, dtype, which, device, cpu_build, threading_mode):
    n, c, s, groups = case
    rng = np.random.default_rng(8)
    backend = get_backend(device)
    w, b = _group_params(rng, c, dtype, which)
    for name, x in _views(rng, (n, c, s), dtype):
        expected = REFERENCE.group_norm_forward(x, w, b, groups, 1e-5)
        got = backend.group_norm_forward(*(None if a is None else backend.from_numpy(a) for a in (x, w, b)),
                                         groups, 1e-5)
        for label, a, e in zip(("y", "mean", "invstd"), got, expected):
            a = backend.to_numpy(a)
            assert a.shape == e.shape and a.dtype == dtype, (label, a.shape, e.shape)
            np.testing.assert_allclose(a, e, rtol=_tol(dtype)["rtol"] * 10,
                                       atol=_tol(dtype)["atol"] * max(1.0, float(np.abs(e).max())),
                                       err_msg=f"{label} ({name})")


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", GROUP_CASES)
def test_group_norm_backward(case, dtype, affine, device, cpu_build, threading_mode):
    n, c, s, groups = case
    rng = np.random.default_rng(9)
    backend = get_backend(device)
    w = rng.uniform(-1.5, 1.5, c).astype(dtype) if affine else None
    xs, gs = list(_views(rng, (n, c, s), dtype)), list(_views(rng, (n, c, s), dtype))
    for (name, x), (gname, g) in zip(xs, gs[1:] + gs[:1]):  # every layout of x and of grad, paired off
        rows = x.astype(np.float64).reshape(n, groups, -1)
        mean = (rows.mean(axis=2) + rng.uniform(-0.1, 0.1, (n, groups))).astype(dtype)
        invstd = rng.uniform(0.5, 2.0, (n, groups)).astype(dtype)
        expected = REFERENCE.group_norm_backward(g, x, mean, invstd, w, groups)
        got = backend.group_norm_backward(*(backend.from_numpy(a) for a in (g, x, mean, invstd)),
                                          None if w is None else backend.from_numpy(w), groups)
        for label, a, e in zip(("dx", "dweight", "dbias"), got, expected):
            a = backend.to_numpy(a)
            assert a.shape == e.shape and a.dtype == dtype
            scale = max(1.0, float(np.abs(e).max()))
            np.testing.assert_allclose(a, e, rtol=_tol(dtype)["rtol"] * 10, atol=_tol(dtype)["atol"] * scale,
                                       err_msg=f"{label}: x {name}, grad {gname}")


def test_group_norm_rejects_bad_groups_and_strides(cpu_build):
    x = np.zeros((2, 6, 4), dtype=np.float32)
    y, m = np.empty_like(x), np.empty((2, 4), np.float32)
    with pytest.raises(ValueError, match="divisor"):
        cpu_build.group_norm_forward(x, None, None, 4, 1e-5, y, m, m.copy())
    xt = np.zeros((6, 2, 1), dtype=np.float32).transpose(1, 0, 2)  # S = 1, channels strided
    with pytest.raises(ValueError, match="unit stride"):
        cpu_build.group_norm_forward(xt, None, None, 1, 1e-5, np.empty((2, 6, 1), np.float32),
                                     np.empty((2, 1), np.float32), np.empty((2, 1), np.float32))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES + [(3, 300, 2), (2, 3, 196)])
def test_batch_norm_forward_eval(shape, dtype, affine, device, cpu_build, threading_mode):
    rng = np.random.default_rng(10)
    backend = get_backend(device)
    c = shape[1]
    mean = rng.standard_normal(c).astype(dtype)
    var = rng.uniform(0.2, 3.0, c).astype(dtype)
    w = rng.standard_normal(c).astype(dtype) if affine else None
    b = rng.standard_normal(c).astype(dtype) if affine else None
    for name, x in _views(rng, shape, dtype):
        expected = REFERENCE.batch_norm_forward_eval(x, mean, var, w, b, 1e-3)
        got = backend.to_numpy(backend.batch_norm_forward_eval(
            *(None if a is None else backend.from_numpy(a) for a in (x, mean, var, w, b)), 1e-3))
        assert got.shape == x.shape and got.dtype == dtype
        np.testing.assert_allclose(got, expected, **_tol(dtype), err_msg=name)


def test_statistics_are_two_pass_accurate(cpu_build):
    """float32 data with mean 1e4 and std 1: the kernel's variance is within 1e-3 (relative)."""
    rng = np.random.default_rng(6)
    # S = 1 rows, a short S, and S = 2000 with 16 samples (L1 blocks merged with Chan's formula, and
    # with C = 3 channels on several threads the whole-team split, sums merged across threads).
    for shape in [(256, 3, 1), (16, 3, 50), (16, 3, 2000)]:
        x = (rng.standard_normal(shape) + 1e4).astype(np.float32)
        _, mean, var = get_backend("cpu").batch_norm_forward_train(x, None, None, 0.0)
        x64 = x.astype(np.float64)
        np.testing.assert_allclose(var, x64.var(axis=(0, 2)), rtol=1e-3)
        np.testing.assert_allclose(mean, x64.mean(axis=(0, 2)), rtol=1e-7)
    # Group statistics, per-channel runs (S > 1) and element mode (S = 1), several L1 blocks per row.
    for shape, groups in [((4, 6, 700), 3), ((4, 3000, 1), 1)]:
        x = (rng.standard_normal(shape) + 1e4).astype(np.float32)
        _, mean, invstd = get_backend("cpu").group_norm_forward(x, None, None, groups, 0.0)
        rows = x.astype(np.float64).reshape(shape[0], groups, -1)
        np.testing.assert_allclose(1.0 / invstd.astype(np.float64) ** 2, rows.var(axis=2), rtol=1e-3)
        np.testing.assert_allclose(mean, rows.mean(axis=2), rtol=1e-7)


def test_float16_falls_back_to_the_reference():
    x = np.random.default_rng(7).standard_normal((4, 3, 2)).astype(np.float16)
    y, mean, var = get_backend("cpu").batch_norm_forward_train(x, None, None, 1e-5)
    assert y.dtype == np.float16
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=(0, 2)), rtol=1e-2, atol=1e-3)


def test_kernels_reject_mismatched_vectors():
    x = np.zeros((2, 3, 4), dtype=np.float32)
    with pytest.raises(TypeError, match="dtype"):
        get_backend("cpu").batch_norm_forward_train(x, np.ones(3), None, 1e-5)


def test_signatures_match_the_reference():
    """Backends are interchangeable: each override keeps the base signature."""
    import inspect

    for name in ("batch_norm_forward_train", "channel_affine", "batch_norm_forward_eval", "batch_norm_backward",
                 "group_norm_forward", "group_norm_backward"):
        assert inspect.signature(getattr(cpu_backend.CPUBackend, name)) == inspect.signature(getattr(Backend, name))


def test_simd_builds_report_themselves():
    from minigrad._ext import _kernels

    assert _kernels.simd() == "baseline"
    widths = {"baseline": (0, 16), "avx2": (32,), "avx512": (64,)}
    for p in _norm_builds():
        module = p.values[0]
        assert module.simd() == p.id
        assert module.vector_bytes() in widths[p.id], (p.id, module.vector_bytes())


@pytest.mark.parametrize("name", ["_kernels", "_kernels_avx2", "_kernels_avx512"])
def test_importing_any_build_never_kills_the_process(name):
    # On a processor without the build's instruction set the import raises ImportError (it used to die
    # with SIGILL in the module's initialisation): the only outcomes are a module or that error.
    import subprocess
    import sys

    code = (f"import importlib\ntry:\n    m = importlib.import_module('minigrad._ext.{name}')\n"
            f"except ImportError as e:\n    print('refused:', e)\nelse:\n    print('loaded', m.simd())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    runs = {p.id for p in _norm_builds()}
    simd = name.removeprefix("_kernels").lstrip("_") or "baseline"
    assert proc.stdout.startswith("loaded" if simd in runs else "refused"), proc.stdout


def test_simd_instructions_only_in_the_primitives():
    # The guarantee behind the import check: in the AVX2/AVX-512 builds only the C primitives of
    # _simd.h (functions named mg_*) contain VEX/EVEX-encoded instructions; the module's
    # initialisation and the Cython orchestration are baseline x86-64.
    import platform
    import re
    import shutil
    import subprocess

    if platform.machine() not in ("x86_64", "AMD64") or shutil.which("objdump") is None:
        pytest.skip("needs x86-64 and objdump")
    import minigrad._ext as ext

    folder = pathlib.Path(ext.__file__).parent
    vector = re.compile(r"\s(v[a-z0-9]+|k[a-z]+[bwdq])\s|[xyz]mm(1[6-9]|2[0-9]|3[01])|[yz]mm")
    for name in ("_kernels_avx2", "_kernels_avx512"):
        (lib,) = folder.glob(f"{name}.*.so") or [None]
        if lib is None:
            continue
        text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True,
                              check=True).stdout
        offenders, fn = set(), None
        for line in text.splitlines():
            head = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
            if head:
                fn = head.group(1)
            elif fn and vector.search(line) and not fn.startswith("mg_"):
                offenders.add(fn)
        assert not offenders, f"{name}: vector instructions outside the primitives: {sorted(offenders)[:10]}"


@pytest.mark.parametrize("shape", [(5, 3, 700), (64, 4, 37), (3, 2, 5000), (7, 300, 1), (17, 6, 3)])
def test_statistics_are_identical_for_every_thread_count(shape, cpu_build):
    # honest claims: the sums are taken per chunk of the data (a unit that does not depend on the
    # threads) and merged in order, so 1, 2 or 3 threads, and either way of sharing channels, give the
    # same bits (the adaptive team may pick any of them on a busy machine)
    rng = np.random.default_rng(9)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(shape[1]).astype(np.float32)
    old = (_parallel.get_num_threads(), _parallel.parallel_min_size(), _parallel.get_team_mode(),
           _parallel.adaptive())
    backend = get_backend("cpu")
    results = []
    try:
        _parallel.set_parallel_min_size(0)
        _parallel.set_adaptive(False)
        for threads in (1, 2, 3):
            for mode in (0, 1):
                _parallel.set_num_threads(threads)
                _parallel.set_team_mode(mode)
                y, mean, var = backend.batch_norm_forward_train(x, w, None, 1e-5)
                invstd = (1 / np.sqrt(var.astype(np.float64) + 1e-5)).astype(np.float32)
                grads = backend.batch_norm_backward(g, x, mean, invstd, w, True)
                groups = shape[1] if shape[2] > 1 else 1
                gy, gmean, ginv = backend.group_norm_forward(x, w, w, groups, 1e-5)
                ggrads = backend.group_norm_backward(g, x, gmean, ginv, w, groups)
                results.append((f"{threads} threads, team mode {mode}", [y, mean, var, *grads, gy, *ggrads]))
    finally:
        _parallel.set_num_threads(old[0])
        _parallel.set_parallel_min_size(old[1])
        _parallel.set_team_mode(old[2])
        _parallel.set_adaptive(old[3])
    first_label, first = results[0]
    for label, arrays in results[1:]:
        for i, (a, b) in enumerate(zip(first, arrays)):
            np.testing.assert_array_equal(a, b, err_msg=f"output {i}: {first_label} vs {label}")
