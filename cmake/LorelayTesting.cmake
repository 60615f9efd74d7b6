# Test registration helpers shared by every test directory.
#
# One place decides how a test binary is built, labelled and run, so that the
# unit, e2e and Wine suites agree on labels (unit / valgrind / e2e / wine),
# on the skip convention (exit 77 = SKIP: tests needing root,
# netns or Wine skip outside CI) and on the memory checkers: the linux-asan
# preset compiles everything with ASan+UBSan, and the plain Linux build runs
# each unit test a second time under valgrind, so leaks and invalid reads are
# caught in both configurations without doubling the sanitizer build.

include_guard(GLOBAL)

# --- cmocka ---------------------------------------------------------------
# Debian's cmocka config only sets variables; the Windows cross build may
# provide a target (lorelay_cmocka) built from Debian's sources. Wrap both in
# one interface target so test code links `lorelay_test_cmocka` everywhere.
if(NOT TARGET lorelay_test_cmocka)
  add_library(lorelay_test_cmocka INTERFACE)
  if(TARGET lorelay_cmocka)
    target_link_libraries(lorelay_test_cmocka INTERFACE lorelay_cmocka)
  elseif(TARGET cmocka::cmocka)
    target_link_libraries(lorelay_test_cmocka INTERFACE cmocka::cmocka)
  elseif(TARGET cmocka)
    target_link_libraries(lorelay_test_cmocka INTERFACE cmocka)
  else()
    if(NOT CMOCKA_LIBRARIES)
      find_package(cmocka QUIET)
    endif()
    if(NOT CMOCKA_LIBRARIES)
      message(FATAL_ERROR "lorelay tests: cmocka not found (Debian: apt-get install libcmocka-dev), "
                          "or configure with -DLORELAY_TESTS=OFF")
    endif()
    target_include_directories(lorelay_test_cmocka INTERFACE ${CMOCKA_INCLUDE_DIR})
    target_link_libraries(lorelay_test_cmocka INTERFACE ${CMOCKA_LIBRARIES})
  endif()
endif()

# --- valgrind -------------------------------------------------------------
# Valgrind and ASan cannot share a process, and valgrind cannot run Windows
# binaries under Wine, so the valgrind variants exist only in the plain Linux
# build. In CI a missing valgrind is a configuration error, not a silent gap.
# Debian 12's valgrind (3.19) cannot read clang 14's default DWARF 5 and
# aborts, so a clang build (the fuzzing setup) does without the variants.
set(LORELAY_VALGRIND_ENABLED OFF)
if(NOT WIN32 AND NOT CMAKE_CROSSCOMPILING AND NOT LORELAY_SANITIZE
   AND NOT CMAKE_C_COMPILER_ID STREQUAL "Clang")
  find_program(LORELAY_VALGRIND valgrind)
  if(LORELAY_VALGRIND)
    set(LORELAY_VALGRIND_ENABLED ON)
  elseif("$ENV{CI}" STREQUAL "true")
    message(FATAL_ERROR "lorelay tests: CI=true but valgrind was not found; the valgrind_* "
                        "test variants are part of the suite (apt-get install valgrind)")
  else()
    message(WARNING "lorelay tests: valgrind not found, valgrind_* test variants are not registered")
  endif()
endif()

set(LORELAY_VALGRIND_ARGS
    --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
    --show-leak-kinds=definite --track-origins=yes --quiet)

# Where test binaries go: apart from the product binaries in bin/ (which get
# installed and zipped), but on Windows DLLs from bin/ stay reachable via
# WINEPATH.
set(LORELAY_TEST_BIN_DIR ${CMAKE_BINARY_DIR}/tests/bin)

# lorelay_add_cmocka_test(NAME SOURCES src... [LIBS lib...] [LABELS l...]
#                         [TIMEOUT s])
# Builds one cmocka binary and registers it (plus its valgrind_ variant).
function(lorelay_add_cmocka_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 60)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} lorelay_test_cmocka)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests/unit)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${LORELAY_TEST_BIN_DIR})

  set(labels unit ${T_LABELS})
  set(env "")
  if(WIN32)
    list(APPEND labels wine)
    list(APPEND env "WINEDEBUG=-all" "WINEPATH=${CMAKE_BINARY_DIR}/bin")
  endif()
  # add_test with a target name runs it through CMAKE_CROSSCOMPILING_EMULATOR
  # (wine) on the win64 build.
  set(tname ${LORELAY_TEST_PREFIX}${name})
  add_test(NAME ${tname} COMMAND ${name})
  set_tests_properties(${tname} PROPERTIES
    LABELS "${labels}" TIMEOUT ${T_TIMEOUT} SKIP_RETURN_CODE 77)
  if(env)
    set_tests_properties(${tname} PROPERTIES ENVIRONMENT "${env}")
  endif()

  if(LORELAY_VALGRIND_ENABLED)
    math(EXPR vg_timeout "${T_TIMEOUT} * 5")
    add_test(NAME valgrind_${name}
             COMMAND ${LORELAY_VALGRIND} ${LORELAY_VALGRIND_ARGS} $<TARGET_FILE:${name}>)
    set(vg_labels valgrind ${T_LABELS})
    set_tests_properties(valgrind_${name} PROPERTIES
      LABELS "${vg_labels}" TIMEOUT ${vg_timeout} SKIP_RETURN_CODE 77)
  endif()
endfunction()
