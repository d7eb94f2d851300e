# Finds every external dependency once and wraps the ones without CMake configs in imported
# targets. All come from Debian packages (deploy/install-deps.sh); see ../shared/TOOLCHAIN.md.
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(fmt REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
# cpp-httplib (the HTTP API): Debian builds it as a library (libcpp-httplib.so, with OpenSSL, zlib
# and brotli), and its header's class layouts depend on the matching -D flags: take them from
# pkg-config, never include httplib.h without them. Target PkgConfig::HTTPLIB.
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
find_package(BLAS REQUIRED)
find_package(ucx REQUIRED)  # targets ucx::ucp and ucx::ucs: link both
find_package(CapnProto REQUIRED)  # CapnProto::capnp; capnp_generate_cpp() (needs project() to enable C)
find_package(prometheus-cpp CONFIG REQUIRED)  # prometheus-cpp::core (families), ::pull (the exporter)
find_package(tomlplusplus 3 CONFIG REQUIRED)  # tomlplusplus::tomlplusplus (the cluster config, actors/config)

# CAF 0.17.6 ships neither a CMake config nor a .pc file.
find_path(CAF_INCLUDE_DIR caf/all.hpp REQUIRED)
find_library(CAF_CORE_LIBRARY caf_core REQUIRED)
find_library(CAF_IO_LIBRARY caf_io REQUIRED)
add_library(caf::core SHARED IMPORTED)
set_target_properties(caf::core PROPERTIES IMPORTED_LOCATION "${CAF_CORE_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${CAF_INCLUDE_DIR}" INTERFACE_LINK_LIBRARIES Threads::Threads
  # CAF 0.17 headers warn under -Wpedantic/-Wshadow: include them as system headers.
  INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${CAF_INCLUDE_DIR}")
add_library(caf::io SHARED IMPORTED)
set_target_properties(caf::io PROPERTIES IMPORTED_LOCATION "${CAF_IO_LIBRARY}"
  INTERFACE_LINK_LIBRARIES caf::core)

if(SY_BUILD_TESTS)
  find_package(GTest CONFIG REQUIRED)
  include(GoogleTest)
endif()
if(SY_BUILD_BENCH)
  find_package(benchmark CONFIG REQUIRED)
endif()

# CUDA is optional: AUTO builds it when a CUDA compiler is found.
set(SY_CUDA_ENABLED OFF)
if(NOT SY_WITH_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90a)
    endif()
    enable_language(CUDA)
    # CMake 3.25 does not know CUDA20.
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION -std=c++20)
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION -std=c++20)
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
    find_package(CUDAToolkit REQUIRED)
    set(SY_CUDA_ENABLED ON)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS "${CUDAToolkit_INCLUDE_DIRS}" ${CUDAToolkit_LIBRARY_ROOT}/include)
    find_library(NCCL_LIBRARY nccl HINTS "${CUDAToolkit_LIBRARY_DIR}" ${CUDAToolkit_LIBRARY_ROOT}/lib)
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      add_library(nccl::nccl SHARED IMPORTED)
      set_target_properties(nccl::nccl PROPERTIES IMPORTED_LOCATION "${NCCL_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
    endif()
  elseif(SY_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "SY_WITH_CUDA=ON but no CUDA compiler was found")
  endif()
endif()
message(STATUS "Switchyard: CUDA backend ${SY_CUDA_ENABLED}, sanitizers '${SY_SANITIZE}'")
