# Third-party C libraries for the win64 build, compiled by this build from
# Debian's source packages (BRIEF §7): libuv, inih, cJSON and, for the tests,
# cmocka. Nothing is vendored; scripts/fetch-debian-source.sh runs
# `apt-get source` into ${LORELAY_DEBSRC_DIR} once, at configure time.
#
# Provides: lorelay_uv, lorelay_inih, lorelay_cjson and (LORELAY_TESTS)
# cmocka::cmocka, all static, so lorelayd.exe needs only system DLLs.
#
# Third-party code is not ours to fix: it is built without our -Werror set
# (ExternalProject for the CMake projects, a cleared COMPILE_OPTIONS for the
# single-file libraries), while every target of ours keeps it.
include(ExternalProject)

set(LORELAY_DEBSRC_DIR "${CMAKE_BINARY_DIR}/_debsrc" CACHE PATH
    "Where Debian source packages for the Windows build are unpacked")

function(lorelay_debian_source pkg outvar)
  if(NOT EXISTS "${LORELAY_DEBSRC_DIR}/${pkg}/.lorelay-unpacked")
    message(STATUS "Fetching Debian source package ${pkg}")
    execute_process(
      COMMAND sh "${CMAKE_SOURCE_DIR}/scripts/fetch-debian-source.sh" ${pkg} "${LORELAY_DEBSRC_DIR}"
      RESULT_VARIABLE rc
      OUTPUT_QUIET)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "could not fetch Debian source package '${pkg}' (scripts/fetch-debian-source.sh exit ${rc})")
    endif()
  endif()
  set(${outvar} "${LORELAY_DEBSRC_DIR}/${pkg}" PARENT_SCOPE)
endfunction()

# Arguments every ExternalProject gets so it is built by the same compiler,
# for the same target, in the same configuration.
set(lorelay_ep_args
  -DCMAKE_TOOLCHAIN_FILE=${CMAKE_TOOLCHAIN_FILE}
  -DCMAKE_C_FLAGS=-w
  -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_INSTALL_PREFIX=<INSTALL_DIR>
  -DCMAKE_POSITION_INDEPENDENT_CODE=OFF
  -DBUILD_TESTING=OFF)

# ---- libuv (source package libuv1) -----------------------------------------
lorelay_debian_source(libuv1 LORELAY_LIBUV_SRC)
set(lorelay_uv_prefix "${CMAKE_BINARY_DIR}/_deps/libuv")
ExternalProject_Add(lorelay_libuv_ep
  SOURCE_DIR "${LORELAY_LIBUV_SRC}"
  PREFIX "${lorelay_uv_prefix}"
  INSTALL_DIR "${lorelay_uv_prefix}/install"
  CMAKE_ARGS ${lorelay_ep_args} -DLIBUV_BUILD_TESTS=OFF -DLIBUV_BUILD_BENCH=OFF
  BUILD_COMMAND ${CMAKE_COMMAND} --build <BINARY_DIR> --target uv_a
  INSTALL_COMMAND ${CMAKE_COMMAND} -E copy_if_different
    <BINARY_DIR>/libuv_a.a <INSTALL_DIR>/lib/libuv_a.a
  BUILD_BYPRODUCTS "${lorelay_uv_prefix}/install/lib/libuv_a.a"
  UPDATE_COMMAND "" PATCH_COMMAND "")
add_library(lorelay_uv_static STATIC IMPORTED GLOBAL)
set_target_properties(lorelay_uv_static PROPERTIES
  IMPORTED_LOCATION "${lorelay_uv_prefix}/install/lib/libuv_a.a"
  INTERFACE_INCLUDE_DIRECTORIES "${LORELAY_LIBUV_SRC}/include"
  INTERFACE_LINK_LIBRARIES "psapi;user32;advapi32;iphlpapi;userenv;ws2_32;dbghelp;ole32;shell32")
