// Registry and C ABI of the emulated kernels (included after the kernel source).
//
// The test harness generates one registration per name expression
// ("kernel<float>"), compiles kernel source + this file into a shared
// library and loads it with ctypes. For every kernel it can ask the exact C
// signature (one code per parameter, see Code below), so the Python side
// checks each launch's argument types the way the GPU ABI would need them:
// a np.float64 passed where the kernel takes float is an error here, while
// on a real GPU it would silently be garbage.
#ifndef MINIGRAD_EMU_LAUNCH_H
#define MINIGRAD_EMU_LAUNCH_H

#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace emu {

// Parameter codes: e __half, E __nv_bfloat16, f float, d double, i int, q
// long long, Q unsigned long long (NumPy's type characters, "E" being
// ml_dtypes' bfloat16); "P" + code = pointer to mutable, "K" + code =
// pointer to const.
template <typename T, typename = void>
struct Code;
template <> struct Code<__half> { static std::string s() { return "e"; } };
template <> struct Code<__nv_bfloat16> { static std::string s() { return "E"; } };
template <> struct Code<float> { static std::string s() { return "f"; } };
template <> struct Code<double> { static std::string s() { return "d"; } };
template <> struct Code<int> { static std::string s() { return "i"; } };
template <> struct Code<long long> { static std::string s() { return "q"; } };
template <> struct Code<unsigned long long> { static std::string s() { return "Q"; } };
template <typename T>
struct Code<T*> {
    static std::string s() { return (std::is_const<T>::value ? "K" : "P") + Code<std::remove_cv_t<T>>::s(); }
};

struct Entry {
    std::string name;
    std::string signature;
    std::function<bool(dim3, dim3, void**)> launch;
};

inline std::vector<Entry>& registry() {
    static std::vector<Entry> r;
    return r;
}

template <typename... A, size_t... I>
bool launch_with(void (*kernel)(A...), dim3 grid, dim3 block, void** args, std::index_sequence<I...>) {
    // Copy the argument values once (as cuLaunchKernel does); every emulated
    // thread then calls the kernel with the same values.
    std::tuple<std::decay_t<A>...> values(*static_cast<std::decay_t<A>*>(args[I])...);
    return run_grid(grid, block, [kernel, values]() { std::apply(kernel, values); });
}

struct Registrar {
    template <typename... A>
    Registrar(const char* name, void (*kernel)(A...)) {
        Entry e;
        e.name = name;
        e.signature = (std::string() + ... + Code<std::decay_t<A>>::s());
        e.launch = [kernel](dim3 grid, dim3 block, void** args) {
            return launch_with(kernel, grid, block, args, std::index_sequence_for<A...>{});
        };
        registry().push_back(std::move(e));
    }
};

}  // namespace emu

extern "C" {
int mg_emu_count() { return static_cast<int>(emu::registry().size()); }
const char* mg_emu_name(int i) { return emu::registry()[i].name.c_str(); }
const char* mg_emu_signature(int i) { return emu::registry()[i].signature.c_str(); }
const char* mg_emu_error() { return emu::launch().error.c_str(); }
// order: 0 forward, 1 reverse, 2 seeded shuffle of the threads at each barrier round.
int mg_emu_launch(int i, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                  void** args, int order, unsigned seed) {
    emu::launch().order = order;
    emu::launch().rng.seed(seed);
    dim3 grid, block;
    grid.x = gx;
    grid.y = gy;
    grid.z = gz;
    block.x = bx;
    block.y = by;
    block.z = bz;
    return emu::registry()[i].launch(grid, block, args) ? 0 : 1;
}
}

#endif  // MINIGRAD_EMU_LAUNCH_H
