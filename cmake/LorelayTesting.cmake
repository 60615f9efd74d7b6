# Test registration helpers shared by every test directory.
#
# One place decides how a test binary is built, labelled and run, so that the
# unit, e2e and Wine suites agree on labels (unit / valgrind / e2e / wine),
# on the skip convention (exit 77 = SKIP: a test whose scenario cannot run
# here, for want of root, network namespaces, Wine, python3 or valgrind, is
# skipped outside CI and fails in CI) and on the memory checkers: the linux-asan
# preset compiles everything with ASan+UBSan, and the plain Linux build runs
# each unit test a second time under valgrind, so leaks and invalid reads are
# caught in both configurations without doubling the sanitizer build.

include_guard(GLOBAL)

# --- CI -------------------------------------------------------------------
# CI means: the environment variable CI is "true", "1" or "yes", in any case
# (the same rule as tests/lrci.py, tests/lrci.sh and lr_test_in_ci() in
# tests/unit/lr_testutil.h). This is the configure-time view; tests decide
# again when they run, since ctest may run in another environment.
string(TOLOWER "$ENV{CI}" _lorelay_ci)
if(_lorelay_ci STREQUAL "true" OR _lorelay_ci STREQUAL "1" OR _lorelay_ci STREQUAL "yes")
  set(LORELAY_IN_CI ON)
else()
  set(LORELAY_IN_CI OFF)
endif()
unset(_lorelay_ci)

# lorelay_add_unavailable_test(NAME name MISSING what [LABELS l...] [QUIET])
# A prerequisite of test `name` (python3, wine, valgrind, clang...) is
# missing from this machine. The test is registered all the same, under the
# same name, as tests/lr_unavailable.sh: it prints one line naming what is
# missing and fails when run in CI, or exits 77 (SKIP) outside. So the test
# list is the same everywhere and a missing tool is never a silent gap.
# QUIET: the caller has already warned (once for a group of tests).
function(lorelay_add_unavailable_test)
  cmake_parse_arguments(U "QUIET" "NAME;MISSING" "LABELS" ${ARGN})
  add_test(NAME ${U_NAME}
           COMMAND sh ${PROJECT_SOURCE_DIR}/tests/lr_unavailable.sh "${U_NAME}: ${U_MISSING}")
  set_tests_properties(${U_NAME} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 30)
  if(U_LABELS)
    set_tests_properties(${U_NAME} PROPERTIES LABELS "${U_LABELS}")
  endif()
  if(NOT U_QUIET)
    lorelay_warn_unavailable("${U_MISSING}" "${U_NAME}")
  endif()
endfunction()

# lorelay_warn_unavailable(what tests): the configure-time notice.
function(lorelay_warn_unavailable what tests)
  if(LORELAY_IN_CI)
    set(how "they FAIL in CI (CI is set)")
  else()
    set(how "skipped (exit 77) outside CI, failing in CI")
  endif()
  message(WARNING "lorelay tests: ${what}; placeholders registered for ${tests}: ${how}")
endfunction()

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
# build. A missing valgrind registers the valgrind_* names anyway, as tests
# that fail in CI and are skipped outside (lorelay_add_unavailable_test).
# Debian 12's valgrind (3.19) cannot read clang 14's default DWARF 5 and
# aborts, so a clang build (the fuzzing setup) does without the variants.
set(LORELAY_VALGRIND_ENABLED OFF)
set(LORELAY_VALGRIND_MISSING OFF)
if(NOT WIN32 AND NOT CMAKE_CROSSCOMPILING AND NOT LORELAY_SANITIZE
   AND NOT CMAKE_C_COMPILER_ID STREQUAL "Clang")
  find_program(LORELAY_VALGRIND valgrind)
  if(LORELAY_VALGRIND)
    set(LORELAY_VALGRIND_ENABLED ON)
  else()
    set(LORELAY_VALGRIND_MISSING ON)
    lorelay_warn_unavailable("valgrind not found (apt-get install valgrind)"
                             "the valgrind_* test variants")
  endif()
endif()

# The suppressions cover libbpf's own bpf() calls (see the file), for the
# eBPF trigger's test.
set(LORELAY_VALGRIND_ARGS
    --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
    --show-leak-kinds=definite --track-origins=yes --quiet
    --suppressions=${PROJECT_SOURCE_DIR}/tests/unit/valgrind-libbpf.supp)

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
  # (wine) on the win64 build; without Wine the binary is still built, and
  # the test is registered as unavailable.
  set(tname ${LORELAY_TEST_PREFIX}${name})
  if(CMAKE_CROSSCOMPILING AND NOT CMAKE_CROSSCOMPILING_EMULATOR)
    get_property(warned GLOBAL PROPERTY LORELAY_NO_EMULATOR_WARNED)
    if(NOT warned)
      set_property(GLOBAL PROPERTY LORELAY_NO_EMULATOR_WARNED ON)
      lorelay_warn_unavailable("wine not found (no CMAKE_CROSSCOMPILING_EMULATOR)"
                               "the Windows unit tests")
    endif()
    lorelay_add_unavailable_test(NAME ${tname} LABELS ${labels} QUIET
      MISSING "wine not found, nothing can run ${name}.exe")
  else()
    add_test(NAME ${tname} COMMAND ${name})
    set_tests_properties(${tname} PROPERTIES
      LABELS "${labels}" TIMEOUT ${T_TIMEOUT} SKIP_RETURN_CODE 77)
    if(env)
      set_tests_properties(${tname} PROPERTIES ENVIRONMENT "${env}")
    endif()
  endif()

  set(vg_labels valgrind ${T_LABELS})
  if(LORELAY_VALGRIND_ENABLED)
    math(EXPR vg_timeout "${T_TIMEOUT} * 5")
    add_test(NAME valgrind_${name}
             COMMAND ${LORELAY_VALGRIND} ${LORELAY_VALGRIND_ARGS} $<TARGET_FILE:${name}>)
    set_tests_properties(valgrind_${name} PROPERTIES
      LABELS "${vg_labels}" TIMEOUT ${vg_timeout} SKIP_RETURN_CODE 77)
  elseif(LORELAY_VALGRIND_MISSING)
    lorelay_add_unavailable_test(NAME valgrind_${name} LABELS ${vg_labels} QUIET
                                 MISSING "valgrind not found")
  endif()
endfunction()
