#include "gpu/cuda/cublaslt/fp8_gemm_lt.hpp"

#include <cublasLt.h>
#include <dlfcn.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "gpu/cuda/check.hpp"

#define SY_STRINGIFY_(x) #x
#define SY_STRINGIFY(x) SY_STRINGIFY_(x)

namespace sy::gpu::cuda::impl::cublaslt {
namespace {

// cuBLASLt is loaded on first use (dlopen), not linked: linked in, its 94 KiB of static TLS goes
// into every thread's stack, and the prometheus-cpp exposer's (civetweb's) small-stack threads then
// fail to start (`switchyard serve`: "null context when constructing CivetServer"). Loaded with
// dlopen, its TLS is allocated per thread on demand.
struct Lt {
  bool ok = false;
  std::string problem;
#define SY_LT_FN(name) decltype(&::name) name = nullptr;
  SY_LT_FN(cublasLtCreate)
  SY_LT_FN(cublasLtDestroy)
  SY_LT_FN(cublasLtGetStatusName)
  SY_LT_FN(cublasLtGetStatusString)
  SY_LT_FN(cublasLtMatmulDescCreate)
  SY_LT_FN(cublasLtMatmulDescDestroy)
  SY_LT_FN(cublasLtMatmulDescSetAttribute)
  SY_LT_FN(cublasLtMatrixLayoutCreate)
  SY_LT_FN(cublasLtMatrixLayoutDestroy)
  SY_LT_FN(cublasLtMatmulPreferenceCreate)
  SY_LT_FN(cublasLtMatmulPreferenceDestroy)
  SY_LT_FN(cublasLtMatmulPreferenceSetAttribute)
  SY_LT_FN(cublasLtMatmulAlgoGetHeuristic)
  SY_LT_FN(cublasLtMatmul)
#undef SY_LT_FN
};

const Lt& lt() {
  static const Lt loaded = [] {
    Lt l;
    void* lib = dlopen("libcublasLt.so." SY_STRINGIFY(CUBLAS_VER_MAJOR), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) lib = dlopen("libcublasLt.so", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* why = dlerror();
      l.problem = std::string("cannot load cuBLASLt: ") + (why != nullptr ? why : "dlopen failed");
      return l;
    }
    bool all = true;
    const auto get = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      if (fn == nullptr) {
        all = false;
        l.problem = std::string("cuBLASLt has no ") + name;
      }
    };
#define SY_LT_GET(name) get(l.name, #name);
    SY_LT_GET(cublasLtCreate)
    SY_LT_GET(cublasLtDestroy)
    SY_LT_GET(cublasLtGetStatusName)
    SY_LT_GET(cublasLtGetStatusString)
    SY_LT_GET(cublasLtMatmulDescCreate)
    SY_LT_GET(cublasLtMatmulDescDestroy)
    SY_LT_GET(cublasLtMatmulDescSetAttribute)
    SY_LT_GET(cublasLtMatrixLayoutCreate)
    SY_LT_GET(cublasLtMatrixLayoutDestroy)
    SY_LT_GET(cublasLtMatmulPreferenceCreate)
    SY_LT_GET(cublasLtMatmulPreferenceDestroy)
    SY_LT_GET(cublasLtMatmulPreferenceSetAttribute)
    SY_LT_GET(cublasLtMatmulAlgoGetHeuristic)
    SY_LT_GET(cublasLtMatmul)
#undef SY_LT_GET
    l.ok = all;
    return l;  // the library stays loaded for the process's life
  }();
  return loaded;
}

void lt_check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw CudaError(std::string("cuBLASLt ") + what + ": " + lt().cublasLtGetStatusName(status) + " (" +
                    lt().cublasLtGetStatusString(status) + ")");
  }
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// One handle per thread: cuBLASLt handles hold no per-call state, but each thread owning its own
// keeps concurrent callers apart without a lock. Destroyed at thread exit.
cublasLtHandle_t thread_handle() {
  struct Handle {
    cublasLtHandle_t h = nullptr;
    Handle() { lt_check(lt().cublasLtCreate(&h), "cublasLtCreate"); }
    ~Handle() { (void)lt().cublasLtDestroy(h); }
  };
  thread_local Handle handle;
  return handle.h;
}

