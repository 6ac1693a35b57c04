// Fused elementwise kernels: the logistic function and the optimizer steps.
// Flat over n elements in units of V (16-byte accesses when aligned),
// grid-stride. The optimizer kernels update their arrays in place and take
// their hyper-parameters in the element type T, with the same operation
// order as the NumPy reference (scalars there are cast to the array dtype).
#include "common.cuh"

using mg::Pack;

// y = 0.5·(1 + tanh(x/2)): no overflow of exp(-x) for large |x|. y may be x.
template <typename T>
__global__ void sigmoid(const T* x, T* y, long long n) {
    constexpr int V = Pack<T>::N;
    const long long units = (n + V - 1) / V;
    for (long long u = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; u < units;
         u += static_cast<long long>(gridDim.x) * blockDim.x) {
        T v[V];
        const int cnt = mg::load_batch(x + u * V, n - u * V, v);
#pragma unroll
        for (int i = 0; i < V; ++i) v[i] = T(0.5) * (T(1) + mg::tanh_(v[i] * T(0.5)));
        mg::store_batch(y + u * V, cnt, v);
    }
}

// PyTorch's SGD: g = grad + wd·p; with momentum (buf non-null)
// buf = g on the first step, else momentum·buf + (1 - dampening)·g;
// g = g + momentum·buf (Nesterov) or buf; p -= lr·g.
template <typename T>
__global__ void sgd_update(T* p, const T* __restrict__ grad, T* buf, long long n, T lr, T momentum,
                           T one_minus_dampening, T weight_decay, int nesterov, int first_step) {
    constexpr int V = Pack<T>::N;
    const long long units = (n + V - 1) / V;
    for (long long u = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; u < units;
         u += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long i0 = u * V;
        T pv[V], gv[V], bv[V];
        const int cnt = mg::load_batch(p + i0, n - i0, pv);
        mg::load_batch(grad + i0, n - i0, gv);
        if (buf != nullptr && !first_step) mg::load_batch(buf + i0, n - i0, bv);
#pragma unroll
        for (int i = 0; i < V; ++i) {
            T g = gv[i];
            if (weight_decay != T(0)) g = g + weight_decay * pv[i];
            if (buf != nullptr) {
                const T b = first_step ? g : bv[i] * momentum + one_minus_dampening * g;
                bv[i] = b;
                g = nesterov ? g + momentum * b : b;
            }
            pv[i] = pv[i] - lr * g;
        }
        mg::store_batch(p + i0, cnt, pv);
        if (buf != nullptr) mg::store_batch(buf + i0, cnt, bv);
    }
}

// Adam with bias correction and L2 weight decay:
// g = grad + wd·p; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²;
// p -= step_size·m / (sqrt(v / bc2) + eps), step_size = lr/(1 - β1^t),
// bc2 = 1 - β2^t (both computed on the host in double).
template <typename T>
__global__ void adam_update(T* p, const T* __restrict__ grad, T* m, T* v, long long n, T beta1,
                            T one_minus_beta1, T beta2, T one_minus_beta2, T step_size, T bias_correction2,
                            T eps, T weight_decay) {
    constexpr int V = Pack<T>::N;
    const long long units = (n + V - 1) / V;
    for (long long u = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; u < units;
         u += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long i0 = u * V;
        T pv[V], gv[V], mv[V], vv[V];
        const int cnt = mg::load_batch(p + i0, n - i0, pv);
        mg::load_batch(grad + i0, n - i0, gv);
        mg::load_batch(m + i0, n - i0, mv);
        mg::load_batch(v + i0, n - i0, vv);
#pragma unroll
        for (int i = 0; i < V; ++i) {
            T g = gv[i];
            if (weight_decay != T(0)) g = g + weight_decay * pv[i];
            mv[i] = mv[i] * beta1 + one_minus_beta1 * g;
            vv[i] = vv[i] * beta2 + one_minus_beta2 * (g * g);
            const T denom = mg::sqrt_(vv[i] / bias_correction2) + eps;
            pv[i] = pv[i] - step_size * (mv[i] / denom);
        }
        mg::store_batch(p + i0, cnt, pv);
        mg::store_batch(m + i0, cnt, mv);
        mg::store_batch(v + i0, cnt, vv);
    }
}