add_dependencies(lorelay_uv_static lorelay_libuv_ep)
add_library(lorelay_uv INTERFACE)
target_link_libraries(lorelay_uv INTERFACE lorelay_uv_static)

# A single-file C library, compiled in this build without our warning set.
function(lorelay_third_party_lib name)
  add_library(${name} STATIC ${ARGN})
  set_target_properties(${name} PROPERTIES COMPILE_OPTIONS "-w")
endfunction()

# ---- inih (source package libinih) ------------------------------------------
# Built with ini.h's defaults, as the Linux build sees them in Debian's
# /usr/include/ini.h, so lr_config.c's handler type is the same on both.
lorelay_debian_source(libinih LORELAY_INIH_SRC)
lorelay_third_party_lib(lorelay_inih_static "${LORELAY_INIH_SRC}/ini.c")
target_include_directories(lorelay_inih_static SYSTEM PUBLIC "${LORELAY_INIH_SRC}")
add_library(lorelay_inih INTERFACE)
target_link_libraries(lorelay_inih INTERFACE lorelay_inih_static)

# ---- cJSON (source package cjson): parses the HCS answer in host/win32 ------
lorelay_debian_source(cjson LORELAY_CJSON_SRC)
lorelay_third_party_lib(lorelay_cjson "${LORELAY_CJSON_SRC}/cJSON.c")
target_include_directories(lorelay_cjson SYSTEM PUBLIC "${LORELAY_CJSON_SRC}")

# ---- cmocka (source package cmocka), tests only -----------------------------
if(LORELAY_TESTS)
  lorelay_debian_source(cmocka LORELAY_CMOCKA_SRC)
  set(lorelay_cmocka_prefix "${CMAKE_BINARY_DIR}/_deps/cmocka")
  ExternalProject_Add(lorelay_cmocka_ep
    SOURCE_DIR "${LORELAY_CMOCKA_SRC}"
    PREFIX "${lorelay_cmocka_prefix}"
    INSTALL_DIR "${lorelay_cmocka_prefix}/install"
    CMAKE_ARGS ${lorelay_ep_args} -DWITH_STATIC_LIB=ON -DWITH_EXAMPLES=OFF
      -DUNIT_TESTING=OFF -DPICKY_DEVELOPER=OFF
    BUILD_COMMAND ${CMAKE_COMMAND} --build <BINARY_DIR> --target cmocka-static
    INSTALL_COMMAND ${CMAKE_COMMAND} -E copy_if_different
      <BINARY_DIR>/src/libcmocka-static.a <INSTALL_DIR>/lib/libcmocka-static.a
    BUILD_BYPRODUCTS "${lorelay_cmocka_prefix}/install/lib/libcmocka-static.a"
    UPDATE_COMMAND "" PATCH_COMMAND "")
  add_library(lorelay_cmocka_static STATIC IMPORTED GLOBAL)
  set_target_properties(lorelay_cmocka_static PROPERTIES
    IMPORTED_LOCATION "${lorelay_cmocka_prefix}/install/lib/libcmocka-static.a"
    INTERFACE_INCLUDE_DIRECTORIES "${LORELAY_CMOCKA_SRC}/include")
  add_dependencies(lorelay_cmocka_static lorelay_cmocka_ep)
  add_library(cmocka::cmocka ALIAS lorelay_cmocka_static)
endif()


# Test binaries run under Wine through a wrapper that pins one Wine prefix
# inside the build tree and creates it once (serialised), so parallel ctest
# runs do not each trigger Wine's slow first-run setup in $HOME.
set(LORELAY_WINEPREFIX "${CMAKE_BINARY_DIR}/wineprefix" CACHE PATH
    "Wine prefix used by ctest for the Windows tests")
if(LORELAY_WINE)
  set(CMAKE_CROSSCOMPILING_EMULATOR
      "${CMAKE_SOURCE_DIR}/tests/win32/wine-run.sh;${LORELAY_WINEPREFIX}")
endif()