// RAII for the descriptors of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Descriptors() {
    if (pref != nullptr) (void)lt().cublasLtMatmulPreferenceDestroy(pref);
    if (c != nullptr) (void)lt().cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) (void)lt().cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) (void)lt().cublasLtMatrixLayoutDestroy(a);
    if (op != nullptr) (void)lt().cublasLtMatmulDescDestroy(op);
  }
};

constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;

}  // namespace

bool eligible(const Fp8GemmParams& p) {
  const std::int64_t k_blocks = p.k / kQuantBlock;
  return p.m > 0 && p.m % 4 == 0 && p.a_scale_row_stride == 1 && p.a_scale_col_stride == p.m && k_blocks % 4 == 0 &&
         p.lda % 16 == 0 && p.ldb % 16 == 0 && p.n % 4 == 0 && aligned16(p.a) && aligned16(p.b) &&
         aligned16(p.a_scales) && aligned16(p.b_scales) && aligned16(p.c) && p.ldc % 4 == 0;
}

bool run(const Fp8GemmParams& p, cudaStream_t s) {
  if (!lt().ok) return false;  // no cuBLASLt here: the caller's fallback runs
  // Row-major C[m, n] = A[m, k]·B[n, k]ᵀ is column-major Cᵀ[n, m] = op(B)·A with cuBLAS's "A" the
  // weight (stored k-major: column-major [k, n], transposed) and its "B" the activations
  // (column-major [k, m]): the TN layout FP8 requires. So cuBLAS's A scales are the weight's
  // 128×128 blocks and its B scales the activations' 1×128 tiles.
  Descriptors d;
  lt_check(lt().cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t t = CUBLAS_OP_T;
  const cublasOperation_t n = CUBLAS_OP_N;
  lt_check(lt().cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)), "TRANSA");
  lt_check(lt().cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n)), "TRANSB");
  const cublasLtMatmulMatrixScale_t weight_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  const cublasLtMatmulMatrixScale_t act_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  lt_check(lt().cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &weight_mode, sizeof(weight_mode)),
           "A_SCALE_MODE");
  lt_check(lt().cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &act_mode, sizeof(act_mode)),
           "B_SCALE_MODE");
  const void* weight_scales = p.b_scales;
  const void* act_scales = p.a_scales;
  lt_check(lt().cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &weight_scales,
                                          sizeof(weight_scales)),
           "A_SCALE_POINTER");
  lt_check(lt().cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &act_scales, sizeof(act_scales)),
           "B_SCALE_POINTER");
  const auto u = [](std::int64_t v) { return static_cast<std::uint64_t>(v); };
  lt_check(lt().cublasLtMatrixLayoutCreate(&d.a, CUDA_R_8F_E4M3, u(p.k), u(p.n), p.ldb), "layout A (weight)");
  lt_check(lt().cublasLtMatrixLayoutCreate(&d.b, CUDA_R_8F_E4M3, u(p.k), u(p.m), p.lda), "layout B (activations)");
  lt_check(lt().cublasLtMatrixLayoutCreate(&d.c, CUDA_R_32F, u(p.n), u(p.m), p.ldc), "layout C/D");
  lt_check(lt().cublasLtMatmulPreferenceCreate(&d.pref), "cublasLtMatmulPreferenceCreate");
  const std::size_t workspace_bytes = kWorkspaceBytes;
  lt_check(lt().cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                sizeof(workspace_bytes)),
           "MAX_WORKSPACE_BYTES");
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasLtHandle_t handle = thread_handle();
  const cublasStatus_t status =
      lt().cublasLtMatmulAlgoGetHeuristic(handle, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &result, &found);
  if (status != CUBLAS_STATUS_SUCCESS || found == 0) return false;
  void* workspace = nullptr;
  SY_CUDA_CHECK(cudaMallocAsync(&workspace, kWorkspaceBytes, s));
  const float alpha = 1.0f;
  const float beta = 0.0f;
  const cublasStatus_t run_status = lt().cublasLtMatmul(handle, d.op, &alpha, p.b, d.a, p.a, d.b, &beta, p.c, d.c, p.c, d.c,
                                                   &result.algo, workspace, kWorkspaceBytes, s);
  SY_CUDA_CHECK(cudaFreeAsync(workspace, s));
  lt_check(run_status, "cublasLtMatmul");
  return true;
}

}  // namespace sy::gpu::cuda::impl::cublaslt
