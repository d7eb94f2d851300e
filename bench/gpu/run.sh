#!/usr/bin/env bash
# GPU acceptance run for issue 10, on an H200 machine: builds the CUDA targets, runs every GPU
# parity test (ctest label gpu: each kernel against gpu/ref, the tiny model's greedy tokens on
# cuda against cpu) and the kernel benchmarks (MLA decode at V3 dims; grouped FP8 expert GEMM at
# V3 shapes), which print GB/s and TFLOP/s beside the H200's peaks and this run's copy bandwidth.
# Finishes within 8 minutes: every step has a hard timeout (configure 2 × 45 s at worst, build
# 200 s, tests 90 s, benchmarks 2 × 50 s: 480 s), so it can run twice in a 15-minute device
# window. Exit status: non-zero when a build step, a test or a benchmark failed.
#
# Usage: bench/gpu/run.sh [--quick]
#   SY_GPU_BUILD_DIR   build folder (default build-gpu); SY_GPU_JOBS parallel jobs (default nproc)
# Configures the whole project (-DSY_WITH_CUDA=ON) when its dependencies are installed, else the
# CUDA-only project bench/gpu/standalone (gpu/ and bench/gpu/ only; no tiny-model test). The
# tiny-model test also needs the tokenizer files ($SY_DATA_DIR/tokenizer, or
# ~/.cache/switchyard/tokenizer: deploy/install-deps.sh) and skips, saying so, without them.
set -uo pipefail
cd "$(dirname "$0")/../.."
quick=""
[ "${1:-}" = "--quick" ] && quick="--quick"
build=${SY_GPU_BUILD_DIR:-build-gpu}
jobs=${SY_GPU_JOBS:-$(nproc)}
t0=$(date +%s)
status=0

step() { printf '\n== %s (t+%ss) ==\n' "$*" "$(( $(date +%s) - t0 ))"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv 2>&1 || true
nvcc_bin=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
"$nvcc_bin" --version | tail -2

step "configure ($build)"
targets="gpu_cuda_test mla_decode_bench grouped_gemm_bench"
if timeout 45 cmake -S . -B "$build" -G Ninja -DSY_WITH_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_COMPILER="$nvcc_bin" >"$build.configure.log" 2>&1; then
  targets="$targets model_engine_cuda_test"
  echo "whole project configured"
else
  echo "whole project did not configure (missing dependencies? see $build.configure.log); CUDA-only build"
  build="$build-standalone"
  if ! timeout 45 cmake -S bench/gpu/standalone -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CUDA_COMPILER="$nvcc_bin" >"$build.configure.log" 2>&1; then
    tail -20 "$build.configure.log"
    echo "FAILED: configure"
    exit 1
  fi
  grep -q "GPU tests left out" "$build.configure.log" && targets="mla_decode_bench grouped_gemm_bench"
fi

# NCCL's exchange test, where the toolkit has NCCL.
cmake --build "$build" --target help 2>/dev/null | grep -q "gpu_cuda_nccl_test" && targets="$targets gpu_cuda_nccl_test"

step "build: $targets"
# shellcheck disable=SC2086
if ! timeout 200 cmake --build "$build" -j "$jobs" --target $targets; then
  echo "FAILED: build"
  exit 1
fi

step "GPU parity tests (ctest -L gpu)"
if [[ " $targets " == *" gpu_cuda_test "* ]]; then
  if ! timeout 90 ctest --test-dir "$build" -L gpu --output-on-failure --timeout 80 -j 2; then
    echo "FAILED: GPU parity tests"
    status=1
  fi
else
  echo "no GoogleTest on this machine: parity tests not built"
  status=1
fi

# A benchmark exits 77 when it finds no device: that is a failed acceptance run too.
bench() {
  local name=$1
  shift
  timeout 50 "$build/bench/gpu/$name" $quick "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then
    [ $rc -eq 77 ] && echo "FAILED: $name found no CUDA device" || echo "FAILED: $name (rc $rc)"
    status=1
  fi
}

step "MLA decode benchmark (V3 dims, BF16 cache)"
bench mla_decode_bench

step "grouped FP8 expert GEMM benchmark"
bench grouped_gemm_bench

step "done in $(( $(date +%s) - t0 )) s, status $status"
exit $status
