// Run-time controls of the CPU backend: the instruction set its kernels use and the number of
// threads they split into. Both are process-wide, chosen on first use from the CPU
// (__builtin_cpu_supports) and the environment (SY_CPU_ISA=scalar|avx2|avx512, SY_CPU_THREADS=n,
// default std::thread::hardware_concurrency()). Tests and benchmarks override them between calls.
// REQUIRES: no CPU-backend kernel is running while set_isa or set_num_threads is called.
#pragma once

#include <string_view>

namespace sy::gpu::cpu {

class ThreadPool;

enum class Isa {
  scalar,  // any x86-64 (and the fallback elsewhere)
  avx2,    // AVX2 + FMA + F16C
  avx512,  // AVX-512 F/BW/VL (+ the AVX2 set)
};

std::string_view isa_name(Isa isa);
bool isa_supported(Isa isa);
Isa best_isa();
Isa active_isa();
// Throws std::invalid_argument when this CPU lacks the ISA.
void set_isa(Isa isa);

int num_threads();
// Replaces the pool with one of n threads (n >= 1; the caller is one of them).
void set_num_threads(int n);

// The backend's pool, created on first use.
ThreadPool& thread_pool();

}  // namespace sy::gpu::cpu
