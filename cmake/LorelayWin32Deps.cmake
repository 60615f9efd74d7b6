# Third-party C libraries for the win64 build, compiled by this build from
# Debian's source packages: libuv, inih, cJSON and, for the tests, cmocka.
# Nothing is vendored. The exact versions are pinned in
# cmake/win32-deps.lock; `scripts/deps.sh win64` fetches and verifies them
# into ${LORELAY_DEBSRC_DIR} (build/_debsrc). Configure only checks that
# those verified trees are there: it never downloads, so what gets compiled
# is decided by the lock file and nothing else.
#
# Provides: lorelay_uv, lorelay_inih, lorelay_cjson and (LORELAY_TESTS)
# cmocka::cmocka, all static, so lorelayd.exe needs only system DLLs; and
# LORELAY_DEBSRC_<PKG> (the unpacked tree of each pinned source package).
#
# Third-party code is not ours to fix: it is built without our -Werror set
# (ExternalProject for the CMake projects, a cleared COMPILE_OPTIONS for the
# single-file libraries), while every target of ours keeps it.
include(ExternalProject)

if(DEFINED ENV{LORELAY_DEBSRC_DIR})
  set(lorelay_debsrc_default "$ENV{LORELAY_DEBSRC_DIR}")
else()
  set(lorelay_debsrc_default "${CMAKE_SOURCE_DIR}/build/_debsrc")
endif()
set(LORELAY_DEBSRC_DIR "${lorelay_debsrc_default}" CACHE PATH
    "Verified Debian source packages for the Windows build (scripts/deps.sh win64 fills it)")
set(LORELAY_WIN32_DEPS_LOCK "${CMAKE_SOURCE_DIR}/cmake/win32-deps.lock")

# Every lock line must have a tree whose marker (written by
# scripts/fetch-debian-source.sh after the .dsc hash and the unpacked
# version matched) repeats that line exactly; a tree from an older lock or a
# half-finished fetch fails here rather than being compiled.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${LORELAY_WIN32_DEPS_LOCK}")
file(STRINGS "${LORELAY_WIN32_DEPS_LOCK}" lorelay_lock_lines REGEX "^[^#]")
set(lorelay_debsrc_errors "")
foreach(line IN LISTS lorelay_lock_lines)
  if(NOT line MATCHES "^([a-z0-9.+-]+)[ \t]+([^ \t]+)[ \t]+([a-z-]+)[ \t]+([0-9a-f]+)[ \t]*$")
    message(FATAL_ERROR "${LORELAY_WIN32_DEPS_LOCK}: malformed line '${line}' "
                        "(want: SOURCE VERSION RELEASE SHA256)")
  endif()
  set(pkg "${CMAKE_MATCH_1}")
  set(want "${CMAKE_MATCH_1} ${CMAKE_MATCH_2} ${CMAKE_MATCH_3} ${CMAKE_MATCH_4}")
  set(wanted_version "${CMAKE_MATCH_2}")
  set(tree "${LORELAY_DEBSRC_DIR}/${pkg}")
  set(marker "${tree}/.lorelay-verified")
  set(found "nothing")
  if(EXISTS "${marker}")
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${marker}")
    file(STRINGS "${marker}" have LIMIT_COUNT 1)
    if(have STREQUAL want)
      string(TOUPPER "${pkg}" var)
      set(LORELAY_DEBSRC_${var} "${tree}")
      continue()
    endif()
    string(REGEX REPLACE "^[^ ]+ ([^ ]+) ([^ ]+) .*$" "\\1 (\\2)" found "${have}")
    if(have MATCHES "^[^ ]+ ([^ ]+) " AND CMAKE_MATCH_1 STREQUAL wanted_version)
      set(found "${found}, checked against another .dsc sha256")
    endif()
  elseif(EXISTS "${tree}/debian/changelog")
    file(STRINGS "${tree}/debian/changelog" first LIMIT_COUNT 1)
    string(REGEX REPLACE "^[^ ]+ \\(([^)]+)\\).*$" "\\1, unverified" found "${first}")
  endif()
  string(APPEND lorelay_debsrc_errors
    "  ${pkg}: wanted ${wanted_version}, found ${found}\n")
endforeach()
if(lorelay_debsrc_errors)
  message(FATAL_ERROR
    "The win64 build's pinned Debian sources (cmake/win32-deps.lock) are not "
    "verified in ${LORELAY_DEBSRC_DIR}:\n${lorelay_debsrc_errors}"
    "Run scripts/deps.sh win64 first (configure does not download).")
endif()
foreach(pkg libuv1 libinih cjson cmocka)
  string(TOUPPER "${pkg}" var)
  if(NOT LORELAY_DEBSRC_${var})
    message(FATAL_ERROR "${LORELAY_WIN32_DEPS_LOCK} pins no version of ${pkg}, which the win64 build compiles")
  endif()
endforeach()

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
set(LORELAY_LIBUV_SRC "${LORELAY_DEBSRC_LIBUV1}")
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
set(LORELAY_INIH_SRC "${LORELAY_DEBSRC_LIBINIH}")
lorelay_third_party_lib(lorelay_inih_static "${LORELAY_INIH_SRC}/ini.c")
target_include_directories(lorelay_inih_static SYSTEM PUBLIC "${LORELAY_INIH_SRC}")
add_library(lorelay_inih INTERFACE)
target_link_libraries(lorelay_inih INTERFACE lorelay_inih_static)

# ---- cJSON (source package cjson): parses the HCS answer in host/win32 ------
set(LORELAY_CJSON_SRC "${LORELAY_DEBSRC_CJSON}")
lorelay_third_party_lib(lorelay_cjson "${LORELAY_CJSON_SRC}/cJSON.c")
target_include_directories(lorelay_cjson SYSTEM PUBLIC "${LORELAY_CJSON_SRC}")

# ---- cmocka (source package cmocka), tests only -----------------------------
if(LORELAY_TESTS)
  set(LORELAY_CMOCKA_SRC "${LORELAY_DEBSRC_CMOCKA}")
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
