# One helper per target kind. Sources are listed explicitly. Every project target links
# sy_build_options, which carries the standard, the warnings (as errors, project C++ only) and
# the sanitizers; external code is never compiled with them.
add_library(sy_build_options INTERFACE)
target_compile_features(sy_build_options INTERFACE cxx_std_20)
target_include_directories(sy_build_options INTERFACE "${PROJECT_SOURCE_DIR}")
target_compile_options(sy_build_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Werror>)
if(SY_SANITIZE)
  target_compile_options(sy_build_options INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${SY_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all>)
  target_link_options(sy_build_options INTERFACE -fsanitize=${SY_SANITIZE})
endif()

# sy_add_library(NAME SOURCES a.cpp ... [DEPS target ...])
function(sy_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_link_libraries(${name} PUBLIC sy_build_options ${ARG_DEPS})
endfunction()

# sy_add_executable(NAME SOURCES ... [DEPS ...] [OUTPUT_NAME name])
function(sy_add_executable name)
  cmake_parse_arguments(ARG "" "OUTPUT_NAME" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE sy_build_options ${ARG_DEPS})
  if(ARG_OUTPUT_NAME)
    set_target_properties(${name} PROPERTIES OUTPUT_NAME ${ARG_OUTPUT_NAME})
  endif()
endfunction()

# sy_add_test(NAME SOURCES foo.test.cpp ... [DEPS ...] [LABELS unit|heavy|gpu ...])
# A GoogleTest binary; each TEST becomes a ctest entry carrying LABELS (default "unit").
function(sy_add_test name)
  if(NOT SY_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE sy_build_options ${ARG_DEPS} GTest::gtest_main GTest::gmock)
  target_compile_definitions(${name} PRIVATE SY_SOURCE_DIR="${PROJECT_SOURCE_DIR}" SY_BINARY_DIR="${PROJECT_BINARY_DIR}")
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES LABELS "${ARG_LABELS}")
endfunction()

# sy_add_script_test(NAME COMMAND cmd args... [LABELS ...]): a shell or node test run by ctest.
# Exit code 77 means "skipped" (with the reason on stdout).
function(sy_add_script_test name)
  if(NOT SY_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(ARG "" "" "COMMAND;LABELS" ${ARGN})
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  add_test(NAME ${name} COMMAND ${ARG_COMMAND})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" SKIP_RETURN_CODE 77
    ENVIRONMENT "SY_SOURCE_DIR=${PROJECT_SOURCE_DIR};SY_BUILD_DIR=${PROJECT_BINARY_DIR}")
endfunction()
