// A small CUDA emulation for g++, to run minigrad's real kernel sources on
// the CPU in tests (force-included before the kernel source: g++ -include).
//
// Model:
// * a launch runs the blocks of the grid one after another;
// * the threads of a block are fibers (ucontext) on one OS thread, switched
//   only at __syncthreads, warp shuffles and __syncwarp. Between two such
//   points a thread runs alone, in a schedule order that is forward,
//   reverse or a seeded shuffle (re-drawn at every barrier round), so a
//   missing barrier shows up as a wrong result deterministically;
// * __syncthreads waits for every thread of the block, a shuffle for the
//   32 lanes of its warp (warps are formed from the linear thread index, as
//   on the GPU). A barrier that cannot complete (a thread exited, or lanes
//   of a warp wait at different kinds of barrier) is reported as an error
//   instead of hanging;
// * __shared__ variables are function-local statics: one instance shared
//   by the block's fibers, reused by the next block;
// * atomics are plain read-modify-writes (fibers never interleave inside one).
//
// * __half and __nv_bfloat16 come from the stand-ins cuda_fp16.h and
//   cuda_bf16.h of this directory (storage types with exact widening and
//   round-to-nearest-even narrowing, the conversions the kernels use).
//
// Not emulated: concurrency between blocks (so races between blocks cannot
// show), the memory model/caches, the numerics of GPU math functions and
// FMA contraction (g++ rounds separately), dynamic shared memory, half
// arithmetic (the kernels compute in float), and shuffles with partial
// masks (reported as errors).
#ifndef MINIGRAD_CUDA_EMU_H
#define MINIGRAD_CUDA_EMU_H

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <math.h>
#include <random>
#include <string>
#include <vector>

#include "cuda_bf16.h"
#include "cuda_fp16.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline dim3 threadIdx, blockIdx, blockDim, gridDim;
constexpr int warpSize = 32;

namespace emu {

enum class State { Ready, AtSync, AtWarp, Done };

struct Fiber {
    ucontext_t ctx;
    State state = State::Done;
    dim3 tid;
};

struct Launch {
    std::vector<Fiber> fibers;
    std::vector<std::vector<char>> stacks;
    std::vector<unsigned long long> exchange;  // one shuffle slot per thread
    ucontext_t scheduler;
    int current = -1;
    std::function<void()> body;
    std::string error;
    int order = 2;  // 0 forward, 1 reverse, 2 seeded shuffle
    std::mt19937 rng{12345};
};

inline Launch& launch() {
    static Launch l;
    return l;
}

inline void fail(const std::string& msg) {
    Launch& l = launch();
    if (l.error.empty()) l.error = msg;
}

inline void trampoline() {
    Launch& l = launch();
    if (l.error.empty()) l.body();
    l.fibers[l.current].state = State::Done;
    // returning resumes uc_link (the scheduler)
}

inline void wait(State s) {
    Launch& l = launch();
    l.fibers[l.current].state = s;
    swapcontext(&l.fibers[l.current].ctx, &l.scheduler);
}

inline int linear_id() { return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)); }

inline std::string where() {
    return "block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
           std::to_string(blockIdx.z) + ")";
}

// Runs one block; returns false (with launch().error set) on a barrier error.
inline bool run_block(int nthreads) {
    Launch& l = launch();
    const size_t stack_size = 256 * 1024;
    if (l.stacks.size() < static_cast<size_t>(nthreads)) l.stacks.resize(nthreads);
    l.fibers.assign(nthreads, Fiber());
    for (int t = 0; t < nthreads; ++t) {
        if (l.stacks[t].size() < stack_size) l.stacks[t].resize(stack_size);
        Fiber& f = l.fibers[t];
        f.tid.x = t % blockDim.x;
        f.tid.y = (t / blockDim.x) % blockDim.y;
        f.tid.z = t / (blockDim.x * blockDim.y);
        f.state = State::Ready;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = l.stacks[t].data();
        f.ctx.uc_stack.ss_size = stack_size;
        f.ctx.uc_link = &l.scheduler;
        makecontext(&f.ctx, trampoline, 0);
    }
    std::vector<int> order(nthreads);
    for (int t = 0; t < nthreads; ++t) order[t] = t;
    const int nwarps = (nthreads + 31) / 32;
    for (;;) {
        if (l.order == 1)
            std::reverse(order.begin(), order.end());
        else if (l.order == 2)
            std::shuffle(order.begin(), order.end(), l.rng);
        for (int t : order) {
            if (l.fibers[t].state != State::Ready) continue;
            l.current = t;
            threadIdx = l.fibers[t].tid;
            swapcontext(&l.scheduler, &l.fibers[t].ctx);
            if (!l.error.empty()) return false;
        }
        if (l.order == 1) std::reverse(order.begin(), order.end());  // keep "reverse" stable
        int done = 0, at_sync = 0;
        for (const Fiber& f : l.fibers) {
            done += f.state == State::Done;
            at_sync += f.state == State::AtSync;
        }
        if (done == nthreads) return true;
        bool released = false;
        for (int w = 0; w < nwarps; ++w) {
            const int lo = 32 * w, hi = std::min(nthreads, lo + 32);
            int waiting = 0;
            for (int t = lo; t < hi; ++t) waiting += l.fibers[t].state == State::AtWarp;
            if (waiting == 0) continue;
            if (waiting == hi - lo) {
                for (int t = lo; t < hi; ++t) l.fibers[t].state = State::Ready;
                released = true;
            }
        }
        if (released) continue;
        if (at_sync == nthreads) {
            for (Fiber& f : l.fibers) f.state = State::Ready;
            continue;
        }
        std::string msg = "deadlock in " + where() + ": ";
        if (at_sync > 0 && done > 0)
            msg += std::to_string(at_sync) + " threads wait at __syncthreads but " + std::to_string(done) +
                   " threads of the block have exited";
        else
            msg += "lanes of a warp wait at different barriers (a shuffle or __syncwarp in divergent code, "
                   "or a warp shuffle while other lanes exited)";
        fail(msg);
        return false;
    }
}

// Run `body` for every thread of every block of the grid.
inline bool run_grid(dim3 grid, dim3 block, std::function<void()> body) {
    Launch& l = launch();
    l.error.clear();
    const long long nthreads = 1LL * block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || nthreads == 0) {
        fail("invalid configuration: a grid or block dimension is 0");
        return false;
    }
    if (nthreads > 1024 || block.z > 64 || grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u) {
        fail("invalid configuration: block of " + std::to_string(nthreads) + " threads or grid too large");
        return false;
    }
    l.body = std::move(body);
    l.exchange.assign(nthreads, 0);
    blockDim = block;
    gridDim = grid;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                blockIdx.x = x;
                blockIdx.y = y;
                blockIdx.z = z;
                if (!run_block(static_cast<int>(nthreads))) return false;
            }
    return true;
}

template <typename T>
inline T shuffle(unsigned mask, T var, int src_of_lane_result, bool in_range) {
    (void)mask;
    Launch& l = launch();
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    const int me = linear_id();
    unsigned long long bits = 0;
    std::memcpy(&bits, &var, sizeof(T));
    l.exchange[me] = bits;
    wait(State::AtWarp);
    T out = var;
    if (in_range) std::memcpy(&out, &l.exchange[src_of_lane_result], sizeof(T));
    wait(State::AtWarp);  // nobody overwrites a slot before every lane has read
    return out;
}

inline bool check_mask(unsigned mask) {
    const int me = linear_id();
    const int nthreads = static_cast<int>(blockDim.x * blockDim.y * blockDim.z);
    const int base = me - (me & 31);
    if (mask != 0xffffffffu || nthreads - base < 32) {
        fail("warp shuffle with a partial mask or a partial warp in " + where() + " (not emulated)");
        return false;
    }
    return true;
}

}  // namespace emu

inline void __syncthreads() { emu::wait(emu::State::AtSync); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    if (emu::check_mask(mask)) emu::wait(emu::State::AtWarp);
}

template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    if (!emu::check_mask(mask)) return var;
    const int me = emu::linear_id();
    const int lane = me & 31;
    const int seg = lane % width;
    const bool in_range = seg + static_cast<int>(delta) < width;
    return emu::shuffle(mask, var, me + static_cast<int>(delta), in_range);
}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
    if (!emu::check_mask(mask)) return var;
    const int me = emu::linear_id();
    const int lane = me & 31;
    const int src = lane ^ lane_mask;
    const bool in_range = (src / width) == (lane / width) || src < 32;
    return emu::shuffle(mask, var, me - lane + src, in_range && src < 32);
}

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
    if (!emu::check_mask(mask)) return var;
    const int me = emu::linear_id();
    const int lane = me & 31;
    const int src = (lane / width) * width + (src_lane % width);
    return emu::shuffle(mask, var, me - lane + src, true);
}

// Atomics: fibers never switch inside these, so plain updates are atomic.
inline float atomicAdd(float* p, float v) {
    const float old = *p;
    *p = old + v;
    return old;
}
inline double atomicAdd(double* p, double v) {
    const double old = *p;
    *p = old + v;
    return old;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long cmp, unsigned long long v) {
    const unsigned long long old = *p;
    if (old == cmp) *p = v;
    return old;
}

// Bit casts.
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}
inline double __longlong_as_double(long long i) {
    double d;
    std::memcpy(&d, &i, sizeof d);
    return d;
}
inline long long __double_as_longlong(double d) {
    long long i;
    std::memcpy(&i, &d, sizeof i);
    return i;
}

#endif  // MINIGRAD_CUDA_EMU_H
